#!/usr/bin/env bash
# End-to-end relay benchmark, Postern and Postfix in the same run: N concurrent clients send
# 4 KiB messages (pipelined MAIL/RCPT/DATA) to the MTA on loopback, which relays them to
# Postfix's smtp-sink on loopback. For each MTA and row it reports the acceptance rate (the
# clients' 250s) and the end-to-end rate (until the MTA's queue is empty again), and the ratio.
# Rows alternate between the MTAs so that both see the same disk state; a warm-up goes first.
#
# With DKIM=rsa or DKIM=ed25519, Postern signs every message with a key made by
# `postern dkim keygen`, and Postfix signs through Debian's opendkim as a milter on a UNIX
# socket (our users' stack today, as Debian sets it up), always with an RSA key of the same
# size (2048 bits).
#
# With FORWARD=1 the clients are outsiders writing to fwd@bench.test, an alias for x@sink.test
# on both MTAs: Postern checks SPF/DKIM/DMARC (against a dnsmasq on loopback that answers
# NXDOMAIN to everything, so every lookup is a real, fast DNS exchange), rewrites the
# sender with SRS and ARC-seals each forwarded copy (RSA key); Postfix forwards through
# virtual_alias_maps, without SRS or ARC (it has neither built in).
#
# With METRICS=1 Postern serves `[metrics] listen` and the script scrapes /metrics every second
# while it runs (the counters themselves are always kept; this measures serving and scraping).
#
# SIZE=BYTES sets the message size (default 4096). The daemon's peak PSS (proportional set
# size: its private memory plus its share of what it shares, from /proc/PID/smaps_rollup,
# sampled every 0.1 s) is printed at the end, beside its peak RSS.
#
# POSTERN_BIN=PATH runs that build of the daemon instead of this tree's (the load generator is
# still this tree's): bench/before-after.sh compares two commits that way.
#
# Usage: [PROFILE=perf|strace] [SPOOL_SYNC=syncfs|fsync] [QUEUE_CONCURRENCY=N] [DKIM=rsa|ed25519] [FORWARD=1] [METRICS=1] [SIZE=BYTES] bench/relay.sh [MESSAGES_1_CLIENT] [MESSAGES_20_CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postfix.sh
ensure_packages postfix
N1=${1:-1000}
N20=${2:-4000}
SIZE=${SIZE:-4096}

# PROFILE=perf or PROFILE=strace: the Postern row of 20 clients alone, with `perf record`
# (release code with line tables: the `profiling` profile) or `strace -c -f` attached; the
# report goes to stdout.
profile_dir=release
[ -n "${PROFILE:-}" ] && profile_dir=profiling
cargo build --profile "$profile_dir" -q -p postern -p postern-bench
bench=$PWD/target/$profile_dir/postern-bench
# POSTERN_BIN: another build of the daemon to measure (bench/before-after.sh).
postern_bin=${POSTERN_BIN:-$PWD/target/$profile_dir/postern}
work=$(mktemp -d /var/tmp/postern-relay.XXXXXX)
chmod 755 "$work"
pf=$work/postfix
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    postfix_stop "$pf"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

p_sink=$(free_port)
p_postern=$(free_port)
p_postfix=$(free_port)

smtp-sink -u nobody 127.0.0.1:"$p_sink" 1000 &
sink_pid=$!
pids+=($sink_pid)

mkdir -p "$work/postern"
dkim_key=""
postfix_milter=""
if [ -n "${DKIM:-}" ]; then
    target/$profile_dir/postern dkim keygen --domain remote.test --selector bench --algorithm "$DKIM" \
        --out "$work/postern/dkim.key" >/dev/null
    dkim_key=$'[[dkim.key]]\ndomain = "remote.test"\nselector = "bench"\nprivate_key = "dkim.key"'
    ensure_packages opendkim
    mkdir -p "$work/opendkim"
    target/$profile_dir/postern dkim keygen --domain remote.test --selector od --algorithm rsa \
        --out "$work/opendkim/od.key" >/dev/null
    # A UNIX socket, as Debian's opendkim package sets up for Postfix: over TCP on loopback,
    # Nagle and delayed ACKs add tens of milliseconds per message to the milter dialog.
    milter_sock=$work/opendkim/opendkim.sock
    cat >"$work/opendkim/opendkim.conf" <<CONF
Syslog no
Mode s
Domain remote.test
Selector od
KeyFile $work/opendkim/od.key
Socket local:$milter_sock
UMask 000
PidFile $work/opendkim/opendkim.pid
UserID root
Canonicalization relaxed/relaxed
RequireSafeKeys false
CONF
    /usr/sbin/opendkim -f -x "$work/opendkim/opendkim.conf" >"$work/opendkim.log" 2>&1 &
    pids+=($!)
    wait_for 30 "opendkim to listen" test -S "$milter_sock"
    postfix_milter="smtpd_milters = unix:$milter_sock
