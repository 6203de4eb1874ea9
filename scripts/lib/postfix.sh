# Shared by scripts/interop-postfix and bench/relay.sh: a private Postfix instance (Debian's
# postfix package) under a folder of ours, listening on 127.0.0.1 only, logging to a file,
# running in the foreground under our control. Source this file; it defines functions only.

# ensure_packages PKG...: installs the Debian packages whose commands are missing.
ensure_packages() {
    local need=()
    for p in "$@"; do
        case $p in
            postfix) command -v postfix >/dev/null || need+=(postfix) ;;
            swaks) command -v swaks >/dev/null || need+=(swaks) ;;
            # swaks --tls needs Perl's TLS modules (only Recommends of the swaks package).
            perl-tls) perl -MIO::Socket::SSL -MNet::SSLeay -e1 2>/dev/null ||
                need+=(libio-socket-ssl-perl libnet-ssleay-perl) ;;
            openssl) command -v openssl >/dev/null || need+=(openssl) ;;
            # The programs of a Debian box that call /usr/sbin/sendmail (tests/it/debian.rs).
            mailx) command -v mail >/dev/null || need+=(bsd-mailx) ;;
            php) command -v php >/dev/null || need+=(php-cli) ;;
            # Dovecot's LMTP server with quota and Sieve (tests/it/lmtp.rs).
            dovecot) command -v dovecot >/dev/null && [ -e /usr/lib/dovecot/lmtp ] &&
                [ -e /usr/lib/dovecot/modules/lib90_sieve_plugin.so ] ||
                need+=(dovecot-core dovecot-lmtpd dovecot-sieve) ;;
            # opendkim as a signing milter, checked by dkimpy (tests/it/milters.rs).
            opendkim) command -v opendkim >/dev/null || need+=(opendkim) ;;
            rspamd) command -v rspamd >/dev/null || need+=(rspamd) ;;
            # dkimpy's ARC signing (tests/it/arc.rs) needs its authres module.
            dkimpy)
                /usr/bin/python3 -c 'import dkim' 2>/dev/null || need+=(python3-dkim)
                /usr/bin/python3 -c 'import authres' 2>/dev/null || need+=(python3-authres)
                ;;
            # procmail as a pipe target (tests/it/pipes.rs).
            procmail) command -v procmail >/dev/null || need+=(procmail) ;;
            # systemd-analyze verify for the unit in dist/ (tests/it/deploy.rs).
            systemd-analyze) command -v systemd-analyze >/dev/null || need+=(systemd) ;;
            unshare) command -v unshare >/dev/null || need+=(util-linux) ;;
            # promtool checks the /metrics output (tests/it/metrics.rs).
            promtool) command -v promtool >/dev/null || need+=(prometheus) ;;
            # A loopback DNS server for benchmarks that run the SPF/DKIM/DMARC checks.
            dnsmasq) command -v dnsmasq >/dev/null || need+=(dnsmasq-base) ;;
            # Redis for the shared [store] (crates/store, tests/it/cluster.rs), started on a unix socket.
            redis) command -v redis-server >/dev/null || need+=(redis-server) ;;
        esac
    done
    if ((${#need[@]})); then
        echo "installing ${need[*]} (Debian)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# free_port: prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# listening PORT: whether something listens on 127.0.0.1:PORT.
listening() { ss -ltnH "sport = :$1" | grep -q LISTEN; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it succeeds, for at
# most SECONDS.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

# listening_pid PORT PID: whether process PID, or a descendant of it (Postfix's master under
# postfix-script), listens on TCP port PORT.
listening_pid() {
    local p
    p=$(ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\),.*/\1/p' | head -n 1)
    while [[ -n $p && $p -gt 1 ]]; do
        [[ $p == "$2" ]] && return 0
        p=$(ps -o ppid= -p "$p" | tr -d ' ')
    done
    return 1
}

# start_on_free_port WHAT FUNCTION: calls `FUNCTION PORT` with a free port; FUNCTION starts a
# daemon in the background and sets daemon_pid. Waits (60 s at most) until that very process
# listens on PORT; if it died instead (another process took the port between the look-up and its
# bind: EADDRINUSE), tries again on another port, five times at most. Sets daemon_port.
start_on_free_port() {
    local what=$1 start=$2 try deadline
    for try in 1 2 3 4 5; do
        daemon_port=$(free_port)
        "$start" "$daemon_port"
        deadline=$((SECONDS + 60))
        while ((SECONDS < deadline)); do
            listening_pid "$daemon_port" "$daemon_pid" && return 0
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$daemon_pid" 2>/dev/null || true
        echo "$what did not listen on port $daemon_port (try $try); trying another port" >&2
    done
    echo "$what could not be started" >&2
    return 1
}

# postfix_master_cf: the services a private instance needs (Debian's master.cf without chroot
# and without the smtpd on port 25), so that a customised /etc/postfix/master.cf on the
# machine changes nothing here.
postfix_master_cf() {
    cat <<'CF'
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
local      unix  - n n -    - local
virtual    unix  - n n -    - virtual
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CF
}

# postfix_launch DIR PORT MAIN_CF_LINES: starts Postfix in the background with its
# configuration (our own main.cf and master.cf), queue and data below DIR (which must be
# reachable by the postfix user), smtpd on 127.0.0.1:PORT, the given extra main.cf lines, its
# log in DIR/postfix.log; sets daemon_pid (the master). Stop it with `postfix_stop DIR`.
postfix_launch() {
    local dir=$1 port=$2 extra=$3
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data"
    postfix_master_cf >"$dir/conf/master.cf"
    cat >"$dir/conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.example.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = /dev/stdout
alias_maps =
alias_database =
smtpd_tls_security_level = none
smtp_tls_security_level = none
$extra
CF
    postconf -c "$dir/conf" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd"
    postfix -c "$dir/conf" set-permissions >/dev/null 2>&1 || true
    postfix -c "$dir/conf" start-fg >"$dir/postfix.log" 2>&1 &
    daemon_pid=$!
}

# postfix_start DIR PORT MAIN_CF_LINES: postfix_launch, then waits until it listens on PORT.
postfix_start() {
    postfix_launch "$@"
    wait_for 30 "Postfix to listen on $2" listening "$2" || { cat "$1/postfix.log"; return 1; }
}

# postfix_stop DIR: stops the instance started by postfix_start.
postfix_stop() { postfix -c "$1/conf" stop >/dev/null 2>&1 || true; }
