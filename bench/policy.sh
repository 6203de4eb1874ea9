#!/usr/bin/env bash
# Anti-spam benchmarks: (1) a block list of 1,000,000 IPv4 and 100,000 IPv6 networks: load time,
# lookup time, memory (bench/src/bin/iplist-bench.rs); (2) sessions per second refused — by the
# block list at connect, and by the HELO check (a bare word) right after EHLO — against sessions
# that pass, with 1 and 20 clients (postern-bench --sessions). Everything on 127.0.0.1; the checks
# that need DNS are off here, so the numbers are the cheap path.
#
# Usage: bench/policy.sh [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/port.sh
N=${1:-5000}
cargo build --release -q -p postern -p postern-bench
target/release/iplist-bench 2>/dev/null
work=$(mktemp -d /var/tmp/postern-policy-bench.XXXXXX)
pid=
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
start() { # start BLOCK_NETWORKS
    cat >"$work/postern.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[relay]
trusted_networks = []
[server]
max_connections_per_ip = 50
[policy]
block_networks = [$1]
ptr = "off"
fcrdns = "off"
helo_resolves = "off"
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
TOML
    POSTERN_LOG=warn target/release/postern serve --config "$work/postern.toml" 2>"$work/log" &
    pid=$!
    port=
    wait_port "$pid" "$work/log"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
row() { # row LABEL HELO CLIENTS
    local out
    out=$(target/release/postern-bench --server "127.0.0.1:$port" --sessions --helo "$2" --clients "$3" --messages "$N")
    echo "| $1 | $3 | $(echo "$out" | field per_s) | $(echo "$out" | field refused) / $(echo "$out" | field sessions) |"
}
echo
echo "| sessions | clients | sessions/s | refused / total |"
echo "|---|---|---|---|"
start ""
for c in 1 20; do row "pass (EHLO accepted)" client.bench.test $c; done
for c in 1 20; do row "refused: HELO not a FQDN" bare $c; done
stop
start '"127.0.0.0/8"'
for c in 1 20; do row "refused at connect: block_networks" client.bench.test $c; done
stop