milter_default_action = tempfail"
fi
rcpt=x@sink.test
trusted='["127.0.0.0/8"]'
verify=false
forward_cfg=""
postfix_forward=""
dns_server="127.0.0.1:9"
if [ -n "${FORWARD:-}" ]; then
    ensure_packages dnsmasq
    p_dns=$(free_port)
    dnsmasq -k --port="$p_dns" --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
        --address=/#/ --pid-file="$work/dnsmasq.pid" 2>"$work/dnsmasq.log" &
    pids+=($!)
    dns_server="127.0.0.1:$p_dns"
    rcpt=fwd@bench.test
    trusted='[]'
    verify=true
    echo "bench secret" >"$work/postern/srs-secrets"
    echo "fwd: x@sink.test" >"$work/postern/aliases"
    target/$profile_dir/postern dkim keygen --domain bench.test --selector arc --out "$work/postern/arc.key" >/dev/null
    forward_cfg=$'[tables]\naliases = "aliases"\n[forwarding]\nsrs_domain = "srs.bench.test"\nsrs_secret_file = "srs-secrets"\n[[dkim.key]]\ndomain = "bench.test"\nselector = "arc"\nprivate_key = "arc.key"\n[policy]\nenabled = false'
    echo "fwd@bench.test x@sink.test" >"$work/virtual"
    postfix_forward="virtual_alias_domains = bench.test
virtual_alias_maps = texthash:$work/virtual"
fi
metrics_cfg=""
if [ -n "${METRICS:-}" ]; then
    p_metrics=$(free_port)
    metrics_cfg=$'[metrics]\nlisten = "127.0.0.1:'"$p_metrics"'"'
fi
cat >"$work/postern/postern.toml" <<TOML
hostname = "bench.example.test"
data_dir = "data"
[[listener]]
address = "127.0.0.1:$p_postern"
role = "mx"
[domains]
local = ["bench.test"]
[relay]
trusted_networks = $trusted
smarthost = "[127.0.0.1]:$p_sink"
[server]
max_connections_per_ip = 100
[queue]
max_concurrency = ${QUEUE_CONCURRENCY:-100}
[spool]
sync = "${SPOOL_SYNC:-syncfs}"
$dkim_key
$forward_cfg
$metrics_cfg
[authentication]
# Inbound SPF/DKIM/DMARC checks off (with FORWARD=1: on, every name NXDOMAIN: no records).
verify = $verify
temperror = "accept"
[dns]
nameservers = ["$dns_server"]
TOML
POSTERN_LOG=warn "$postern_bin" serve --config "$work/postern/postern.toml" 2>"$work/postern.log" &
postern_pid=$!
pids+=($postern_pid)

postfix_start "$pf" "$p_postfix" "relayhost = [127.0.0.1]:$p_sink
smtpd_client_connection_count_limit = 100
$postfix_forward
$postfix_milter"
wait_for 30 "Postern to listen" listening "$p_postern"
if [ -n "${METRICS:-}" ]; then
    wait_for 30 "the metrics endpoint" listening "$p_metrics"
    # A scrape a second, as Prometheus does every 15 s or so: bounded by the run (killed at exit).
    (for _ in $(seq 1 3600); do
        curl -s -o /dev/null "http://127.0.0.1:$p_metrics/metrics" || true
        sleep 1
    done) &
    pids+=($!)
fi
wait_for 30 "smtp-sink to listen" listening "$p_sink"

# The daemon's peak PSS in KiB, kept in $work/pss-peak: sampled every 0.1 s for at most an
# hour (killed at exit).
echo 0 >"$work/pss-peak"
echo 0 >"$work/threads-peak"
(peak=0 tpeak=0
for _ in $(seq 1 36000); do
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$postern_pid/smaps_rollup" 2>/dev/null || echo 0)
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$postern_pid/status" 2>/dev/null || echo 0)
    if [ "${pss:-0}" -gt "$peak" ]; then
        peak=$pss
        echo "$peak" >"$work/pss-peak"
        cp "/proc/$postern_pid/smaps" "$work/smaps-peak" 2>/dev/null || true
    fi
    if [ "${threads:-0}" -gt "$tpeak" ]; then tpeak=$threads; echo "$tpeak" >"$work/threads-peak"; fi
    sleep 0.1
done) &
pids+=($!)

queue_empty() {
    case $1 in
        postern) [ -z "$(ls -A "$work/postern/data/spool/queue")" ] ;;
        postfix) [ -z "$(find "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" "$pf/queue/maildrop" -type f 2>/dev/null)" ] ;;
    esac
}
port_of() { if [ "$1" = postern ]; then echo "$p_postern"; else echo "$p_postfix"; fi; }

