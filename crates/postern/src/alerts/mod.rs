//! `[[alert]]` rules, watched by the daemon (docs/alerts.md): every `[alerts] interval` each
//! rule is measured ([`probe`]); on each change of state ([`state`]) one mail goes to
//! `[alerts] to` through `queue::submit`, delivered locally first (the local `postmaster`
//! always gets it when no recipient is local), so that an alert about broken outbound mail
//! still arrives. `postern alerts` (control request `alerts`) shows each rule's state.

pub(crate) mod probe;
mod state;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use postern_config::schema::{Alert, Rule};
use postern_inbound::Context;
use postern_report::alert::{AlertMail, Change};
use state::{AttemptHistory, Notice, Reading, Tracker};
use tokio::sync::watch;

pub(crate) use probe::{age, our_ip};

/// Every rule's state, by name; shared with the control socket.
#[derive(Debug, Default)]
pub(crate) struct Board {
    trackers: Mutex<HashMap<String, Tracker>>,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks every rule each `[alerts] interval` until `stop`. Rules are re-read from the
/// configuration in force at each check (a reload adds or drops rules; a rule keeps its state
/// under its name).
pub(crate) fn spawn(ctx: Arc<Context>, board: Arc<Board>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut history = AttemptHistory::default();
        loop {
            let config = ctx.live.config();
            let (delivered, failed) = postern_metrics::metrics().attempt_totals();
            let longest = config.alert.iter().filter_map(|a| match a.rule() {
                Ok(Rule::FailureRate { window, .. }) => Some(window),
                _ => None,
            });
            history.record(now(), delivered, failed, longest.max().unwrap_or_default());
            for alert in &config.alert {
                check(&ctx, &board, alert, &history).await;
            }
            tokio::select! {
                () = tokio::time::sleep(config.alerts.interval.0) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// Measures one rule and sends the mail its state change calls for.
async fn check(ctx: &Context, board: &Board, alert: &Alert, history: &AttemptHistory) {
    let Ok(rule) = alert.rule() else { return };
    let name = alert.display_name();
    let t = now();
    let reading = probe::read(ctx, &rule, history, t).await;
    let (notice, since) = {
        let mut trackers = board.trackers.lock().unwrap_or_else(|e| e.into_inner());
        let tracker = trackers.entry(name.clone()).or_default();
        let before = tracker.firing_since;
        let notice = tracker.step(t, reading.clone(), alert.repeat.0);
        (notice, tracker.firing_since.or(before).unwrap_or(t))
    };
    let Some(notice) = notice else { return };
    let figures = reading.text();
    let (change, word) = match notice {
        Notice::Firing => (Change::Firing, "firing"),
        Notice::Reminder => (Change::StillFiring, "still firing"),
        Notice::Resolved => (Change::Resolved, "resolved"),
    };
    tracing::warn!("alert: \"{name}\" {word}: {}", figures.replace('\n', "; "));
    send(ctx, &name, &rule, change, since, figures).await;
}

/// The command a postmaster runs next for `rule`.
fn look_further(rule: &Rule, config: &postern_config::Config) -> String {
    let domain = config.domains.local.first().cloned().unwrap_or_else(|| config.hostname.clone());
    match rule {
        Rule::QueueAge { domain: Some(d), .. } => {
            format!(
                "postern queue stats; postern queue list | grep -B2 '@{d}'; postern queue flush --recipient-domain {d}"
            )
        }
        Rule::QueueAge { .. } | Rule::Deferred { .. } | Rule::FailureRate { .. } => {
            "postern queue stats (the LAST ERROR column says why)".into()
        }
        Rule::CertExpiry { .. } => {
            "postern check-config (the certificate's days left); renew it (certbot renew), then postern reload".into()
        }
        Rule::Dkim { domain: d } => format!("postern dns check --domain {}", d.as_deref().unwrap_or(&domain)),
        Rule::Dnsbl { .. } => {
            format!("postern doctor --domain {domain}; then ask each list for delisting (its web site says how)")
        }
        Rule::SpoolFree { .. } => format!("df -h {}; postern queue stats", config.spool_dir().display()),
    }
}

/// The recipients: `[alerts] to`, bare names qualified with `[domains] origin`, plus the
/// local `postmaster` when none of them is local.
fn recipients(config: &postern_config::Config) -> Vec<String> {
    let origin = config.domains.origin();
    let mut to: Vec<String> =
        config.alerts.to.iter().map(|a| if a.contains('@') { a.clone() } else { format!("{a}@{origin}") }).collect();
    let local = |a: &String| {
        a.rsplit_once('@').is_some_and(|(_, d)| config.domains.local.iter().any(|l| l.eq_ignore_ascii_case(d)))
    };
    if !to.iter().any(local) && !config.domains.local.is_empty() {
        to.push(format!("postmaster@{origin}"));
    }
    to
}

async fn send(ctx: &Context, name: &str, rule: &Rule, change: Change, since: u64, figures: &str) {
    let config = ctx.live.config();
    let to = recipients(&config);
    let from = format!("postmaster@{}", config.domains.origin());
    let further = look_further(rule, &config);
    let mail = AlertMail {
        rule: name,
        change,
        since: i64::try_from(since).unwrap_or(0),
        now: i64::try_from(now()).unwrap_or(0),
        figures,
        look_further: &further,
        host: &config.hostname,
        from: &from,
        to: &to,
    };
    let message = postern_report::alert::compose(&mail);
    let report = crate::reports::Report {
        what: "alerts",
        source: format!("alert \"{name}\" to {}", to.join(", ")),
        from: &from,
        to: &to,
        message: &message,
    };
    match crate::reports::queue(ctx, report).await {
        Ok(id) => tracing::info!("{id}: alert \"{name}\" mail queued to {}", to.join(", ")),
        Err(e) => tracing::error!("alert \"{name}\": cannot queue the mail: {e}"),
    }
}

/// `postern alerts`: one block per rule.
pub(crate) fn status(ctx: &Context, board: &Board) -> String {
    let config = ctx.live.config();
    if config.alert.is_empty() {
        return "no [[alert]] rules configured (docs/alerts.md)\n".into();
    }
    let trackers = board.trackers.lock().unwrap_or_else(|e| e.into_inner());
    let t = now();
    let mut out = String::new();
    for alert in &config.alert {
        let name = alert.display_name();
        let tracker = trackers.get(&name).cloned().unwrap_or_default();
        let state = match (tracker.firing_since, &tracker.last) {
            (_, None) => "not checked yet".to_owned(),
            (Some(since), _) => format!("FIRING for {}", age(t.saturating_sub(since))),
            (None, Some((_, Reading::Unknown(_)))) => "UNKNOWN".to_owned(),
            (None, Some(_)) => "ok".to_owned(),
        };
        let _ = writeln!(out, "{name}: {state} ({} check(s), {} mail(s))", tracker.checks, tracker.mails);
        if let Some((at, reading)) = &tracker.last {
            let _ = writeln!(out, "  {} ago: {}", age(t.saturating_sub(*at)), reading.text().replace('\n', "\n    "));
        }
    }
    out
}
