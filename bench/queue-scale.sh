#!/usr/bin/env bash
# The queue at scale (issue 16): COUNT deferred messages of 4 KiB (the next hop refuses every
# connection), sent through SMTP by 20 clients, then a restart. For each row it reports the
# MTA's RSS with an empty queue, with the queue (35 s after the last deferral), and after the
# restart once the queue is read again; the time from the start of the process to the first 220 greeting; and how long the
# queue summary takes (`postern queue stats`, Postfix's `postqueue -p`). Postern runs at every
# COUNT; Postfix beside it at POSTFIX_COUNT (its memory is the PSS summed over its processes).
#
# Usage: bench/queue-scale.sh [POSTFIX_COUNT] [COUNT...]     (default: 100000 100000 1000000;
# POSTFIX_COUNT 0 skips Postfix)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postfix.sh
ensure_packages postfix
PF_N=${1:-100000}
shift || true
COUNTS=("${@:-}")
[ -z "${COUNTS[0]}" ] && COUNTS=(100000 1000000)

cargo build --release -q -p postern -p postern-bench
bench=$PWD/target/release/postern-bench
work=$(mktemp -d /var/tmp/postern-queue-scale.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    postfix_stop "$work/postfix"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
dead=$(free_port) # nothing listens there: every delivery attempt is refused

kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Postfix's memory: the proportional set size (shared pages divided among their sharers) of its
# master and every child, KiB: summing their RSS would count the shared libraries once per
# process.
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
pf_kib() {
    local s p
    s=$(pss "$1")
    for p in $(ps -o pid= --ppid "$1"); do s=$((s + $(pss "$p"))); done
    echo "$s"
}
# Seconds from now until PORT answers with a 220 greeting (bounded: 120 s).
greeting_after() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
t0 = float(sys.argv[2])
deadline = time.time() + 120
while time.time() < deadline:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        if s.recv(512).startswith(b"220"):
            print(f"{time.time() - t0:.3f}")
            sys.exit(0)
    except OSError:
        time.sleep(0.005)
print("timeout")
PY
}
secs() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')"; }

postern_row() {
    local n=$1 dir=$work/postern-$1 port metrics base with after greet stats pid t0
    port=$(free_port)
    metrics=$(free_port)
    mkdir -p "$dir"
    printf 'dead.test relay:[127.0.0.1]:%s\n' "$dead" >"$dir/routes"
    cat >"$dir/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:$port"
role = "mx"
[domains]
local = ["bench.test"]
[tables]
routes = "routes"
[relay]
trusted_networks = ["127.0.0.0/8"]
[server]
max_connections_per_ip = 100
[queue]
min_backoff = "1h"
max_backoff = "1h"
[metrics]
listen = "127.0.0.1:$metrics"
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
TOML
    start() {
        t0=$(date +%s.%N)
        POSTERN_LOG=warn,postern::serve=info target/release/postern serve --config "$dir/postern.toml" 2>>"$dir/log" &
        pid=$!
        pids+=($pid)
    }
    recovered() { grep -q "queue recovered" "$dir/log"; }
    deferred() {
        [ "$(curl -s "http://127.0.0.1:$metrics/metrics" | awk '/^postern_messages_deferred_total/ {s += $2} END {print s + 0}')" -ge "$n" ]
    }
    start
    wait_for 30 "Postern to listen" listening "$port"
    wait_for 30 "the recovery of the empty queue" recovered
    base=$(kib "$pid")
    "$bench" --server "127.0.0.1:$port" --clients 20 --messages "$n" --size 4096 --rcpt x@dead.test --max-seconds 3600 >/dev/null
    wait_for 3600 "$n deferrals" deferred
    sleep 35 # settled: past the daemon's next malloc_trim (every 30 s)
    with=$(kib "$pid")
    kill -TERM "$pid"
    wait "$pid" || true
    : >"$dir/log"
    start
    greet=$(greeting_after "$port" "$t0")
    wait_for 3600 "the recovery of $n messages" recovered
    after=$(kib "$pid")
    stats=$(secs target/release/postern queue stats --config "$dir/postern.toml")
    echo "| Postern | $n | $((base / 1024)) | $((with / 1024)) (+$(((with - base) / 1024))) | $((after / 1024)) (+$(((after - base) / 1024))) | $greet | $stats | $(grep -o 'in [0-9.]*s' "$dir/log" | head -1) |"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir"
}

postfix_row() {
    local n=$1 pf=$work/postfix port base with after greet stats master t0
    port=$(free_port)
    postfix_start "$pf" "$port" "relayhost = [127.0.0.1]:$dead
smtpd_client_connection_count_limit = 100
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s"
    master=$(cat "$pf/queue/pid/master.pid" | tr -d ' ')
    base=$(pf_kib "$master")
    "$bench" --server "127.0.0.1:$port" --clients 20 --messages "$n" --size 4096 --rcpt x@dead.test --max-seconds 3600 >/dev/null
    pf_deferred() { [ "$(find "$pf/queue/deferred" -type f | wc -l)" -ge "$n" ]; }
    wait_for 3600 "Postfix to defer $n messages" pf_deferred
    sleep 35 # as for Postern
    with=$(pf_kib "$master")
    postfix_stop "$pf"
    wait_for 60 "Postfix to stop" bash -c "! ss -ltnH 'sport = :$port' | grep -q LISTEN"
    t0=$(date +%s.%N)
    postfix -c "$pf/conf" start-fg >>"$pf/postfix.log" 2>&1 &
    greet=$(greeting_after "$port" "$t0")
    master=$(cat "$pf/queue/pid/master.pid" | tr -d ' ')
    sleep 5 # qmgr scans the deferred queue on its own schedule; nothing to wait for
    after=$(pf_kib "$master")
    stats=$(secs postqueue -c "$pf/conf" -p)
    echo "| Postfix | $n | $((base / 1024)) | $((with / 1024)) (+$(((with - base) / 1024))) | $((after / 1024)) (+$(((after - base) / 1024))) | $greet | $stats | |"
    postfix_stop "$pf"
}

echo "| MTA | deferred messages | RSS empty MiB | RSS with the queue MiB | RSS after a restart MiB | first greeting after the restart s | queue summary s | Postern's recovery |"
echo "|---|---|---|---|---|---|---|---|"
[ "$PF_N" -gt 0 ] && postfix_row "$PF_N"
for n in "${COUNTS[@]}"; do postern_row "$n"; done
