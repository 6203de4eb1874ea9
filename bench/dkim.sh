#!/usr/bin/env bash
# DKIM benchmark: signatures/second and verification cost per message (bench/src/bin/dkim-bench.rs),
# then end-to-end relay with signing on, RSA and Ed25519 (bench/relay.sh with DKIM=...).
#
# Usage: bench/dkim.sh [ITERATIONS] [MESSAGES_1_CLIENT] [MESSAGES_20_CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p postern -p postern-bench
target/release/dkim-bench --iterations "${1:-2000}"
for alg in rsa ed25519; do
    echo
    echo "relay with DKIM=$alg:"
    DKIM=$alg bench/relay.sh "${2:-500}" "${3:-2000}" | tail -5
done
