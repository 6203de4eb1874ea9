#!/usr/bin/env bash
# Outbound TLS benchmark (issue 14): the relay benchmark with the next hop found by MX and
# reached three ways, in the same run: clear text (`tls_policy` none), opportunistic STARTTLS
# (the default without MTA-STS), and verified TLS under an MTA-STS `enforce` policy (the policy
# fetched over HTTPS once, then cached; each new connection's certificate checked against the
# bench CA and the MX name). N clients send 4 KiB messages to Postern on loopback, which
# delivers them to a discarding SMTP sink with STARTTLS (`tls-sink`, the bench crate's: Postfix's
# smtp-sink has no TLS). DNS is a dnsmasq on loopback with the MX, A and `_mta-sts` records; the
# policy host is a Python HTTPS server on 127.0.0.78:443 (run as root). Certificates are made
# here with openssl (ECDSA P-256). For each mode and row: the acceptance rate, the end-to-end
# rate (until the queue is empty again) and Postern's own CPU milliseconds per message. Under
# `enforce` a delivery that does not verify is deferred, so the queue would not empty and the
# script fails: every counted message went over verified TLS.
#
# The sink logs each session as over TLS or in clear text; the script fails when a mode's
# sessions are not what the mode means (any clear-text session under may or sts, any TLS one
# under clear). With CACHE=0 Postern's connection cache is off (`connection_cache_time = "0s"`):
# every message then pays a new connection, STARTTLS and certificate check.
#
# Usage: [CACHE=0] bench/outbound-tls.sh [MESSAGES_1_CLIENT] [MESSAGES_20_CLIENTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postfix.sh
ensure_packages dnsmasq
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
N1=${1:-500}
N20=${2:-2000}
ROUNDS=${3:-3}

cargo build --release -q -p postern -p postern-bench
bench=$PWD/target/release/postern-bench
sink_bin=$PWD/target/release/tls-sink
work=$(mktemp -d /var/tmp/postern-outbound-tls.XXXXXX)
chmod 755 "$work"
pids=()
postern_pid=
cleanup() {
    [ -n "$postern_pid" ] && kill "$postern_pid" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The CA, the MX certificate and the policy host's certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/root.key" \
    -out "$work/root.pem" -days 2 -subj "/CN=Bench Root" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
leaf() { # leaf FILE NAME: a certificate for NAME signed by the root, as fullchain + key.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/$1.key" \
        -out "$work/$1.csr" -subj "/CN=$2" 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$2" >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$work/root.pem" -CAkey "$work/root.key" -CAcreateserial \
        -out "$work/$1.pem" -days 2 -extfile "$work/$1.ext" 2>/dev/null
    cat "$work/$1.pem" "$work/root.pem" >"$work/$1.fullchain.pem"
}
leaf mx mx.sink.test
leaf sts mta-sts.sink.test

p_dns=$(free_port)
p_sink=$(free_port)
dnsmasq -k --port="$p_dns" --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
    --local=/test/ --mx-host=sink.test,mx.sink.test,10 --host-record=mx.sink.test,127.0.0.1 \
    --txt-record=_mta-sts.sink.test,"v=STSv1; id=1" --host-record=mta-sts.sink.test,127.0.0.78 \
    --pid-file="$work/dnsmasq.pid" 2>"$work/dnsmasq.log" &
pids+=($!)
mkdir -p "$work/www/.well-known"
printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.sink.test\r\nmax_age: 86400\r\n' >"$work/www/.well-known/mta-sts.txt"
python3 - "$work" <<'PY' 2>"$work/https.log" &
import http.server, os, ssl, sys
work = sys.argv[1]
os.chdir(os.path.join(work, "www"))
server = http.server.HTTPServer(("127.0.0.78", 443), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(work, "sts.fullchain.pem"), os.path.join(work, "sts.key"))
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
pids+=($!)
"$sink_bin" --listen "127.0.0.1:$p_sink" --cert "$work/mx.fullchain.pem" --key "$work/mx.key" 2>"$work/sink.log" &
pids+=($!)
wait_for 30 "the sink to listen" listening "$p_sink"
wait_for 30 "dnsmasq to listen" sh -c "ss -lunH 'sport = :$p_dns' | grep -q ."
wait_for 30 "the policy host to listen" listening 443

p_postern=$(free_port)
cache=""
[ "${CACHE:-}" = 0 ] && cache='connection_cache_time = "0s"'
# start MODE: a fresh Postern (new data folder) relaying to sink.test by MX in that mode.
start() {
    local mode=$1 sts=false
    rm -rf "$work/postern"
    mkdir -p "$work/postern"
    : >"$work/postern/tls-policy"
    case $mode in
        clear) echo "sink.test none" >"$work/postern/tls-policy" ;;
        sts) sts=true ;;
    esac
    cat >"$work/postern/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:$p_postern"
