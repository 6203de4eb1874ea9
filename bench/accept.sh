#!/usr/bin/env bash
# Acceptance benchmark: messages/second accepted by Postern with the durable spool (fsync of
# file and directory before 250), for 1 and 20 concurrent clients and 4 KiB / 100 KiB messages,
# and Postern's peak RSS (VmHWM). Messages go to a local mailbox, so Maildir delivery runs
# concurrently with acceptance, as in production. Everything stays on 127.0.0.1.
#
# Usage: [SPOOL_SYNC=syncfs|fsync] [RCPT=addr] bench/accept.sh [MESSAGES_4K] [MESSAGES_100K]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/port.sh
N4K=${1:-4000}
N100K=${2:-1000}
RCPT=${RCPT:-bob@example.test}
SPOOL_SYNC=${SPOOL_SYNC:-syncfs}

cargo build --release -q -p postern -p postern-bench
work=$(mktemp -d /var/tmp/postern-bench.XXXXXX)
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
max_connections_per_ip = 50
[spool]
sync = "$SPOOL_SYNC"
[authentication]
# No DNS here: inbound SPF/DKIM/DMARC checks off.
verify = false
[dns]
# Relayed recipients are only queued here: lookups fail fast on loopback, nothing leaves.
nameservers = ["127.0.0.1:9"]
TOML
# Flush what the build left dirty, so that it is not charged to the first run.
sync
POSTERN_LOG=warn target/release/postern serve --config "$work/postern.toml" 2>"$work/log" &
pid=$!
POSTERN_LOG=info
# Learn the port from the log (address 127.0.0.1:0 picks a free one).
wait_port "$pid" "$work/log"

# Warm-up (not reported): this machine's virtual disk is much slower on blocks it has never
# written (see docs/benchmarks.md), which would otherwise be charged to whichever row runs first.
target/release/postern-bench --server 127.0.0.1:$port --clients 20 --messages $N4K --size 4096 --rcpt "$RCPT" >/dev/null

echo "spool sync = $SPOOL_SYNC, recipient $RCPT"
echo
echo "| clients | size | messages | seconds | msg/s |"
echo "|---|---|---|---|---|"
for size in 4096 102400; do
    n=$N4K; [ $size -eq 102400 ] && n=$N100K
    for clients in 1 20; do
        out=$(target/release/postern-bench --server 127.0.0.1:$port --clients $clients --messages $n --size $size --rcpt "$RCPT")
        eval "$(echo "$out" | tr ' ' '\n' | grep -E '^(messages|seconds|msg_per_s)=')"
        echo "| $clients | $((size / 1024)) KiB | $messages | $seconds | $msg_per_s |"
    done
done
echo
echo "peak RSS (VmHWM) of postern: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
echo "disk: $(df -h "$work" | awk 'NR==2 {print $1, $2}') ($(findmnt -no FSTYPE -T "$work"))"
