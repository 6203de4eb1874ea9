//! The steps of a session other than reading and writing: the TLS handshake, password
//! checks, client and sender screening, recipient lookups with greylisting, and the filters,
//! authentication and spool commit of a message. Each runs in a boxed future of its own
//! ([`Driver::perform`]), so that their states take memory only while they run.

use postern_proto::Refusal;
use std::sync::OnceLock;

use postern_config::Role;
use postern_config::schema::{Check, FailMode, RateCount};
use postern_policy::senders::{may_send_as, not_owned};
use postern_policy::{credentials, is_srs_address, is_trusted, resolve_recipient, srs_sender_refusal};
use postern_proto::{AuthOutcome, Session, Step, Transaction, submission};
use postern_types::{Address, Destination, QueueId, Reply, ReversePath, Verdict};
use tokio::io::AsyncWriteExt;

use crate::authenticate::{self, Added};
use crate::commit::commit;
use crate::session::{Driver, spf_at_mail};
use crate::stream::Conn;

/// Whether the session goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on.
    Continue,
    /// Close the connection (a failed TLS handshake).
    Stop,
}

impl Driver<'_> {
    /// Performs one step other than [`Step::NeedInput`] and [`Step::Close`], passing its
    /// result to the session.
    ///
    /// # Errors
    /// Writing to the client failed.
    pub(crate) async fn perform(&self, conn: &mut Conn, session: &mut Session, step: Step) -> std::io::Result<Flow> {
        match step {
            Step::StartTls => return Box::pin(self.start_tls(conn, session)).await,
            Step::Authenticate { login, password } => {
                Box::pin(self.authenticate(session, login, password)).await;
            }
            Step::CheckSender(address) if session.authenticated().is_none() => {
                Box::pin(self.check_sender(session, address)).await;
            }
            Step::CheckSender(address) => Box::pin(self.check_own_sender(session, address)).await,
            Step::CheckClient(helo) => {
                let verdict = Box::pin(self.screen_client(&helo)).await;
                session.client_verdict(verdict);
            }
            Step::CheckRecipient(rcpt) => Box::pin(self.check_recipient(session, rcpt)).await,
            Step::Commit(tx) => {
                let refused = self.foreign_from(&tx).or_else(|| self.several_from(&tx)).or_else(|| self.looping(&tx));
                let result = match refused {
                    Some(r) => Err(r),
                    None => Box::pin(self.filter_and_commit(*tx)).await,
                };
                session.commit_result(result);
            }
            Step::NeedInput | Step::Close => unreachable!("performed by the read loop"),
        }
        Ok(Flow::Continue)
    }

    /// STARTTLS: the 220 written, the handshake as server, the session told (RFC 3207).
    async fn start_tls(&self, conn: &mut Conn, session: &mut Session) -> std::io::Result<Flow> {
        let ip = self.peer.ip();
        conn.write_all(&session.take_output()).await?;
        let Some(tls) = self.tls_config.clone() else {
            return Err(std::io::Error::other("STARTTLS without a certificate"));
        };
        match Box::pin(conn.start_tls(tls, self.config.tls.handshake_timeout.0)).await {
            Ok(info) => {
                tracing::info!(
                    "STARTTLS=server from [{ip}]: version={} cipher={} client_cert=none",
                    info.version,
                    info.cipher
                );
                session.tls_started(info);
            }
            Err(e) => {
                tracing::info!("STARTTLS=server from [{ip}]: handshake failed: {e}");
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// MAIL FROM of an unauthenticated client: the sender checks, then the message rate.
    async fn check_sender(&self, session: &mut Session, address: Address) {
        let mut verdict = Box::pin(self.check_sender_from_outside(session.helo().unwrap_or(""), &address)).await;
        if matches!(verdict, Verdict::Ok(())) {
            verdict = Box::pin(self.rate_limit(RateCount::Messages, None, Some(&address), "")).await;
        }
        session.sender_verdict(verdict);
    }

    /// MAIL FROM of an authenticated client: an address the login may use (RFC 6409 §6.1),
    /// then the message rate.
    async fn check_own_sender(&self, session: &mut Session, address: Address) {
        let ip = self.peer.ip();
        let login = session.authenticated().unwrap_or_default().to_owned();
        if may_send_as(&self.policy(), &login, &address) {
            let verdict = Box::pin(self.rate_limit(RateCount::Messages, Some(&login), Some(&address), "")).await;
            session.sender_verdict(verdict);
        } else {
            let r = not_owned(&login, &address);
            tracing::info!("NOQUEUE: reject: MAIL from [{ip}]: {r}; from=<{address}> sasl_username={login}");
            postern_metrics::metrics().refused("mail", "sender-not-owned", r.code);
            session.sender_verdict(Verdict::PermFail(r));
        }
    }

    /// RCPT TO: resolution, the SRS bounce check, greylisting and the recipient rate, one log
    /// line for a refusal; a bounce to a forged SRS address counts as a strike.
    async fn check_recipient(&self, session: &mut Session, rcpt: Address) {
        let ip = self.peer.ip();
        let policy = self.policy();
        let refused = session.reverse_path().and_then(|path| srs_sender_refusal(&policy, path, &rcpt));
        let mut verdict = match refused {
            Some(r) => Verdict::PermFail(r),
            None => resolve_recipient(&policy, ip, session.authenticated().is_some(), &rcpt),
        };
        let mut reason = "recipient";
        if matches!(verdict, Verdict::Ok(_))
            && let Some(r) = Box::pin(self.greylist(session.reverse_path(), &rcpt)).await
        {
            verdict = Verdict::TempFail(r);
            reason = "greylist";
        }
        if matches!(verdict, Verdict::Ok(_))
            && let Some(path) = session.reverse_path()
        {
            let rcpt_text = format!("<{rcpt}>: ");
            let counted = self.rate_limit(RateCount::Recipients, session.authenticated(), path.mailbox(), &rcpt_text);
            if let Verdict::TempFail(r) = Box::pin(counted).await {
                verdict = Verdict::TempFail(r);
                reason = "rate_limit";
            }
        }
        if let Verdict::PermFail(r) | Verdict::TempFail(r) = &verdict {
            postern_metrics::metrics().refused("rcpt", reason, r.code);
            tracing::info!(
                "NOQUEUE: reject: RCPT from [{ip}]: {r}; to=<{rcpt}> helo=<{}>",
                session.helo().unwrap_or("")
            );
        }
        // A bounce whose SRS hash or timestamp did not verify: a guess.
        let forged_srs = matches!(verdict, Verdict::PermFail(_))
            && session.reverse_path() == Some(&ReversePath::Null)
            && is_srs_address(&policy, &rcpt);
        session.recipient_verdict(verdict);
        if forged_srs {
            Box::pin(self.strike(session, "failures (mail to forged SRS addresses, failed AUTH)")).await;
        }
    }

    /// Checks a password off the runtime (Argon2 costs tens of milliseconds of CPU and 19 MiB),
    /// at most `[server] auth_concurrency` at once: an attempt that gets no turn within
    /// `auth_wait` is answered `454 4.7.0` (RFC 4954 §6) and does not count as a failure. An
    /// unknown user costs the same as a wrong password, so timing does not reveal which names
    /// exist. Failures count towards the IP's ban.
    async fn authenticate(&self, session: &mut Session, login: String, password: Vec<u8>) {
        let ip = self.peer.ip();
        let stored = self.tables.users.get(&login.to_lowercase()).cloned().flatten();
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let wait = self.config.server.auth_wait.0;
        let turn = self.ctx.password_checks.clone().acquire_owned();
        let outcome = match tokio::time::timeout(wait, turn).await {
            // The turn moves into the check, so it is held until the check ends even if the
            // client goes away meanwhile.
            Ok(Ok(turn)) => match tokio::task::spawn_blocking(move || {
                let ok = credentials::verify(&hash, &password);
                drop(turn);
                ok
            })
            .await
            {
                Ok(true) if known => AuthOutcome::Success,
                Ok(_) => AuthOutcome::Invalid,
                Err(_) => AuthOutcome::TempFail,
            },
            _ => {
                tracing::warn!(
                    "AUTH from [{ip}]: sasl_username={login}: no password check free within {}s \
                     ([server] auth_concurrency = {}): 454",
                    wait.as_secs(),
                    self.config.server.auth_concurrency
                );
                session.auth_result(AuthOutcome::TempFail);
                return;
            }
        };
        session.auth_result(outcome);
        match outcome {
            AuthOutcome::Success => tracing::info!("AUTH from [{ip}]: sasl_username={login} ok"),
            AuthOutcome::TempFail => tracing::error!("AUTH from [{ip}]: sasl_username={login}: check failed"),
            AuthOutcome::Invalid => {
                tracing::warn!("AUTH from [{ip}]: sasl_username={login}: authentication failed");
                self.strike(session, "failed AUTH attempts").await;
            }
        }
    }

    /// Counts one failure (a failed AUTH, a forged SRS address) against the client's network
    /// (`[server] ban_prefix_ipv4`/`ipv6`); the one that reaches `auth_failures_before_ban`
    /// ends the session with `421 4.7.0`, and the network's connections are refused for
    /// `ban_time`. A store that cannot be reached does not ban.
    async fn strike(&self, session: &mut Session, what: &str) {
        let s = &self.config.server;
        let ip = self.peer.ip();
        let network = s.ban_network(ip);
        let limit = u32::try_from(s.auth_failures_before_ban).unwrap_or(u32::MAX);
        let banned = self.ctx.store.auth_failure(network, postern_store::now_ms(), limit, s.ban_time.0).await;
        if banned == Ok(true) {
            let label = s.ban_label(network);
            tracing::warn!(
                "ban: {label} (client [{ip}]) after {} {what}, for {}s",
                s.auth_failures_before_ban,
                s.ban_time.0.as_secs()
            );
            session.abort(Refusal::Banned { hostname: self.config.hostname.clone(), network: label });
        }
    }

    /// The `[policy]` checks after the first HELO/EHLO (`helo`): logged, tags kept for the
    /// message, what greylisting needs remembered.
    async fn screen_client(&self, helo: &str) -> Verdict<()> {
        let ip = self.peer.ip();
        let lists = self.ctx.screen_lists();
        let mut screened = crate::screen::screen(&*self.ctx.resolver, self.config, &lists, ip, helo).await;
        self.record(&mut screened, "EHLO", &format!("helo=<{helo}>"));
        let skip = screened.allowed || (screened.fcrdns_passed() && self.config.policy.greylist_skip_fcrdns);
        self.skip_greylist.store(skip, std::sync::atomic::Ordering::Relaxed);
        *self.client_name.lock().unwrap_or_else(|e| e.into_inner()) = screened.client_name().map(str::to_owned);
        screened.verdict
    }

    /// Logs what screening found, one line (`policy: [IP] WHAT: check: result (facts) -> action;
    /// ...: outcome`), plus `NOQUEUE: reject: STAGE from [IP]: ...` for a refusal, and keeps its
    /// tags for the message's `X-Postern-Policy` header.
    fn record(&self, screened: &mut crate::screen::Screened, stage: &str, what: &str) {
        let ip = self.peer.ip();
        if !screened.report.is_empty() {
            let outcome = match &screened.verdict {
                Verdict::Ok(()) => "accept".to_owned(),
                Verdict::PermFail(r) | Verdict::TempFail(r) => format!("refuse ({r})"),
            };
            tracing::info!("policy: [{ip}] {what}: {}: {outcome}", screened.report.join("; "));
            if !matches!(screened.verdict, Verdict::Ok(())) {
                tracing::info!("NOQUEUE: reject: {stage} from [{ip}]: {outcome}; {what}");
                if let Verdict::PermFail(r) | Verdict::TempFail(r) = &screened.verdict {
                    postern_metrics::metrics().refused(stage, "policy", r.code);
                }
            }
        }
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).append(&mut screened.tags);
    }

    /// MAIL FROM of a client from the outside: the `[policy]` sender checks (sender domain,
    /// its MX hosts, RHSBL), then, with `[authentication] spf_at = "mail"`, SPF (RFC 7208 §2.4).
    async fn check_sender_from_outside(&self, helo: &str, address: &Address) -> Verdict<()> {
        let ip = self.peer.ip();
        let sender = address.to_string();
        if self.screened {
            let lists = self.ctx.screen_lists();
            let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut screened =
                crate::screen::screen_sender(&*self.ctx.resolver, self.config, &lists, ip, name.as_deref(), &sender)
                    .await;
            self.record(&mut screened, "MAIL", &format!("from=<{sender}>"));
            if !matches!(screened.verdict, Verdict::Ok(())) {
                return screened.verdict;
            }
        }
        let a = &self.config.authentication;
        let domain = address.domain().to_ascii_lowercase();
        if !spf_at_mail(self.config) || is_trusted(ip, &a.exempt_networks) || a.exempt_domains.contains(&domain) {
            return Verdict::Ok(());
        }
        let auth = self.ctx.auth();
        let Some(checker) = &auth.checker else { return Verdict::Ok(()) };
        let spf = checker.spf_mail_from(ip, helo, &sender).await;
        match postern_auth::spf_refusal(spf, &domain, a, ip) {
            None => Verdict::Ok(()),
            Some(r) => {
                tracing::info!("NOQUEUE: reject: MAIL from [{ip}]: {r}; from=<{sender}> spf={spf}");
                postern_metrics::metrics().refused("mail", "spf", r.code);
                if r.code >= 500 { Verdict::PermFail(r) } else { Verdict::TempFail(r) }
            }
        }
    }

    /// The `[rate_limits]` rules counting `what` for this client, `login` and reverse-path
    /// `from` (the null sender counts only per client and user): `TempFail` with the reply
    /// (prefixed by `prefix`) when one is exceeded or the store fails closed. A refusal at MAIL
    /// is logged and counted here; one at RCPT by the caller.
    async fn rate_limit(
        &self,
        what: RateCount,
        login: Option<&str>,
        from: Option<&Address>,
        prefix: &str,
    ) -> Verdict<()> {
        let ip = self.peer.ip();
        let sender = crate::rate::Sender { ip, user: login, from };
        match crate::rate::check(self.ctx, self.config, what, sender, prefix).await {
            None => Verdict::Ok(()),
            Some(r) => {
                if what == RateCount::Messages {
                    let from = from.map(ToString::to_string).unwrap_or_default();
                    tracing::info!("NOQUEUE: reject: MAIL from [{ip}]: {r}; from=<{from}>");
                    postern_metrics::metrics().refused("mail", "rate_limit", r.code);
                }
                Verdict::TempFail(r)
            }
        }
    }

    /// Greylisting of one recipient: `Some(451 4.7.1)` for a triplet not yet allowed, or for
    /// any triplet while the store cannot be reached and `[store] greylist_fail = "closed"`.
    async fn greylist(&self, sender: Option<&ReversePath>, rcpt: &Address) -> Option<Reply> {
        let p = &self.config.policy;
        if !self.screened || p.greylist != Check::Defer || self.skip_greylist.load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let ip = self.peer.ip();
        let sender = match sender {
            Some(ReversePath::Mailbox(a)) => a.to_string(),
            _ => String::new(),
        };
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let facts = crate::screen::Facts::new(ip, name.as_deref(), Some(&sender), Some(&rcpt.to_string()));
        if crate::screen::exempt(p, "greylist", &facts) {
            tracing::info!("greylist: [{ip}] from=<{sender}> to=<{rcpt}>: exempt ([[policy.exception]])");
            return None;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let checked =
            self.ctx.store.greylist(ip, &sender, &rcpt.to_string(), now, p.greylist_delay.0, p.greylist_expire.0).await;
        match checked {
            Ok(postern_store::Greylist::Pass) => None,
            Ok(postern_store::Greylist::Wait(left)) => {
                tracing::info!("greylist: [{ip}] from=<{sender}> to=<{rcpt}>: deferred, retry in {}s", left.as_secs());
                Some(Refusal::Greylisted { recipient: rcpt.clone(), retry_in: left.as_secs() }.reply())
            }
            // The outage itself is logged once by the store.
            Err(_) if self.config.store.greylist_fail == FailMode::Closed => {
                tracing::info!(
                    "greylist: [{ip}] from=<{sender}> to=<{rcpt}>: store unreachable, deferred (fail closed)"
                );
                Some(Refusal::GreylistUnavailable { recipient: rcpt.clone() }.reply())
            }
            Err(_) => None,
        }
    }

    /// The `[[milter]]` filters, then authentication and the commit. A filter's refusal is the
    /// reply to DATA; its `discard` is a 250 with nothing queued.
    async fn filter_and_commit(&self, mut tx: Transaction) -> Result<QueueId, Refusal> {
        if self.config.milter.is_empty() {
            return self.authenticate_and_commit(tx, false, None).await;
        }
        // The queue ID is chosen now, so that the filters see it (macro `i`) and their log
        // lines and the queue's carry the same ID.
        let id = QueueId::generate();
        let name = self.client_name.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let client = crate::milter::Client { name: name.as_deref(), peer: self.peer, local: self.local, queue_id: id };
        let policy = self.policy();
        let resolve = |a: &Address| match postern_policy::resolve_for_delivery(&policy, a) {
            Verdict::Ok(d) => d,
            _ => Vec::new(),
        };
        match crate::milter::filter(self.config, self.role, &client, &mut tx, &resolve).await {
            crate::milter::Decision::Accept => self.authenticate_and_commit(tx, false, Some(id)).await,
            crate::milter::Decision::Hold(reason) => {
                tracing::info!("{id}: milter: quarantine ({reason}): the message is held");
                self.authenticate_and_commit(tx, true, Some(id)).await
            }
            crate::milter::Decision::Refuse(r) => {
                tracing::info!("NOQUEUE: reject: DATA from [{}]: {r}; milter", self.peer.ip());
                postern_metrics::metrics().refused("data", "milter", r.code);
                Err(Refusal::Decided(r))
            }
            crate::milter::Decision::Discard(by) => {
                tracing::info!("{id}: discarded by milter {by}: accepted with 250, not queued");
                Ok(id)
            }
        }
    }

    /// Signs what is relayed for our own users (trusted networks, AUTH), checks what comes from
    /// outside on `mx` listeners and acts on the results, then commits under `id` (a new queue
    /// ID when `None`).
    async fn authenticate_and_commit(
        &self,
        mut tx: Transaction,
        held: bool,
        id: Option<QueueId>,
    ) -> Result<QueueId, Refusal> {
        let ip = self.peer.ip();
        let auth = self.ctx.auth();
        let mut added = Added::default();
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !tags.is_empty() {
            added.headers.push_str(&format!("X-Postern-Policy: {}\r\n", tags.join("; ")));
        }
        let ours = tx.auth.is_some() || is_trusted(ip, &self.config.relay.trusted_networks);
        if !ours {
            // RFC 8601 §5: results claiming our authserv-id that come from outside are forged;
            // removed from every such message, whether or not it is checked here.
            tx.message = postern_auth::strip_forged_results(&tx.message, &self.config.hostname);
            if tx.limit_dsn_for_outsiders() {
                tracing::info!(
                    "DSN: NOTIFY=SUCCESS and RET=FULL from [{ip}] not honoured (only for trusted or authenticated clients)"
                );
            }
        }
        if tx.auth.is_some() {
            // RFC 6409 §8.3, §8.4: submission completes Date and Message-ID (before signing,
            // as both are signed).
            let date = chrono::Utc::now().to_rfc2822();
            let unique = QueueId::generate().to_string();
            let mut message =
                submission::missing_headers(&tx.message, &self.config.hostname, &unique, &date).into_bytes();
            message.extend_from_slice(&tx.message);
            tx.message = message;
        }
        let relayed = tx.recipients.iter().flat_map(|r| &r.destinations).any(|d| matches!(d, Destination::Remote(_)));
        let signs = ours || is_trusted(ip, &self.config.dkim.sign_networks);
        if signs && relayed {
            let signature = authenticate::sign(auth.clone(), self.config, ip, &mut tx).await?;
            added.headers.push_str(&signature);
        } else if !ours
            && self.role == Role::Mx
            && let Some(checker) = &auth.checker
            && !is_trusted(ip, &self.config.authentication.exempt_networks)
        {
            authenticate::check_from_outside(self.ctx, self.config, checker, &auth.arc, ip, &mut tx, &mut added)
                .await?;
        }
        let committed = commit(self.ctx, tx, &self.client(), &added.headers, added.quarantine, held, id).await;
        if let (Ok(id), Some(line)) = (&committed, added.auth_line) {
            tracing::info!("{id}: {line}");
        }
        committed
    }

    /// A message that is looping (`Delivered-To` of one of its local recipients, too many
    /// `Received:`): refused at the end of DATA with `554 5.4.6`, so no DSN is ever made for it
    /// (accepting and then bouncing would send backscatter to a forged sender).
    fn looping(&self, tx: &Transaction) -> Option<Refusal> {
        let local: Vec<String> = tx
            .recipients
            .iter()
            .flat_map(|r| &r.destinations)
            .filter_map(|d| match d {
                Destination::Mailbox { address, .. } | Destination::Pipe { address, .. } => Some(address.to_string()),
                Destination::Remote(_) => None,
            })
            .collect();
        let r = postern_proto::loops::refusal(&tx.message, &local, self.config.limits.max_hops)?;
        tracing::info!("NOQUEUE: reject: DATA from [{}]: {r}; helo=<{}>", self.peer.ip(), tx.helo);
        postern_metrics::metrics().refused("data", "loop", r.code);
        Some(Refusal::Decided(r))
    }

    /// For mail from outside (neither authenticated nor trusted): `550 5.7.1` when the message
    /// has more than one `From:` field. RFC 5322 §3.6 allows exactly one, and RFC 7489 §6.6.1
    /// lets a receiver reject such a message, as Gmail does: DMARC can judge only one author,
    /// and a reader may be shown another.
    fn several_from(&self, tx: &Transaction) -> Option<Refusal> {
        if tx.auth.is_some() || is_trusted(self.peer.ip(), &self.config.relay.trusted_networks) {
            return None;
        }
        let parsed = mail_parser::MessageParser::new().parse_headers(&tx.message);
        let headers = parsed.as_ref().map_or(&[][..], |m| m.headers());
        let froms = headers.iter().filter(|h| h.name == mail_parser::HeaderName::From).count();
        (froms > 1).then(|| {
            let refusal = Refusal::SeveralFrom(froms);
            tracing::info!("NOQUEUE: reject: DATA from [{}]: {refusal}", self.peer.ip());
            postern_metrics::metrics().refused("data", "several-from", 550);
            refusal
        })
    }

    /// For an authenticated submission: the refusal when the author fields do not name the
    /// login's own addresses (RFC 6409 §6.1): not exactly one `From:` field (RFC 5322 §3.6), a
    /// `From:` without an address (an empty group), or an address of any `From:` or `Sender:`
    /// field that is not the login's, whatever the field name's case. `550 5.7.1`: at the end
    /// of DATA, RFC 5321 §4.3.2 allows 550/554, not 553.
    fn foreign_from(&self, tx: &Transaction) -> Option<Refusal> {
        use mail_parser::{HeaderName, HeaderValue};
        let login = tx.auth.as_deref()?;
        let refuse = |what: String| {
            tracing::info!("NOQUEUE: reject: DATA from [{}]: {what}; sasl_username={login}", self.peer.ip());
            Some(Refusal::ForeignAuthor(what))
        };
        let parsed = mail_parser::MessageParser::new().parse_headers(&tx.message);
        let headers = parsed.as_ref().map_or(&[][..], |m| m.headers());
        let froms = headers.iter().filter(|h| h.name == HeaderName::From).count();
        if froms != 1 {
            return refuse(format!("{froms} From: fields; a message has exactly one (RFC 5322 3.6)"));
        }
        for h in headers.iter().filter(|h| matches!(h.name, HeaderName::From | HeaderName::Sender)) {
            let field = if h.name == HeaderName::From { "From" } else { "Sender" };
            let texts: Vec<&str> = match &h.value {
                HeaderValue::Address(list) => list.iter().filter_map(|a| a.address()).collect(),
                _ => Vec::new(),
            };
            if texts.is_empty() {
                return refuse(format!("{field}: names no address"));
            }
            for text in texts {
                // Echoed only once it parses as an address (no control can pass).
                let Ok(address) = Address::parse(text) else {
                    return refuse(format!("{field}: holds an address that does not parse"));
                };
                if !may_send_as(&self.policy(), login, &address) {
                    return refuse(format!("{field}: <{address}> rejected: not owned by user {login}"));
                }
            }
        }
        None
    }
}

/// A valid Argon2id hash of a random password, verified against when the login is unknown.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| credentials::hash(b"unknown user, no password matches").unwrap_or_default())
}
