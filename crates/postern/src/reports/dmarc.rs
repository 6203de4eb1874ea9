//! DMARC aggregate reports from the running daemon: `postern dmarc report [--day D] [--send]`
//! (over the control socket) and the daily run shortly after midnight UTC. The reports are
//! queued like any other message, from `[dmarc_reports] email`, DKIM-signed when a key signs it.

use std::sync::Arc;
use std::time::Duration;

use postern_inbound::Context;
use postern_report::dmarc::{self as reports, DayReport};
use postern_store::Aggregate;

use crate::reports::ReportJobError;
use tokio::sync::watch;

/// Builds `day`'s reports (`YYYY-MM-DD`, UTC); with `send`, queues them and forgets the day,
/// otherwise returns their XML. Returns a text for the operator.
///
/// # Errors
/// Reports disabled, or the store failed.
pub(crate) async fn run(ctx: &Context, day: &str, send: bool) -> Result<String, ReportJobError> {
    if !ctx.dmarc {
        return Err(ReportJobError::Off { what: "DMARC reports", section: "dmarc_reports" });
    }
    if send && !crate::reports::take_day(ctx, Aggregate::Dmarc, day).await? {
        return Ok(format!("DMARC reports for {day}: another host of the cluster is sending them\n"));
    }
    let tally = ctx.store.day_tally(Aggregate::Dmarc, day).await?;
    let day_reports = reports::day_reports(day, &tally.meta, &tally.counts);
    let config = ctx.live.config();
    let submitter = config.hostname.clone();
    let org = config.dmarc_reports.org_name.clone().unwrap_or_else(|| submitter.clone());
    let email = config.dmarc_reports.email.clone().unwrap_or_else(|| format!("postmaster@{submitter}"));
    let (begin, end) = crate::reports::bounds(day)?;
    let mut out = String::new();
    for (n, report) in day_reports.iter().enumerate() {
        let meta = reports::Meta {
            submitter: submitter.clone(),
            org_name: org.clone(),
            email: email.clone(),
            report_id: format!("{}.{}.{n}", day.replace('-', ""), report.policy.domain),
            begin,
            end,
        };
        let xml = reports::to_xml(report, &meta);
        if !send {
            out.push_str(&xml);
            continue;
        }
        out.push_str(&queue_report(ctx, report, &xml, &meta).await);
    }
    if send {
        ctx.store.forget_day(Aggregate::Dmarc, day).await?;
        if day_reports.is_empty() {
            out.push_str(&format!("no DMARC results recorded for {day}\n"));
        }
    }
    Ok(out)
}

/// Queues one report to the addresses that accept it; returns a line for the operator.
async fn queue_report(ctx: &Context, report: &DayReport, xml: &str, meta: &reports::Meta) -> String {
    let (email, report_id) = (meta.email.as_str(), meta.report_id.as_str());
    let domain = &report.policy.domain;
    let auth = ctx.auth();
    let accepted = match auth.checker.as_ref() {
        Some(c) => c.report_addresses(domain, &report.policy.rua).await,
        None => Vec::new(),
    };
    if accepted.is_empty() {
        tracing::info!("DMARC report for {domain}: no rua address accepts it ({:?}); not sent", report.policy.rua);
        return format!("{domain}: no rua address accepts reports ({})\n", report.policy.rua.join(", "));
    }
    let message = match reports::compose(xml, domain, meta, &accepted) {
        Ok(m) => m,
        Err(e) => return format!("{domain}: cannot compose the report: {e}\n"),
    };
    let report = crate::reports::Report {
        what: "DMARC reports",
        source: format!("DMARC aggregate report {report_id} for {domain} to {}", accepted.join(", ")),
        from: email,
        to: &accepted,
        message: &message,
    };
    match crate::reports::queue(ctx, report).await {
        Ok(id) => format!("{domain}: report {report_id} queued as {id} to {}\n", accepted.join(", ")),
        Err(e) => format!("{domain}: {e}\n"),
    }
}

/// Every day, at 00:05 UTC, sends the reports of the days before today.
pub(crate) fn spawn_daily(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let now = chrono::Utc::now();
            let next = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 5, 0).map(|t| t.and_utc());
            let wait =
                next.map_or(Duration::from_secs(3600), |n| (n - now).to_std().unwrap_or(Duration::from_secs(60)));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let days = ctx.store.tallied_days(Aggregate::Dmarc).await.unwrap_or_default();
            for day in days.into_iter().filter(|d| *d < today) {
                match run(&ctx, &day, true).await {
                    Ok(text) => tracing::info!("DMARC reports for {day}: {}", text.trim_end().replace('\n', "; ")),
                    Err(e) => tracing::error!("DMARC reports for {day}: {e}"),
                }
            }
        }
    });
}
