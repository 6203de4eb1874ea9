# Sourced by the bench scripts. wait_port PID LOG: waits for postern (PID) to listen and sets
# $port to its first listening port (the configurations say 127.0.0.1:0, so the kernel picks
# a free one); on failure prints LOG and exits.
wait_port() {
    port=
    for _ in $(seq 100); do
        port=$(ss -ltnpH 2>/dev/null | awk -v p="pid=$1," '$0 ~ p {split($4,a,":"); print a[2]; exit}')
        [ -n "${port:-}" ] && return 0
        sleep 0.1
    done
    echo "postern did not start"
    cat "$2"
    exit 1
}
