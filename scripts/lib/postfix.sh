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
            dkimpy) /usr/bin/python3 -c 'import dkim' 2>/dev/null || need+=(python3-dkim) ;;
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

# postfix_start DIR PORT MAIN_CF_LINES: starts Postfix with its configuration, queue and data
# below DIR (which must be reachable by the postfix user), smtpd on 127.0.0.1:PORT, the given
# extra main.cf lines, its log in DIR/postfix.log. Stop it with `postfix_stop DIR`.
postfix_start() {
    local dir=$1 port=$2 extra=$3
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data"
    cp /etc/postfix/master.cf "$dir/conf/"
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
    postconf -c "$dir/conf" -MX smtp/inet
    postconf -c "$dir/conf" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd"
    postconf -c "$dir/conf" -F '*/*/chroot = n'
    postfix -c "$dir/conf" set-permissions >/dev/null 2>&1 || true
    postfix -c "$dir/conf" start-fg >"$dir/postfix.log" 2>&1 &
    wait_for 30 "Postfix to listen on $port" listening "$port" || { cat "$dir/postfix.log"; return 1; }
}

# postfix_stop DIR: stops the instance started by postfix_start.
postfix_stop() { postfix -c "$1/conf" stop >/dev/null 2>&1 || true; }
