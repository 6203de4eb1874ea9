//! The daily report jobs of the daemon: the DMARC aggregate reports ([`dmarc`]) and the TLS
//! reports ([`tls_rpt`]), composed by `postern_report`. What they share: the
//! period of a day, the lease that lets one host of a cluster send a day's reports, CRLF line
//! endings for mail-builder's output, and the one way a report leaves: DKIM-signed when a key
//! signs its sender, addressed through the recipient policy, queued through `queue::submit`.

pub(crate) mod dmarc;
pub(crate) mod tls_rpt;

use postern_inbound::Context;
use postern_policy::{RecipientPolicy, resolve_for_delivery};
use postern_proto::trace::Origin;
use postern_queue::{MailParams, Submission, SubmitRecipient};
use postern_store::Aggregate;
use postern_types::{Address, ForwardPath, QueueId, ReversePath, Verdict};

/// Why a report job did not run, or a report was not queued: a text for the operator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportJobError {
    /// `[dmarc_reports]` or `[tls_reports]` is not enabled.
    #[error("{what} are off: set [{section}] enabled = true")]
    Off {
        /// `DMARC reports`, `TLS reports`.
        what: &'static str,
        /// The section that enables them.
        section: &'static str,
    },
    /// The store failed or did not answer.
    #[error(transparent)]
    Store(#[from] postern_store::StoreError),
    /// The day asked for is not a date.
    #[error("{day:?} is not YYYY-MM-DD: {source}")]
    Day {
        /// As given.
        day: String,
        /// The parser's error.
        source: chrono::ParseError,
    },
    /// The report's sender is not an address.
    #[error("the sender <{from}>: {source}")]
    Sender {
        /// As configured.
        from: String,
        /// Why it is not an address.
        source: postern_types::AddressError,
    },
    /// Signing failed under `[dkim] on_error = "tempfail"`.
    #[error("cannot sign the report: {0}")]
    Sign(postern_proto::Refusal),
    /// The spool refused the report.
    #[error("cannot queue the report: {0}")]
    Queue(#[from] postern_queue::SubmitError),
    /// The report does not encode (RFC 8460 JSON).
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How long the host that sends a day's reports holds that day: the others leave it alone
/// meanwhile. Once sent, the day is forgotten; a host that died before that leaves it to the
/// next daily run after the lease (a duplicate report is possible then, a lost one is not).
const LEASE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Takes `day`'s `aggregate` for this host (`hostname`) before sending its reports: false
/// when another host of the cluster has it (always true with the embedded store).
///
/// # Errors
/// The store failed or did not answer (nothing is sent then).
pub(crate) async fn take_day(ctx: &Context, aggregate: Aggregate, day: &str) -> Result<bool, ReportJobError> {
    let name = format!("{}:{day}", aggregate.name());
    Ok(ctx.store.lease(&name, &ctx.live.config().hostname, LEASE).await?)
}

/// A composed report to queue.
pub(crate) struct Report<'a> {
    /// `Origin::Generated` name: `DMARC reports`, `TLS reports`.
    pub(crate) what: &'static str,
    /// The arrival log line's source: `TLS report ID for D to A`.
    pub(crate) source: String,
    /// The sender (`[dmarc_reports] email`, `[tls_reports] email`).
    pub(crate) from: &'a str,
    /// The report addresses.
    pub(crate) to: &'a [String],
    /// The message, any line endings.
    pub(crate) message: &'a [u8],
}

/// Signs and queues `report`.
///
/// # Errors
/// [`ReportJobError`]: the sender is not an address, signing failed under
/// `[dkim] on_error = "tempfail"`, or the spool refused it.
pub(crate) async fn queue(ctx: &Context, report: Report<'_>) -> Result<QueueId, ReportJobError> {
    let reverse_path = match Address::parse(report.from) {
        Ok(a) => ReversePath::Mailbox(a),
        Err(source) => return Err(ReportJobError::Sender { from: report.from.to_owned(), source }),
    };
    let mut message = crlf(report.message);
    let on_error = ctx.live.config().dkim.on_error;
    let headers = postern_inbound::dkim_sign(ctx.auth(), on_error, report.what, &mut message)
        .await
        .map_err(ReportJobError::Sign)?;
    let submission = Submission {
        origin: Origin::Generated { what: report.what },
        source: report.source,
        reverse_path,
        recipients: recipients(ctx, report.to),
        headers,
        message,
        params: MailParams::default(),
        quarantine: None,
        held: false,
        id: None,
    };
    Ok(ctx.queue.submit(submission).await?)
}

/// Where each of `addresses` goes (local mailboxes, aliases or the world).
fn recipients(ctx: &Context, addresses: &[String]) -> Vec<SubmitRecipient> {
    let (config, tables) = (ctx.live.config(), ctx.live.tables());
    let policy = RecipientPolicy::new(&config, &tables);
    let mut out = Vec::new();
    for a in addresses {
        let Ok(address) = Address::parse(a) else { continue };
        if let Verdict::Ok(destinations) = resolve_for_delivery(&policy, &address) {
            out.extend(destinations.into_iter().map(|destination| SubmitRecipient {
                forward_path: ForwardPath::Mailbox(address.clone()),
                destination,
                notify: None,
                orcpt: None,
            }));
        }
    }
    out
}

/// mail-builder writes CRLF already; this normalises stray bare LFs so the spool gets CRLF.
fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    let mut prev = 0u8;
    for &b in m {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The first and last second of `day` (`YYYY-MM-DD`, UTC), Unix seconds.
///
/// # Errors
/// `day` is not a date.
pub(crate) fn bounds(day: &str) -> Result<(i64, i64), ReportJobError> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|source| ReportJobError::Day { day: day.to_owned(), source })?;
    let begin = d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
    Ok((begin, begin + 86_399))
}
