//! Prometheus metrics (issue 15): one registry of typed families, named as the Prometheus
//! naming guide asks (`postern_messages_delivered_total{transport="smtp"}`, base units:
//! seconds, bytes), each with HELP text, rendered in the text exposition format by
//! prometheus-client. Counters are bumped where the event happens (the one way into the queue,
//! the one place a delivery attempt is recorded); the queue's gauges are set from the
//! scheduler's state at each scrape ([`Metrics::set_queue`]), and the top domains are bounded
//! so that the label set stays small (as qshape shows the top of the queue).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// How many domains get their own queue series; the rest are summed as `other`.
pub const TOP_DOMAINS: usize = 20;

/// How many recipient domains get their own deferral series (the first seen since start);
/// deferrals to later ones are counted as `other`, so cardinality stays bounded.
pub const DEFERRAL_DOMAINS: usize = 50;

/// How a message was delivered (or tried).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    /// SMTP to a next hop.
    Smtp,
    /// LMTP to a mailbox server.
    Lmtp,
    /// A local Maildir or mbox.
    Local,
    /// A `|command` alias.
    Pipe,
}

/// Why a delivery attempt was deferred, from its enhanced status code (RFC 3463).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DeferClass {
    /// X.4.3: a DNS lookup failed.
    Dns,
    /// X.4.1, X.4.2: no connection, or it was lost.
    Connect,
    /// X.7.*: TLS required and not had (4.7.5), or another security reason.
    Tls,
    /// Anything else: a 4xx reply of the next hop, a local error.
    Reply,
}

impl DeferClass {
    /// The class of enhanced status `class.subject.detail`.
    pub fn of(subject: u16, detail: u16) -> Self {
        match (subject, detail) {
            (4, 3) => Self::Dns,
            (4, 1 | 2) => Self::Connect,
            (7, _) => Self::Tls,
            _ => Self::Reply,
        }
    }
}

/// Label values in lower case, as the naming guide writes them.
macro_rules! label_values {
    ($($t:ty { $($v:ident => $s:literal),* $(,)? })*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                encoder.write_str(match self { $(Self::$v => $s),* })
            }
        }
    )*};
}

