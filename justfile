# Routine commands (https://github.com/casey/just); each is also a plain shell command.

# Run Postern on the embedded development default (127.0.0.1:2525).
run:
    cargo run --release -- serve

# Every test, as CI runs it.
test:
    scripts/test

# Fuzz one target with AFL++ for SECONDS (default 60); `scripts/fuzz --list` names them.
fuzz TARGET SECONDS="60":
    scripts/fuzz {{TARGET}} {{SECONDS}}

# Acceptance benchmark (docs/benchmarks.md).
bench:
    bench/accept.sh
