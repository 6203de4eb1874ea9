#!/usr/bin/env bash
# TLS benchmark: STARTTLS handshakes per second (connect, EHLO, STARTTLS, handshake, EHLO,
# QUIT) and messages per second over STARTTLS, against clear text in the same run, with 1 and
# 20 concurrent clients, for an ECDSA P-256 and an RSA-2048 certificate (the two kinds Let's
# Encrypt issues). Also Postern's peak RSS. The certificates are made here with openssl;
# everything stays on 127.0.0.1.
#
# Usage: bench/tls.sh [HANDSHAKES] [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/port.sh
NH=${1:-2000}
NM=${2:-4000}

command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
cargo build --release -q -p postern -p postern-bench
work=$(mktemp -d /var/tmp/postern-tls-bench.XXXXXX)
pid=
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/root.key" -out "$work/root.pem" -days 2 \
    -subj "/CN=Bench Root" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
leaf() { # leaf NAME KEYOPTS...: a leaf for mx.bench.test signed by the root, as fullchain + key.
    local n=$1
    shift
    openssl req -newkey "$@" -nodes -keyout "$work/$n.key" -out "$work/$n.csr" -subj "/CN=mx.bench.test" 2>/dev/null
    printf 'subjectAltName=DNS:mx.bench.test\n' >"$work/$n.ext"
    openssl x509 -req -in "$work/$n.csr" -CA "$work/root.pem" -CAkey "$work/root.key" -CAcreateserial \
        -out "$work/$n.pem" -days 2 -extfile "$work/$n.ext" 2>/dev/null
    cat "$work/$n.pem" "$work/root.pem" >"$work/$n.fullchain.pem"
}
leaf ecdsa ec -pkeyopt ec_paramgen_curve:P-256
leaf rsa rsa:2048

printf 'bob\n' >"$work/users"
start() { # start KIND: Postern with that certificate; sets pid and port.
    cat >"$work/postern.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[tls]
cert = "$1.fullchain.pem"
key = "$1.key"
[domains]
local = ["example.test"]
[tables]
users = "users"
[server]
max_connections_per_ip = 50
[authentication]
# No DNS here: inbound SPF/DKIM/DMARC checks off.
verify = false
[dns]
nameservers = ["127.0.0.1:9"]
TOML
    POSTERN_LOG=warn target/release/postern serve --config "$work/postern.toml" 2>"$work/log" &
    pid=$!
    wait_port "$pid" "$work/log"
}
bench() { target/release/postern-bench --server "127.0.0.1:$port" --starttls "$work/root.pem" "$@"; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }

sync
echo "| certificate | clients | STARTTLS handshakes/s | msg/s over STARTTLS (4 KiB) | msg/s clear text (4 KiB) |"
echo "|---|---|---|---|---|"
for kind in ecdsa rsa; do
    start $kind
    # Warm-up (not reported): see bench/accept.sh.
    bench --clients 20 --messages "$NM" >/dev/null
    for clients in 1 20; do
        hs=$(bench --handshakes --clients $clients --messages "$NH" | field per_s)
        tls=$(bench --clients $clients --messages "$NM" | field msg_per_s)
        clear=$(target/release/postern-bench --server "127.0.0.1:$port" --clients $clients --messages "$NM" | field msg_per_s)
        echo "| $kind | $clients | $hs | $tls | $clear |"
    done
    rss=$(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)
    kill $pid
    wait $pid 2>/dev/null || true
    rm -rf "$work/data"
    echo "peak RSS ($kind run): $rss" >&2
done
