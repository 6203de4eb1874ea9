# Shared by the interop scripts: the Postern binary, a Postern started on ports it chose itself,
# and other daemons started on a free port with a retry. Source this file; it defines functions
# only (and uses scripts/lib/postfix.sh's wait_for).

# postern_bin: prints the path of the postern binary. scripts/test passes the one its test build
# made ($POSTERN_BIN), so that nothing is compiled twice; a script run on its own builds it.
postern_bin() {
    if [[ -n ${POSTERN_BIN:-} ]]; then
        echo "$POSTERN_BIN"
        return
    fi
    cargo build -q -p postern --features "${POSTERN_FEATURES:-}" >&2
    echo "$PWD/target/debug/postern"
}

# postern_serve BIN CONFIG LOG: starts `BIN serve --config CONFIG` in the background, its log in
# LOG; sets postern_pid; waits (at most 60 s) for its "postern started" line. Listeners should
# be configured on port 0: `postern_port LOG ROLE` then says which port each one got.
postern_serve() {
    "$1" serve --config "$2" 2>"$3" &
    postern_pid=$!
    if ! wait_for 60 "Postern to start" grep -q "postern started" "$3"; then
        cat "$3" >&2
        return 1
    fi
}

# postern_port LOG ROLE: prints the port of the first listener of ROLE named in LOG.
postern_port() {
    sed -n "s/.*listening on [^ ]*:\([0-9]*\) (role $2).*/\1/p" "$1" | head -n 1
}
