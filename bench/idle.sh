#!/usr/bin/env bash
# Memory per idle session: Postern's RSS with N idle SMTP connections (default 10,000), each
# after its greeting and again after an EHLO, against the RSS with none. Issue 13 asks for
# 10,000 idle connections in at most 48 MiB. Everything stays on 127.0.0.0/8.
#
# Usage: bench/idle.sh [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/port.sh
N=${1:-10000}
PER_IP=200
ulimit -n $((N + 1024))

cargo build --release -q -p postern
work=$(mktemp -d /var/tmp/postern-idle.XXXXXX)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'bob\n' > "$work/users"
cat > "$work/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[tables]
users = "users"
[server]
max_connections = $((N + 100))
max_connections_per_ip = $PER_IP
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
TOML
POSTERN_LOG=${POSTERN_LOG:-warn} target/release/postern serve --config "$work/postern.toml" 2>"$work/log" &
pid=$!
wait_port "$pid" "$work/log"
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
base=$(rss)
echo "| state | connections | RSS KiB | per session |"
echo "|---|---|---|---|"
echo "| idle server | 0 | $base | |"
for mode in greeted ehlo; do
    coproc CLIENTS { python3 bench/lib/idle_clients.py 127.0.0.1 "$port" "$N" "$PER_IP" "$mode"; }
    read -r line <&"${CLIENTS[0]}" || { echo "clients failed"; exit 1; }
    sleep 1
    now=$(rss)
    echo "| after $mode | $N | $now | $(( (now - base) * 1024 / N )) B |"
    eval "exec ${CLIENTS[1]}>&-"
    wait "$CLIENTS_PID" || true
    # Sessions close as the clients go.
    for _ in $(seq 100); do [ "$(ss -tnH state established "( sport = :$port )" | wc -l)" -eq 0 ] && break; sleep 0.1; done
done
echo
echo "peak RSS (VmHWM): $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
