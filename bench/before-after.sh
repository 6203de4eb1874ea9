#!/usr/bin/env bash
# The relay benchmark on two builds of the daemon in one run: COMMIT's (built in a worktree
# under target/before-after/) and this tree's, alternating ROUNDS times (default 3), so that
# both see the same machine at the same time; Postfix runs in each round too, as the yardstick
# of how fast the machine was. Every argument after ROUNDS goes to bench/relay.sh, and so do
# its environment variables (SIZE=, QUEUE_CONCURRENCY=, ...).
#
# Usage: bench/before-after.sh COMMIT [ROUNDS] [MESSAGES_1_CLIENT MESSAGES_20_CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
commit=${1:?usage: bench/before-after.sh COMMIT [ROUNDS] [N1 N20]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
tree=target/before-after/$(git rev-parse --short "$commit")
if [ ! -d "$tree" ]; then
    git worktree add --detach "$tree" "$commit" >/dev/null
fi
(cd "$tree" && cargo build --release -q -p postern)
cargo build --release -q -p postern -p postern-bench
for round in $(seq 1 "$rounds"); do
    echo "## round $round: before ($commit)"
    POSTERN_BIN=$PWD/$tree/target/release/postern bench/relay.sh "$@" | sed -n '/^| clients/,$p'
    echo "## round $round: after ($(git rev-parse --short HEAD))"
    bench/relay.sh "$@" | sed -n '/^| clients/,$p'
done
