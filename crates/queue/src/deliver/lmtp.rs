//! Deliveries of an attempt over LMTP (RFC 2033): mailboxes under `[delivery] local = "lmtp"`
//! and domains of `lmtp:` routes, one outcome per recipient.

use super::*;

/// The due mailbox recipients over LMTP (`[delivery] local = "lmtp"`).
pub(super) async fn lmtp(
    config: &Arc<Config>,
    pool: &postern_outbound::Pool,
    env: &mut Envelope,
    message: &Body,
    now_s: u64,
) -> Vec<Notice> {
    let due: Vec<usize> = (0..env.recipients.len())
        .filter(|&i| {
            let r = &env.recipients[i];
            r.state == RcptState::Pending
                && r.next_attempt <= now_s
                && matches!(r.destination, Destination::Mailbox { .. })
        })
        .collect();
    if due.is_empty() {
        return Vec::new();
    }
    let reverse_path = env.reverse_path.clone();
    lmtp_to(config, pool, &config.delivery.lmtp, env, &due, reverse_path, message, now_s).await
}

/// The recipients `indexes` of `env` over LMTP to `server` (`unix:/path`, `[host]:port`):
/// one transaction, one outcome per recipient (RFC 2033 §4.2), so a mailbox over quota is
/// retried alone.
#[allow(clippy::too_many_arguments)]
pub(super) async fn lmtp_to(
    config: &Arc<Config>,
    pool: &postern_outbound::Pool,
    server: &postern_config::LmtpServer,
    env: &mut Envelope,
    indexes: &[usize],
    reverse_path: ReversePath,
    message: &Body,
    now_s: u64,
) -> Vec<Notice> {
    use postern_outbound::lmtp;
    let rcpts: Vec<Rcpt> = indexes
        .iter()
        .map(|&i| Rcpt { address: env.recipients[i].address().clone(), notify: None, orcpt: None })
        .collect();
    let msg = Message {
        id: env.id.to_string(),
        reverse_path,
        body_8bit: env.body_8bit,
        smtputf8: env.smtputf8,
        data: message.clone(),
        ret: None,
        envid: None,
        // LMTP is final delivery (RFC 8689 §4.4), over a socket of this host or its network.
        require_tls: false,
        tls_optional: false,
        forced: false,
    };
    // At most `[outbound] max_per_destination` deliveries to the LMTP server at once, as for
    // an SMTP destination.
    let _slot = pool.permit(&format!("lmtp {server}"), config.outbound.max_per_destination).await;
    let cache = (&pool.lmtp_idle, config.outbound.connection_cache_time.0);
    let results = lmtp::deliver(server, &config.hostname, config.outbound.command_timeout.0, cache, &rcpts, &msg).await;
    if results.iter().any(|r| matches!(r.outcome, Outcome::Delivered(_))) {
        postern_types::failpoint::hit("queue::lmtp-delivered");
    }
    let mut reports = Vec::new();
    for (&i, result) in indexes.iter().zip(results) {
        let r = &mut env.recipients[i];
        let delivered = matches!(result.outcome, Outcome::Delivered(_));
        let by = By {
            relay: &result.relay,
            remote_host: None,
            tls: None,
            transport: postern_metrics::Transport::Lmtp,
            delays: None,
        };
        reports.extend(record(config, env.id, r, &by, result.outcome, now_s, false));
        if delivered && r.notify().success {
            reports.push(bounce::status(r, Action::Delivered, EnhancedStatus(2, 0, 0), None, None));
        }
    }
    reports
}