label_values! {
    Transport { Smtp => "smtp", Lmtp => "lmtp", Local => "local", Pipe => "pipe" }
    DeferClass { Dns => "dns", Connect => "connect", Tls => "tls", Reply => "reply" }
    Origin { Smtp => "smtp", Local => "local", Generated => "generated" }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Origin {
    /// An SMTP transaction.
    Smtp,
    /// The `sendmail` command.
    Local,
    /// Generated here: a DSN, a report, an alert.
    Generated,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeferLabels {
    transport: Transport,
    class: DeferClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainDeferLabels {
    domain: String,
    class: DeferClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    stage: String,
    reason: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionEndLabels {
    role: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: Origin,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabel {
    domain: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    policy: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// A family of histograms with fixed buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

/// One queued destination as the scheduler sees it: recipients pending and the arrival of
/// the oldest (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDomain {
    /// The recipient domain.
    pub domain: String,
    /// Pending recipients.
    pub recipients: u64,
    /// Arrival of its oldest message, Unix seconds.
    pub oldest_arrival: u64,
}

/// The daemon's metrics: one set per process, as Prometheus client libraries keep a default
/// registry, so that every place an event happens can count it without threading a handle
/// through (each test starts its own daemon process).
pub fn metrics() -> &'static Metrics {
    static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::new);
    &METRICS
}

/// Every metric of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Family<OriginLabel, Counter>,
    delivered: Family<TransportLabel, Counter>,
    deferred: Family<DeferLabels, Counter>,
    deferrals: Family<DomainDeferLabels, Counter>,
    /// The domains of `deferrals` with their own series.
    deferral_domains: std::sync::Mutex<std::collections::HashSet<String>>,
    refused: Family<RefusedLabels, Counter>,
    sessions_closed: Family<SessionEndLabels, Counter>,
    bounced: Family<TransportLabel, Counter>,
    latency: Histogram,
    tls: Family<TlsLabels, Counter>,
    auth: Family<AuthLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    greylist: Family<ResultLabel, Counter>,
    bans: Counter,
    store_up: Gauge,
    store_outages: Counter,
    sync_seconds: Histograms<OpLabel>,
    sync_batch: Histograms<OpLabel>,
    sessions: Family<RoleLabel, Counter>,
    sessions_open: Gauge,
    queue_messages: Gauge,
    queue_recipients: Family<DomainLabel, Gauge>,
    queue_oldest: Family<DomainLabel, Gauge>,
    rss: Gauge,
    /// Attempt outcomes over all transports (delivered, failed), for the `failure_rate` alert.
    attempts: [std::sync::atomic::AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("postern");
        let received = Family::<OriginLabel, Counter>::default();
        registry.register("messages_received", "Messages queued, by where they came from", received.clone());
        let delivered = Family::<TransportLabel, Counter>::default();
        registry.register("messages_delivered", "Recipients delivered, by transport", delivered.clone());
        let deferred = Family::<DeferLabels, Counter>::default();
        registry.register(
            "messages_deferred",
            "Delivery attempts deferred, by transport and class (dns, connect, tls, reply)",
            deferred.clone(),
        );
        let deferrals = Family::<DomainDeferLabels, Counter>::default();
        registry.register(
            "deferrals",
            "Delivery attempts deferred, by recipient domain (the first 50 seen, later ones as other) and class",
            deferrals.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "messages_refused",
            "SMTP refusals (nothing queued), by stage (connect, ehlo, mail, rcpt, data), reason and class (temporary, permanent)",
            refused.clone(),
        );
        let bounced = Family::<TransportLabel, Counter>::default();
        registry.register("messages_bounced", "Recipients failed permanently, by transport", bounced.clone());
        let buckets = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21_600.0, 86_400.0];
        let latency = Histogram::new(buckets);
        registry.register_with_unit(
            "delivery_latency",
            "Time from arrival to final delivery of a recipient",
            Unit::Seconds,
            latency.clone(),
        );
        let tls = Family::<TlsLabels, Counter>::default();
        registry.register(
            "outbound_tls",
            "Outbound STARTTLS negotiations, by the recipient's policy (sts, tlsa, no-policy-found) and result (success or the RFC 8460 result type)",
            tls.clone(),
        );
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_results",
            "SPF, DKIM (per signature), DMARC and ARC results of the messages checked, by method and result",
            auth.clone(),
        );
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "policy_checks",
            "Verdicts of each [policy] check (pass, reject, defer, tag, temperror, exempt)",
            checks.clone(),
        );
        let greylist = Family::<ResultLabel, Counter>::default();
        registry.register("greylist", "Greylisting checks, by result (pass, wait)", greylist.clone());
        let bans = Counter::default();
        registry.register("auth_bans", "Client addresses banned for failed AUTH attempts", bans.clone());
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register("store_up", "Whether the [store] answers (1) or is in an outage (0)", store_up.clone());
        let store_outages = Counter::default();
        registry.register("store_outages", "Outages of the [store]: calls started failing", store_outages.clone());
        let sync_seconds: Histograms<OpLabel> = Family::new_with_constructor(|| {
            Histogram::new([0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0])
        });
        registry.register_with_unit(
            "spool_sync_duration",
            "Time of one shared spool sync (fsync of the queue folder or syncfs), by operation",
            Unit::Seconds,
            sync_seconds.clone(),
        );
        let sync_batch: Histograms<OpLabel> =
            Family::new_with_constructor(|| Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]));
        registry.register(
            "spool_sync_batch_size",
            "Commits made durable by one shared spool sync (group commit), by operation",
            sync_batch.clone(),
        );
        let sessions = Family::<RoleLabel, Counter>::default();
        registry.register("sessions", "SMTP sessions accepted, by listener role", sessions.clone());
        let sessions_closed = Family::<SessionEndLabels, Counter>::default();
        registry.register(
            "sessions_closed",
            "SMTP sessions ended, by listener role and outcome (completed, lost, refused, tls-failed)",
            sessions_closed.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register("sessions_open", "SMTP sessions open now", sessions_open.clone());
        let queue_messages = Gauge::default();
        registry.register("queue_messages", "Messages in the queue", queue_messages.clone());
        let queue_recipients = Family::<DomainLabel, Gauge>::default();
        registry.register(
            "queue_recipients",
            "Pending recipients per destination domain (the top domains, the rest as other)",
            queue_recipients.clone(),
        );
        let queue_oldest = Family::<DomainLabel, Gauge>::default();
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest queued message per destination domain (the top domains, the rest as other)",
            Unit::Seconds,
            queue_oldest.clone(),
        );
        let rss = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident set size of the daemon",
            Unit::Bytes,
            rss.clone(),
        );
        Self {
            registry,
            received,
            delivered,
            deferred,
            deferrals,
            deferral_domains: std::sync::Mutex::default(),
            refused,
            sessions_closed,
            bounced,
            latency,
            tls,
            auth,
            checks,
            greylist,
            bans,
            store_up,
            store_outages,
            sync_seconds,
            sync_batch,
            sessions,
            sessions_open,
            queue_messages,
            queue_recipients,
            queue_oldest,
            rss,
            attempts: Default::default(),
        }
    }

    /// A message was queued.
    pub fn received(&self, origin: Origin) {
        self.received.get_or_create(&OriginLabel { origin }).inc();
    }

    /// A recipient was delivered `latency` seconds after its message arrived.
    pub fn delivered(&self, transport: Transport, latency: f64) {
        self.delivered.get_or_create(&TransportLabel { transport }).inc();
        self.attempts[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.latency.observe(latency.max(0.0));
    }

    /// A delivery attempt to a recipient in `domain` was deferred.
    pub fn deferred(&self, transport: Transport, class: DeferClass, domain: &str) {
        self.deferred.get_or_create(&DeferLabels { transport, class }).inc();
        let domain = domain.to_ascii_lowercase();
        let domain = {
            let mut seen = self.deferral_domains.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(&domain) || (seen.len() < DEFERRAL_DOMAINS && seen.insert(domain.clone())) {
                domain
            } else {
                "other".to_owned()
            }
        };
        self.deferrals.get_or_create(&DomainDeferLabels { domain, class }).inc();
        self.attempts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// An outbound TLS negotiation under a policy of kind `policy` ended with `result`
    /// (`success`, or the RFC 8460 result type).
    pub fn tls_negotiation(&self, policy: &'static str, result: &'static str) {
        self.tls.get_or_create(&TlsLabels { policy, result }).inc();
    }

    /// One result of an inbound check: `method` `spf`, `spf_helo`, `dkim`, `dmarc` or `arc`,
    /// `result` as Authentication-Results writes it (`pass`, `fail`, `none`, ...).
    pub fn auth_result(&self, method: &'static str, result: &str) {
        self.auth.get_or_create(&AuthLabels { method, result: result.to_owned() }).inc();
    }

    /// A `[policy]` check (`dnsbl`, `fcrdns`, `helo`, ...) gave `verdict`.
    pub fn policy_check(&self, check: &str, verdict: &'static str) {
        self.checks.get_or_create(&CheckLabels { check: check.to_owned(), verdict }).inc();
    }

    /// A greylisting check let the triplet pass (`true`) or asked it to wait.
    pub fn greylist(&self, pass: bool) {
        self.greylist.get_or_create(&ResultLabel { result: if pass { "pass" } else { "wait" } }).inc();
    }

    /// A client address was banned.
    pub fn ban(&self) {
        self.bans.inc();
    }

    /// The `[store]` started failing (`false`: an outage begins) or answers again (`true`).
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
        if !up {
            self.store_outages.inc();
        }
    }

    /// One shared sync `op` (`fsync-dir`, `syncfs`) took `seconds` and covered `batch` commits.
    pub fn spool_sync(&self, op: &'static str, seconds: f64, batch: u64) {
        self.sync_seconds.get_or_create(&OpLabel { op }).observe(seconds);
        self.sync_batch.get_or_create(&OpLabel { op }).observe(batch as f64);
    }

    /// A command of a session on a listener was refused at `stage` (`connect`, `ehlo`, `mail`,
    /// `rcpt`, `data`) for `reason` (`policy`, `recipient`, `greylist`, `spf`, ...) with reply
    /// `code` (4xx: temporary, 5xx: permanent).
    pub fn refused(&self, stage: &str, reason: &'static str, code: u16) {
        let class = if code >= 500 { "permanent" } else { "temporary" };
        self.refused.get_or_create(&RefusedLabels { stage: stage.to_ascii_lowercase(), reason, class }).inc();
    }

    /// A session on a listener of `role` ended: `completed` (the client quit), `lost` (the
    /// connection broke or timed out), `refused` (limits, bans), `tls-failed`.
    pub fn session_closed(&self, role: &str, outcome: &'static str) {
        self.sessions_closed.get_or_create(&SessionEndLabels { role: role.to_owned(), outcome }).inc();
    }

    /// A recipient failed permanently.
    pub fn bounced(&self, transport: Transport) {
        self.bounced.get_or_create(&TransportLabel { transport }).inc();
        self.attempts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A session was accepted on a listener of `role`; the returned guard counts it open until
    /// dropped.
    pub fn session(&self, role: &str) -> SessionGuard {
        self.sessions.get_or_create(&RoleLabel { role: role.to_owned() }).inc();
        self.sessions_open.inc();
        SessionGuard(self.sessions_open.clone())
    }

    /// Sets the queue gauges from the scheduler's state at `now` (Unix seconds): `messages`
    /// queued, and per domain (the [`TOP_DOMAINS`] oldest by their oldest message, the rest
    /// summed as `other`, its age the oldest of them).
    pub fn set_queue(&self, messages: u64, mut domains: Vec<QueuedDomain>, now: u64) {
        self.queue_messages.set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.queue_recipients.clear();
        self.queue_oldest.clear();
        domains.sort_by_key(|d| d.oldest_arrival);
        let rest = domains.split_off(domains.len().min(TOP_DOMAINS));
        let set = |domain: String, recipients: u64, oldest: u64| {
            let label = DomainLabel { domain };
            self.queue_recipients.get_or_create(&label).set(i64::try_from(recipients).unwrap_or(i64::MAX));
            self.queue_oldest.get_or_create(&label).set(i64::try_from(now.saturating_sub(oldest)).unwrap_or(i64::MAX));
        };
        for d in domains {
            set(d.domain, d.recipients, d.oldest_arrival);
        }
        if let Some(oldest) = rest.iter().map(|d| d.oldest_arrival).min() {
            set("other".into(), rest.iter().map(|d| d.recipients).sum(), oldest);
        }
    }

    /// Recipient delivery attempts since start, over all transports: (delivered, failed:
    /// deferred or bounced).
    pub fn attempt_totals(&self) -> (u64, u64) {
        let get = |i: usize| self.attempts[i].load(std::sync::atomic::Ordering::Relaxed);
        (get(0), get(1))
    }

    /// Sets the resident set size, bytes.
    pub fn set_rss(&self, bytes: u64) {
        self.rss.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition format 0.0.4 (what `promtool check metrics` and every
    /// Prometheus read), from prometheus-client's OpenMetrics text: a counter's HELP and TYPE
    /// name its `_total` series, and the `# UNIT` and `# EOF` lines (OpenMetrics only) go.
    pub fn render(&self) -> String {
        let mut open = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut open, &self.registry);
        let counters: Vec<&str> =
            open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }
}

/// Counts a session open while it lives.
#[derive(Debug)]
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_the_bounded_queue_series() {
        let m = Metrics::new();
        m.delivered(Transport::Smtp, 0.2);
        m.deferred(Transport::Smtp, DeferClass::of(4, 1), "example.com");
        {
            let _s = m.session("mx");
            assert!(m.render().contains("postern_sessions_open 1"));
        }
        let domains = (0..25)
            .map(|i| QueuedDomain { domain: format!("d{i}.test"), recipients: 1, oldest_arrival: 1000 + i })
            .collect();
        m.set_queue(25, domains, 2000);
        let text = m.render();
        for line in [
            "postern_messages_delivered_total{transport=\"smtp\"} 1",
            "postern_messages_deferred_total{transport=\"smtp\",class=\"connect\"} 1",
            "postern_sessions_open 0",
            "postern_queue_oldest_age_seconds{domain=\"d0.test\"} 1000",
            "postern_queue_recipients{domain=\"other\"} 5",
            "postern_queue_oldest_age_seconds{domain=\"other\"} 980",
            "# HELP postern_messages_delivered_total Recipients delivered, by transport.",
            "# TYPE postern_messages_delivered_total counter",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("d24.test"), "{text}");
    }
}