# CPU time in clock ticks: the whole machine (all busy states of /proc/stat), and one process.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
process_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run MTA CLIENTS N: prints "accept_rate e2e_rate machine_ms_per_msg load_ms_per_msg own_ms_per_msg":
# CPU milliseconds per message of the whole machine, of the load generator and smtp-sink alone
# (what the MTA did not spend), and of the Postern process itself, user and system, all its
# threads ("-" for Postfix, whose work is spread over processes that come and go).
run() {
    local mta=$1 clients=$2 n=$3
    local t0 t1 out accept m0 m1 s0 s1 p0 p1
    # Each row starts on a clean filesystem: without this, the first sync of a row also pays
    # for the previous row's writes and unlinks (journal commit, discards), whichever MTA made
    # them.
    sync
    m0=$(machine_ticks)
    s0=$(process_ticks "$sink_pid")
    p0=$(process_ticks "$postern_pid")
    t0=$(date +%s.%N)
    out=$("$bench" --server "127.0.0.1:$(port_of "$mta")" --clients "$clients" --messages "$n" --size "$SIZE" --rcpt "$rcpt")
    accept=$(echo "$out" | tr ' ' '\n' | sed -n 's/^msg_per_s=//p')
    client_cpu=$(echo "$out" | tr ' ' '\n' | sed -n 's/^cpu_seconds=//p')
    wait_for 600 "$mta to empty its queue" queue_empty "$mta"
    t1=$(date +%s.%N)
    m1=$(machine_ticks)
    s1=$(process_ticks "$sink_pid")
    p1=$(process_ticks "$postern_pid")
    own=-
    [ "$mta" = postern ] && own=$(python3 -c "print(round(($p1 - $p0) * 1000 / $hz / $n, 3))")
    python3 -c "print($accept, round($n / ($t1 - $t0)), round(($m1 - $m0) * 1000 / $hz / $n, 3), round((($s1 - $s0) / $hz + $client_cpu) * 1000 / $n, 3), '$own')"
}

sync
if [ -n "${PROFILE:-}" ]; then
    run postern 20 "$N20" >/dev/null # warm-up
    case $PROFILE in
        perf) perf record -q -e cpu-clock -F 999 -g -p "$postern_pid" -o "$work/perf.data" 2>/dev/null & ;;
        strace) strace -c -f -p "$postern_pid" -o "$work/strace.txt" 2>/dev/null & ;;
        *) echo "PROFILE is perf or strace" >&2; exit 2 ;;
    esac
    tracer=$!
    # Both tracers create their output file as they start, just before they attach.
    wait_for 30 "the tracer to attach" test -e "$work/perf.data" -o -e "$work/strace.txt"
    run postern 20 "$N20"
    kill -INT "$tracer"
    wait "$tracer" || true
    case $PROFILE in
        perf) (perf report -i "$work/perf.data" --no-children -g none --sort dso,sym 2>/dev/null | grep -v "^#" | head -80) || true
            cp "$work/perf.data" target/relay-perf.data
            echo "(perf report -i target/relay-perf.data for more)" ;;
        strace) cat "$work/strace.txt" ;;
    esac
    exit 0
fi
for mta in postern postfix; do run "$mta" 20 "$N20" >/dev/null; done # warm-up

echo "| clients | messages | Postern accept msg/s | Postfix accept msg/s | Postern end-to-end msg/s | Postfix end-to-end msg/s | end-to-end ratio | CPU ms/msg, machine: Postern / Postfix | of which load generator + sink | Postern process CPU ms/msg |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for clients in 1 20; do
    n=$N1
    [ "$clients" -eq 20 ] && n=$N20
    read -r pa pe pm pl po < <(run postern "$clients" "$n")
    read -r fa fe fm fl _ < <(run postfix "$clients" "$n")
    ratio=$(python3 -c "print(f'{$pe / $fe:.2f}')")
    echo "| $clients | $n | $pa | $fa | $pe | $fe | $ratio | $pm / $fm | $pl / $fl | $po |"
done
echo
echo "peak RSS (VmHWM) of postern: $(awk '/VmHWM/ {print $2, $3}' "/proc/$postern_pid/status")"
echo "peak PSS of postern: $(cat "$work/pss-peak") kB (messages of $SIZE bytes), peak threads: $(cat "$work/threads-peak")"
# Where the peak was: PSS by kind of mapping (the binary, the heap and the arenas' anonymous
# mappings, thread stacks, other files), largest first.
if [ -s "$work/smaps-peak" ]; then
    echo "PSS at the peak by mapping (kB):"
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6) }
         /^Pss:/ { pss[name] += $2 }
         END { for (n in pss) if (pss[n] >= 256) printf "  %8d  %s\n", pss[n], n }' "$work/smaps-peak" | sort -rn
fi
