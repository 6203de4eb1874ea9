//! Email authentication at commit time (issue: authentication): DKIM signing of what our own
//! users relay (RFC 6376), and the SPF / DKIM / DMARC / ARC checks of what arrives from the
//! outside on `mx` listeners, with the configured decision (reject, quarantine, accept) and the
//! DMARC aggregate record (RFC 7489 §7.2).

use postern_proto::Refusal;
use postern_store::Aggregate;
use std::net::IpAddr;

use postern_auth::{Checker, Decision, decide};
use postern_config::Config;
use postern_config::schema::DkimOnError;
use postern_proto::Transaction;
use postern_types::ReversePath;

use crate::{AuthState, Context};

/// What the checks add to a message being committed.
#[derive(Debug, Default)]
pub(crate) struct Added {
    /// Header fields to prepend (each ending in CRLF).
    pub(crate) headers: String,
    /// The Maildir++ folder for local deliveries (DMARC quarantine).
    pub(crate) quarantine: Option<String>,
    /// The log line of the checks, written with the queue ID once the message is committed.
    pub(crate) auth_line: Option<String>,
}

/// DKIM-signs `tx` (relayed for a trusted or authenticated client from `ip`); returns the
/// `DKIM-Signature` fields to prepend (empty when no key signs its From).
///
/// # Errors
/// `451 4.3.0` when signing fails and `[dkim] on_error = "tempfail"`.
pub(crate) async fn sign(
    auth: std::sync::Arc<AuthState>,
    config: &Config,
    ip: IpAddr,
    tx: &mut Transaction,
) -> Result<String, Refusal> {
    dkim_sign(auth, config.dkim.on_error, &format!("[{ip}]"), &mut tx.message).await
}

/// The one signing function with the `[dkim] on_error` rule, for every way in (SMTP relay,
/// `sendmail`): the `DKIM-Signature` fields for `message` (empty when no key signs its From),
/// signed off the async workers (RSA costs about half a millisecond of CPU). `who` names the
/// submitter in the log (`[192.0.2.7]`, `uid 1000`).
///
/// # Errors
/// `451 4.3.0` when signing fails and `on_error` is `tempfail` (RFC 6376 leaves it to the
/// signer; opendkim's `F=T` milter flag does the same); nothing leaves unsigned then.
pub async fn dkim_sign(
    auth: std::sync::Arc<AuthState>,
    on_error: DkimOnError,
    who: &str,
    message: &mut Vec<u8>,
) -> Result<String, Refusal> {
    let bytes = std::mem::take(message);
    let signed = tokio::task::spawn_blocking(move || {
        let result = auth.signer.sign(&bytes);
        (bytes, result)
    })
    .await;
    let result = match signed {
        Ok((bytes, result)) => {
            *message = bytes;
            result
        }
        Err(e) => {
            tracing::error!("DKIM: signing for {who} failed ({e}), replying 451");
            return Err(Refusal::SigningFailed);
        }
    };
    match result {
        Ok(Some((headers, keys))) => {
            tracing::info!("DKIM: signed for {who} with {keys}");
            Ok(headers)
        }
        Ok(None) => Ok(String::new()),
        Err(e) if on_error == DkimOnError::SendUnsigned => {
            tracing::warn!("DKIM: cannot sign for {who}, sending unsigned: {e}");
            Ok(String::new())
        }
        Err(e) => {
            tracing::error!("DKIM: cannot sign for {who}, replying 451: {e}");
            Err(Refusal::SigningFailed)
        }
    }
}

/// Checks `tx` from `ip` (outside, on an `mx` listener, forged results already removed by
/// the caller): SPF, DKIM, DMARC and ARC, the decision logged and applied; `added` receives the headers, the
/// quarantine folder and the log line.
///
/// # Errors
/// The refusal of the decision (`550 5.7.x`, or `451 4.4.3` on a temporary DNS failure).
pub(crate) async fn check_from_outside(
    ctx: &Context,
    config: &Config,
    checker: &Checker,
    arc: &Option<postern_auth::ArcKey>,
    ip: IpAddr,
    tx: &mut Transaction,
    added: &mut Added,
) -> Result<(), Refusal> {
    let mail_from = match &tx.reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    };
    // Forwarded to another domain (an alias or virtual target): sealed with ARC (RFC 8617).
    let forwarded = tx.recipients.iter().any(|r| {
        config.domains.local.iter().any(|d| d == r.forward_path.domain())
            && r.destinations.iter().any(|d| matches!(d, postern_types::Destination::Remote(_)))
    });
    let seal = if forwarded { arc.as_ref() } else { None };
    let findings = checker.check(ip, &tx.helo, &mail_from, &tx.message, seal).await;
    match &findings.arc_seal {
        Some(Ok(set)) => added.headers.push_str(set),
        Some(Err(e)) => tracing::warn!("ARC: not sealed: {e}"),
        None => {}
    }
    let decision = decide(&findings, &config.authentication, ip);
    let m = postern_metrics::metrics();
    m.auth_result("spf", &findings.spf.to_string());
    m.auth_result("spf_helo", &findings.spf_helo.to_string());
    findings.dkim.iter().for_each(|(_, o)| m.auth_result("dkim", &o.to_string()));
    m.auth_result("dmarc", &findings.dmarc.to_string());
    m.auth_result("arc", &findings.arc.to_string());
    let dkim: Vec<String> = findings.dkim.iter().map(|(d, o)| format!("{o}(d={d})")).collect();
    let dkim = if dkim.is_empty() { "none".to_owned() } else { dkim.join(",") };
    let policy = findings.dmarc_policy.map_or_else(|| "absent".to_owned(), |p| p.to_string());
    let line = format!(
        "auth: [{ip}] from=<{mail_from}> header.from={} spf={} spf_helo={} dkim={dkim} dmarc={} dmarc_policy={policy} arc={}: {}",
        findings.from_domain,
        findings.spf,
        findings.spf_helo,
        findings.dmarc,
        findings.arc,
        match &decision {
            Decision::Accept => "accept".to_owned(),
            Decision::Quarantine(why) => format!("quarantine ({why})"),
            Decision::Refuse(r) => format!("refuse ({r})"),
        }
    );
    // A refused message has no queue ID; an accepted one is logged with it below.
    if matches!(decision, Decision::Refuse(_)) {
        tracing::info!("NOQUEUE: {line}");
    } else {
        added.auth_line = Some(line);
    }
    added.headers.push_str(&findings.headers);
    if let (true, Some((policy, mut row))) = (ctx.dmarc, findings.report.clone()) {
        row.disposition = match &decision {
            Decision::Accept => "none",
            Decision::Quarantine(_) => "quarantine",
            Decision::Refuse(r) if r.code >= 500 => "reject",
            Decision::Refuse(_) => "none",
        }
        .to_owned();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let (key, (domain, published)) = postern_report::dmarc::tally(&policy, &row);
        // Statistics: a store that fails loses this row (its outage is logged by the store).
        let _ = ctx.store.tally(Aggregate::Dmarc, &day, &[key], Some((&domain, &published))).await;
    }
    match decision {
        Decision::Accept => {}
        Decision::Quarantine(why) => {
            added.headers.push_str(&format!("X-Postern-Quarantine: {why}\r\n"));
            added.quarantine = Some(config.authentication.quarantine_folder.clone());
        }
        Decision::Refuse(r) => {
            tracing::info!("NOQUEUE: reject: DATA from [{ip}]: {r}; from=<{mail_from}> helo=<{}>", tx.helo);
            postern_metrics::metrics().refused("data", "authentication", r.code);
            return Err(Refusal::Decided(r));
        }
    }
    Ok(())
}
