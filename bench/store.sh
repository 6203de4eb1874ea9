#!/usr/bin/env bash
# Acceptance with greylisting and rate limits on, by [store] backend (issue 17): 4 KiB messages
# accepted per second with 1 and 20 clients, and the CPU per message of Postern and of
# redis-server (idle but for the redis rows), for
#   none      greylisting and rate limits off (the baseline),
#   embedded  greylisting (redb) and two rate-limit rules (memory),
#   redis     the same in a private redis-server on 127.0.0.1 (Debian's, started here).
# Each message costs one greylisting check (a passed triplet: its last-seen time is written)
# and two rate-limit counts (messages at MAIL, recipients at RCPT); every session one ban
# lookup. The limits are set far above what the run sends. Everything stays on 127.0.0.1;
# every process started here is stopped by PID.
#
# Usage: bench/store.sh [MESSAGES] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/port.sh
source scripts/lib/postfix.sh
N=${1:-4000}
RUNS=${2:-3}
ensure_packages redis
cargo build --release -q -p postern -p postern-bench
work=$(mktemp -d /var/tmp/postern-store-bench.XXXXXX)
pid= redis_pid=
trap 'kill $pid $redis_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for 10 "redis-server" redis-cli -p "$redis_port" ping

start() { # start none|embedded|redis
    local policy="" store=""
    if [ "$1" != none ]; then
        policy='greylist = "defer"
greylist_delay = "1s"
greylist_skip_fcrdns = false
[[rate_limits.rule]]
per = "client"
count = "messages"
limit = 100000000
[[rate_limits.rule]]
per = "client"
count = "recipients"
limit = 100000000'
    fi
    [ "$1" = redis ] && store="[store]
backend = \"redis\"
url = \"redis://127.0.0.1:$redis_port/0\""
    rm -rf "$work/data"
    printf 'bob\n' >"$work/users"
    cat >"$work/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[tables]
users = "users"
[relay]
trusted_networks = []
[server]
max_connections_per_ip = 50
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
$store
[policy]
ptr = "off"
fcrdns = "off"
helo_resolves = "off"
sender_domain = "off"
$policy
TOML
    POSTERN_LOG=warn target/release/postern serve --config "$work/postern.toml" 2>"$work/log" &
    pid=$!
    wait_port "$pid" "$work/log"
    # The bench's one triplet is greylisted once: the first attempt is deferred, the retry
    # after the delay passes (polled, at most 10 s).
    local deadline=$((SECONDS + 10))
    until target/release/postern-bench --server "127.0.0.1:$port" --clients 1 --messages 1 >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "greylisting never passed"; cat "$work/log"; exit 1; }
        sleep 0.2
    done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

row() { # row STORE CLIENTS
    local t0 r0 out n rate t1 r1
    t0=$(ticks "$pid") r0=$(ticks "$redis_pid")
    out=$(target/release/postern-bench --server "127.0.0.1:$port" --clients "$2" --messages "$N" --size 4096)
    t1=$(ticks "$pid") r1=$(ticks "$redis_pid")
    n=$(echo "$out" | tr ' ' '\n' | sed -n 's/^messages=//p')
    rate=$(echo "$out" | tr ' ' '\n' | sed -n 's/^msg_per_s=//p')
    echo "| $1 | $2 | $n | $rate | $(python3 -c "print(round(($t1 - $t0) * 1000 / $hz / $n, 3), '|', round(($r1 - $r0) * 1000 / $hz / $n, 3))") |"
}

echo "| store | clients | messages | msg/s | Postern CPU ms/msg | redis-server CPU ms/msg |"
echo "|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for store in none embedded redis; do
        start $store
        # Warm-up (not reported): the disk's first writes of a run are slower.
        target/release/postern-bench --server "127.0.0.1:$port" --clients 20 --messages 500 --size 4096 >/dev/null
        for clients in 1 20; do row $store $clients; done
        stop
    done
done
echo
echo "redis-server: $(redis-server --version | awk '{print $3}'), on 127.0.0.1 TCP"