role = "mx"
[domains]
local = ["bench.test"]
[tables]
tls_policy = "tls-policy"
[relay]
trusted_networks = ["127.0.0.0/8"]
[server]
max_connections_per_ip = 100
[outbound]
port = $p_sink
ca_file = "$work/root.pem"
mta_sts = $sts
$cache
[authentication]
verify = false
[dns]
nameservers = ["127.0.0.1:$p_dns"]
TOML
    POSTERN_LOG=warn target/release/postern serve --config "$work/postern/postern.toml" 2>"$work/postern.log" &
    postern_pid=$!
    wait_for 30 "Postern to listen" listening "$p_postern"
}
stop() {
    kill "$postern_pid"
    wait "$postern_pid" 2>/dev/null || true
    postern_pid=
}
queue_empty() { [ -z "$(ls -A "$work/postern/data/spool/queue")" ]; }
process_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run CLIENTS N: prints "accept_rate e2e_rate postern_cpu_ms_per_msg".
run() {
    local clients=$1 n=$2 t0 t1 c0 c1 out accept
    sync
    c0=$(process_ticks "$postern_pid")
    t0=$(date +%s.%N)
    out=$("$bench" --server "127.0.0.1:$p_postern" --clients "$clients" --messages "$n" --size 4096 --rcpt x@sink.test)
    accept=$(echo "$out" | tr ' ' '\n' | sed -n 's/^msg_per_s=//p')
    wait_for 300 "the queue to empty (a delivery that did not verify stays deferred)" queue_empty
    t1=$(date +%s.%N)
    c1=$(process_ticks "$postern_pid")
    python3 -c "print($accept, round($n / ($t1 - $t0)), round(($c1 - $c0) * 1000 / $hz / $n, 3))"
}

count() { grep -c "$1" "$work/sink.log" || true; }
echo "| round | mode | clients | messages | accept msg/s | end-to-end msg/s | Postern CPU ms/msg | sink sessions since the mode started (TLS / clear) |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    for mode in clear may sts; do
        start "$mode"
        tls0=$(count "over TLS")
        clear0=$(count "clear text")
        run 20 200 >/dev/null # warm-up: the policy fetch, the first connections
        for clients in 1 20; do
            n=$N1
            [ "$clients" -eq 20 ] && n=$N20
            read -r a e c < <(run "$clients" "$n")
            tls=$(($(count "over TLS") - tls0))
            clear=$(($(count "clear text") - clear0))
            echo "| $round | $mode | $clients | $n | $a | $e | $c | $tls / $clear |"
            if { [ "$mode" = clear ] && [ "$tls" -gt 0 ]; } || { [ "$mode" != clear ] && [ "$clear" -gt 0 ]; }; then
                echo "mode $mode: $tls sessions over TLS, $clear in clear text" >&2
                exit 1
            fi
        done
        if [ "$mode" = sts ] && ! grep -q . "$work/postern/data/mta-sts/sink.test.toml"; then
            echo "the MTA-STS policy was never fetched" >&2
            exit 1
        fi
        stop
    done
done
