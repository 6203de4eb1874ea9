#!/usr/bin/env bash
# Filters and mailbox servers in the path (issue 12): 20 clients send 4 KiB messages to
# Postern on loopback, measured end to end (until the queue is empty again), in one run:
#   relay to smtp-sink            without a milter, then with rspamd as a milter
#   local delivery to one mailbox  to Postern's Maildir, then over LMTP to Dovecot
# rspamd (proxy worker in self-scan milter mode) and Dovecot run with the private
# configurations of the tests (tests/fixtures/rspamd, tests/fixtures/dovecot), DNS pinned to a
# closed loopback port. Usage: bench/filters.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postfix.sh
ensure_packages postfix rspamd dovecot
N=${1:-2000}

cargo build --release -q -p postern -p postern-bench
bench=$PWD/target/release/postern-bench
work=$(mktemp -d /var/tmp/postern-filters.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

p_sink=$(free_port)
smtp-sink -u nobody 127.0.0.1:"$p_sink" 1000 &
pids+=($!)

# rspamd
p_rspamd=$(free_port)
rs=$work/rspamd
mkdir -p "$rs/db" "$rs/run" "$rs/local/local.d"
sed -e "s|{DIR}|$rs|g" -e "s|{PORT}|$p_rspamd|" tests/fixtures/rspamd/rspamd.conf >"$rs/rspamd.conf"
cp tests/fixtures/rspamd/local.d/* "$rs/local/local.d/"
rspamd -f -u root -g root -c "$rs/rspamd.conf" --var="DBDIR=$rs/db" --var="RUNDIR=$rs/run" \
    --var="LOGDIR=$rs" --var="LOCAL_CONFDIR=$rs/local" >/dev/null 2>&1 &
pids+=($!)

# Dovecot
dv=$work/dovecot
for d in run state mail sieve home; do mkdir -p "$dv/$d"; chmod 777 "$dv/$d"; done
sed -e "s|{DIR}|$dv|g" tests/fixtures/dovecot/dovecot.conf >"$dv/dovecot.conf"
echo "bob:{PLAIN}x::::::" >"$dv/users"
dovecot -F -c "$dv/dovecot.conf" &
pids+=($!)

wait_for 60 "rspamd to listen" listening "$p_rspamd"
wait_for 30 "smtp-sink to listen" listening "$p_sink"
wait_for 30 "Dovecot's LMTP socket" test -S "$dv/lmtp"

# postern_run NAME EXTRA_TOML RCPT: starts Postern, sends N messages with 20 clients, waits
# for the queue to empty; prints "accept_msg_per_s end_to_end_msg_per_s".
postern_run() {
    local name=$1 extra=$2 rcpt=$3 dir=$work/$1 port
    port=$(free_port)
    mkdir -p "$dir"
    echo bob >"$dir/users"
    cat >"$dir/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:$port"
role = "mx"
[domains]
local = ["bench.test"]
[tables]
users = "users"
[relay]
trusted_networks = ["127.0.0.0/8"]
smarthost = "[127.0.0.1]:$p_sink"
[server]
max_connections_per_ip = 100
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
$extra
TOML
    POSTERN_LOG=warn target/release/postern serve --config "$dir/postern.toml" 2>"$dir/log" &
    local pid=$!
    wait_for 30 "Postern ($name) to listen" listening "$port"
    sync
    local t0 t1 out accept
    t0=$(date +%s.%N)
    out=$("$bench" --server "127.0.0.1:$port" --clients 20 --messages "$N" --size 4096 --rcpt "$rcpt")
    accept=$(echo "$out" | tr ' ' '\n' | sed -n 's/^msg_per_s=//p')
    wait_for 600 "Postern ($name) to empty its queue" bash -c "[ -z \"\$(ls -A '$dir/data/spool/queue')\" ]"
    t1=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c "print($accept, round($N / ($t1 - $t0)))"
}

echo "| path | messages | accept msg/s | end-to-end msg/s |"
echo "|---|---|---|---|"
read -r a e < <(postern_run relay "" x@sink.test)
echo "| relay to smtp-sink | $N | $a | $e |"
read -r a e < <(postern_run relay-rspamd $'[[milter]]\nname = "rspamd"\naddress = "inet:127.0.0.1:'"$p_rspamd"'"' x@sink.test)
echo "| relay, rspamd as a milter | $N | $a | $e |"
read -r a e < <(postern_run maildir "" bob@bench.test)
echo "| local, Maildir | $N | $a | $e |"
read -r a e < <(postern_run lmtp $'[delivery]\nlocal = "lmtp"\nlmtp = "unix:'"$dv/lmtp"'"' bob@bench.test)
echo "| local, LMTP to Dovecot | $N | $a | $e |"
