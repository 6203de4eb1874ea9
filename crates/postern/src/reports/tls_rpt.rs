//! TLS reports (RFC 8460) from the running daemon: the outbound TLS results are moved from the
//! delivery buffer into the store every few seconds; `postern tls-rpt report [--day D]
//! [--send]` (over the control socket) and the daily run shortly after midnight UTC turn a
//! day into one report per recipient domain, queued DKIM-signed (when a key signs the sender)
//! from `[tls_reports] email` to the domain's `_smtp._tls` `rua` addresses.

use std::sync::Arc;
use std::time::Duration;

use postern_dns::{Answer, Resolver as _};
use postern_inbound::Context;
use postern_report::tlsrpt::{self, DomainDay};
use postern_store::Aggregate;

use crate::reports::ReportJobError;
use tokio::sync::watch;

/// How often buffered results are stored.
const DRAIN_EVERY: Duration = Duration::from_secs(5);

/// Stores the results recorded since the last call under today's date (UTC).
async fn drain(ctx: &Context) -> Result<(), ReportJobError> {
    if !ctx.tlsrpt {
        return Ok(());
    }
    let keys: Vec<String> = ctx.queue.tls_results().drain().iter().map(tlsrpt::key).collect();
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    Ok(ctx.store.tally(Aggregate::TlsRpt, &day, &keys, None).await?)
}

/// Builds `day`'s reports (`YYYY-MM-DD`, UTC): with `send`, queues them and forgets the day,
/// otherwise returns their JSON, one report per line. Returns a text for the operator.
///
/// # Errors
/// Reports disabled, or the store failed.
pub(crate) async fn run(ctx: &Context, day: &str, send: bool) -> Result<String, ReportJobError> {
    if !ctx.tlsrpt {
        return Err(ReportJobError::Off { what: "TLS reports", section: "tls_reports" });
    }
    drain(ctx).await?;
    if send && !crate::reports::take_day(ctx, Aggregate::TlsRpt, day).await? {
        return Ok(format!("TLS reports for {day}: another host of the cluster is sending them\n"));
    }
    let tally = ctx.store.day_tally(Aggregate::TlsRpt, day).await?;
    let days = tlsrpt::domain_days(day, &tally.counts);
    let (begin, end) = crate::reports::bounds(day)?;
    let config = ctx.live.config();
    let submitter = config.hostname.clone();
    let mut out = String::new();
    for domain_day in &days {
        let meta = tlsrpt::Meta {
            organization: config.tls_reports.org_name.clone().unwrap_or_else(|| submitter.clone()),
            contact: sender(&config),
            report_id: format!("{}.{}@{submitter}", day.replace('-', ""), domain_day.domain),
            begin,
            end,
        };
        let report = tlsrpt::to_report(domain_day, &meta);
        if send {
            out.push_str(&queue_report(ctx, domain_day, &report).await);
        } else {
            out.push_str(&tlsrpt::json_without_nulls(&report)?);
            out.push('\n');
        }
    }
    if send {
        ctx.store.forget_day(Aggregate::TlsRpt, day).await?;
        if days.is_empty() {
            out.push_str(&format!("no TLS results recorded for {day}\n"));
        }
    }
    Ok(out)
}

fn sender(config: &postern_config::Config) -> String {
    config.tls_reports.email.clone().unwrap_or_else(|| format!("postmaster@{}", config.hostname))
}

/// Queues the report of one domain to its `rua` addresses; returns a line for the operator.
async fn queue_report(ctx: &Context, day: &DomainDay, report: &tlsrpt::TlsReport) -> String {
    let domain = &day.domain;
    let rua = match ctx.resolver.txt(&format!("_smtp._tls.{domain}")).await {
        Answer::Found(txts) => tlsrpt::rua_mailto(&txts).map_err(|e| e.to_string()),
        Answer::NotFound => Err("no _smtp._tls record".to_owned()),
        Answer::TempFail(e) => Err(format!("looking up _smtp._tls.{domain}: {e}")),
    };
    let rua = match rua {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return format!("{domain}: no mailto: address in its TLS-RPT record; not sent\n"),
        Err(e) => return format!("{domain}: {e}; not sent\n"),
    };
    let config = ctx.live.config();
    let from = sender(&config);
    let message = match tlsrpt::compose(report, domain, &config.hostname, &from, &rua) {
        Ok(m) => m,
        Err(e) => return format!("{domain}: cannot compose the report: {e}\n"),
    };
    let sent = crate::reports::Report {
        what: "TLS reports",
        source: format!("TLS report {} for {domain} to {}", report.report_id, rua.join(", ")),
        from: &from,
        to: &rua,
        message: &message,
    };
    match crate::reports::queue(ctx, sent).await {
        Ok(id) => format!("{domain}: report {} queued as {id} to {}\n", report.report_id, rua.join(", ")),
        Err(e) => format!("{domain}: {e}\n"),
    }
}

/// Stores the buffered results every few seconds and, once the date (UTC) has changed, sends
/// the reports of the days before today.
pub(crate) fn spawn(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    ctx.queue.tls_results().enable();
    tokio::spawn(async move {
        let mut today = chrono::Utc::now().date_naive();
        loop {
            tokio::select! {
                () = tokio::time::sleep(DRAIN_EVERY) => {}
                _ = stop.changed() => {
                    let _ = drain(&ctx).await;
                    return;
                }
            }
            // A store that fails loses these counts; its outage is logged once by the store.
            let _ = drain(&ctx).await;
            let now = chrono::Utc::now();
            if now.date_naive() == today || now.time() < chrono::NaiveTime::from_hms_opt(0, 5, 0).unwrap_or_default() {
                continue;
            }
            today = now.date_naive();
            send_before(&ctx, &today.format("%Y-%m-%d").to_string()).await;
        }
    });
}

/// Sends the reports of every stored day before `today`.
async fn send_before(ctx: &Context, today: &str) {
    let days = ctx.store.tallied_days(Aggregate::TlsRpt).await.unwrap_or_default();
    for day in days.into_iter().filter(|d| d.as_str() < today) {
        match run(ctx, &day, true).await {
            Ok(text) => tracing::info!("TLS reports for {day}: {}", text.trim_end().replace('\n', "; ")),
            Err(e) => tracing::error!("TLS reports for {day}: {e}"),
        }
    }
}
