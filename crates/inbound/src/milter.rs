//! The milter filters of `[[milter]]`, run at the end of DATA, before the 250 (Postfix's
//! `smtpd_milters`, replayed in one conversation per filter once the message is complete):
//! option negotiation, the macros and the connect, HELO, MAIL, RCPT, DATA, header, end of
//! header and body steps the filter did not decline, then end of message with its actions.
//! A refusal is the SMTP reply to DATA and nothing is queued; `discard` gets a 250 and is not
//! queued either; end-of-message actions change the transaction (headers, body, envelope
//! sender, recipients). A filter that cannot be reached, times out or breaks the protocol gets
//! its `default_action`. The protocol is `postern_milter`'s; this is the socket driver.

use std::net::SocketAddr;
use std::time::Duration;

use postern_config::schema::{Milter, MilterDefault};
use postern_config::{Config, Role};
use postern_milter::{Command, Decoder, Family, Negotiated, Response, action, step};
use postern_proto::Transaction;
use postern_types::{Address, EnhancedStatus, Reply, ReversePath, printable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the filters decided about a transaction.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Go on (the transaction may have been changed).
    Accept,
    /// Refuse with this reply.
    Refuse(Reply),
    /// Reply 250 and drop the message (a filter's `discard`).
    Discard(String),
    /// Queue it held (`postern queue release`), as Postfix's quarantine: the reason.
    Hold(String),
}

/// The client as the connect step and the macros describe it.
pub(crate) struct Client<'a> {
    /// The forward-confirmed name, if known.
    pub(crate) name: Option<&'a str>,
    /// Its address and port.
    pub(crate) peer: SocketAddr,
    /// The address and port it connected to, if the socket said.
    pub(crate) local: Option<SocketAddr>,
    /// The queue ID the message will have (macro `i`).
    pub(crate) queue_id: postern_types::QueueId,
}

/// What one filter said.
enum Verdict {
    /// Accepted: no more filtering by it.
    Accepted,
    /// End of message reached: its actions, whether it asked to hold the message, and its
    /// verdict (`accept` or `continue`) for the log.
    Done(Vec<Response>, Option<String>, &'static str),
    Refused(Reply),
    Discarded,
}

/// Why a conversation broke (the filter's default action applies).
#[derive(Debug)]
struct Broken(String);

/// Runs every filter for `role` over `tx`, in order, applying their actions.
/// `resolve` gives the destinations of a recipient a filter adds.
pub(crate) async fn filter(
    config: &Config,
    role: Role,
    client: &Client<'_>,
    tx: &mut Transaction,
    resolve: &(dyn Fn(&Address) -> Vec<postern_types::Destination> + Sync),
) -> Decision {
    let mut hold = None;
    let id = client.queue_id;
    for m in config.milter.iter().filter(|m| m.roles.contains(&role)) {
        let name = m.name.clone().unwrap_or_else(|| m.address.clone());
        match converse(config, m, client, tx).await {
            Ok(Verdict::Accepted) => tracing::info!("{id}: milter {name}: accept"),
            Ok(Verdict::Done(actions, quarantine, verdict)) => {
                tracing::info!("{id}: milter {name}: {verdict}, {} action(s)", actions.len());
                apply(tx, &actions, resolve);
                hold = hold.or(quarantine);
            }
            Ok(Verdict::Refused(r)) => {
                tracing::info!("{id}: milter {name}: reject: {r}");
                return Decision::Refuse(r);
            }
            Ok(Verdict::Discarded) => {
                tracing::info!("{id}: milter {name}: discard");
                return Decision::Discard(name);
            }
            Err(Broken(why)) => match m.default_action {
                MilterDefault::Accept => tracing::warn!("{id}: milter {name}: {why}; default_action accept"),
                MilterDefault::Tempfail => {
                    tracing::warn!("{id}: milter {name}: {why}; default_action tempfail");
                    return Decision::Refuse(Reply::new(
                        451,
                        EnhancedStatus(4, 7, 1),
                        "Service unavailable: content filter down, try again later",
                    ));
                }
                MilterDefault::Reject => {
                    tracing::warn!("{id}: milter {name}: {why}; default_action reject");
                    return Decision::Refuse(Reply::new(550, EnhancedStatus(5, 7, 1), "Command rejected"));
                }
            },
        }
    }
    hold.map_or(Decision::Accept, Decision::Hold)
}

async fn converse(config: &Config, m: &Milter, client: &Client<'_>, tx: &Transaction) -> Result<Verdict, Broken> {
    if let Some(path) = m.address.strip_prefix("unix:") {
        let s = tokio::time::timeout(m.connect_timeout.0, tokio::net::UnixStream::connect(path)).await;
        let s = s.map_err(|_| Broken("connect timed out".into()))?.map_err(|e| Broken(format!("connect: {e}")))?;
        Conv::new(s, m, config).run(config, client, tx).await
    } else {
        let addr = m.address.trim_start_matches("inet:");
        let s = tokio::time::timeout(m.connect_timeout.0, tokio::net::TcpStream::connect(addr)).await;
        let s = s.map_err(|_| Broken("connect timed out".into()))?.map_err(|e| Broken(format!("connect: {e}")))?;
        Conv::new(s, m, config).run(config, client, tx).await
    }
}

struct Conv<'m, S> {
    stream: S,
    decoder: Decoder,
    m: &'m Milter,
}

/// `None`: go on with the next step; `Some`: the filter decided.
type Step = Option<Verdict>;

impl<'m, S: AsyncRead + AsyncWrite + Unpin> Conv<'m, S> {
    /// A packet is at most the message size limit plus room for its framing: nothing a
    /// filter sends makes us buffer more than a message may be.
    fn new(stream: S, m: &'m Milter, config: &Config) -> Self {
        let limit = usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX).saturating_add(64 << 10);
        Self { stream, decoder: Decoder::with_limit(limit), m }
    }

    async fn send(&mut self, c: &Command) -> Result<(), Broken> {
        self.stream.write_all(&c.encode()).await.map_err(|e| Broken(format!("write: {e}")))
    }

    /// The next response within `timeout` (`Progress` restarts it).
    async fn response(&mut self, timeout: Duration) -> Result<Response, Broken> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match self.decoder.next_response().map_err(|e| Broken(e.to_string()))? {
                Some(Response::Progress) => continue,
                Some(r) => return Ok(r),
                None => {}
            }
            match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.decoder.feed(&buf[..n]),
                Ok(Ok(_)) => return Err(Broken("the filter closed the connection".into())),
                Ok(Err(e)) => return Err(Broken(format!("read: {e}"))),
                Err(_) => return Err(Broken(format!("no reply within {}s", timeout.as_secs()))),
            }
        }
    }

    /// Sends `c` and, when the filter answers that step, reads its verdict.
    async fn step(&mut self, c: Command, answers: bool) -> Result<Step, Broken> {
        self.send(&c).await?;
        if !answers {
            return Ok(None);
        }
        Ok(match self.response(self.m.command_timeout.0).await? {
            Response::Continue => None,
            Response::Accept => Some(Verdict::Accepted),
            Response::Discard => Some(Verdict::Discarded),
            Response::Reject => Some(Verdict::Refused(Reply::new(550, EnhancedStatus(5, 7, 1), "Command rejected"))),
            Response::TempFail => {
                Some(Verdict::Refused(Reply::new(451, EnhancedStatus(4, 7, 1), "Service unavailable, try again later")))
            }
            Response::ReplyCode(text) => Some(Verdict::Refused(reply_of(&text))),
            other => return Err(Broken(format!("unexpected {other:?}"))),
        })
    }

    async fn macros(&mut self, for_command: u8, macros: Vec<(String, String)>) -> Result<(), Broken> {
        self.send(&Command::Macros { for_command, macros }).await
    }

    async fn run(mut self, config: &Config, client: &Client<'_>, tx: &Transaction) -> Result<Verdict, Broken> {
        self.send(&Command::OptNeg {
            version: postern_milter::VERSION,
            actions: action::ALL & !action::SET_SYMLIST,
            steps: step::OFFERED,
        })
        .await?;
        let reply = self.response(self.m.command_timeout.0).await?;
        let neg = Negotiated::from_reply(&reply, action::ALL, step::OFFERED).map_err(|e| Broken(e.to_string()))?;
        macro_rules! decided {
            ($e:expr) => {
                if let Some(v) = $e {
                    let _ = self.send(&Command::Quit).await;
                    return Ok(v);
                }
            };
        }
        let ip = client.peer.ip();
        let name = client.name.unwrap_or("unknown").to_owned();
        let mut connect = vec![
            ("j".to_owned(), config.hostname.clone()),
            ("_".to_owned(), format!("{name} [{ip}]")),
            ("{daemon_name}".to_owned(), "postern".to_owned()),
            ("{client_addr}".to_owned(), ip.to_string()),
            ("{client_name}".to_owned(), name.clone()),
            ("{client_port}".to_owned(), client.peer.port().to_string()),
        ];
        if let Some(local) = client.local {
            connect.push(("{if_addr}".to_owned(), local.ip().to_string()));
            connect.push(("{daemon_addr}".to_owned(), local.ip().to_string()));
            connect.push(("{daemon_port}".to_owned(), local.port().to_string()));
        }
        connect.extend(self.m.macros.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !neg.skips(step::NO_CONNECT) {
            self.macros(b'C', connect).await?;
            let family = if ip.is_ipv4() { Family::Inet } else { Family::Inet6 };
            let c = Command::Connect { hostname: name, family, port: client.peer.port(), address: ip.to_string() };
            decided!(self.step(c, neg.replies(step::NR_CONNECT)).await?);
        }
        if !neg.skips(step::NO_HELO) {
            let mut m = Vec::new();
            if let Some(t) = &tx.tls {
                m.push(("{tls_version}".to_owned(), t.version.clone()));
                m.push(("{cipher}".to_owned(), t.cipher.clone()));
            }
            self.macros(b'H', m).await?;
            decided!(self.step(Command::Helo(tx.helo.clone()), neg.replies(step::NR_HELO)).await?);
        }
        if !neg.skips(step::NO_MAIL) {
            let sender = match &tx.reverse_path {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(a) => a.to_string(),
            };
            // Postfix sends `i` from MAIL on; Postern's ID is chosen at the end of DATA, before
            // the filters run, and is the one the message is queued under.
            let mut m = vec![("i".to_owned(), client.queue_id.to_string()), ("{mail_addr}".to_owned(), sender.clone())];
            if let Some(login) = &tx.auth {
                m.push(("{auth_type}".to_owned(), tx.auth_mechanism.unwrap_or("PLAIN").to_owned()));
                m.push(("{auth_authen}".to_owned(), login.clone()));
            }
            self.macros(b'M', m).await?;
            decided!(self.step(Command::Mail(vec![format!("<{sender}>")]), neg.replies(step::NR_MAIL)).await?);
        }
        if !neg.skips(step::NO_RCPT) {
            for r in &tx.recipients {
                self.macros(b'R', vec![("{rcpt_addr}".to_owned(), r.forward_path.to_string())]).await?;
                decided!(
                    self.step(Command::Rcpt(vec![format!("<{}>", r.forward_path)]), neg.replies(step::NR_RCPT)).await?
                );
            }
        }
        if !neg.skips(step::NO_DATA) {
            decided!(self.step(Command::Data, neg.replies(step::NR_DATA)).await?);
        }
        let (fields, body) = postern_milter::edit::split(&tx.message);
        if !neg.skips(step::NO_HEADERS) {
            let leading = neg.skips(step::HEADER_LEADING_SPACE);
            for (name, raw) in &fields {
                let value = postern_milter::edit::value(raw, leading);
                decided!(self.step(Command::Header(name.clone(), value), neg.replies(step::NR_HEADER)).await?);
            }
        }
        if !neg.skips(step::NO_EOH) {
            decided!(self.step(Command::EndOfHeaders, neg.replies(step::NR_EOH)).await?);
        }
        if !neg.skips(step::NO_BODY) {
            for chunk in Command::body_chunks(body) {
                decided!(self.step(chunk, neg.replies(step::NR_BODY)).await?);
            }
        }
        self.macros(b'E', vec![("i".to_owned(), client.queue_id.to_string())]).await?;
        self.send(&Command::EndOfMessage).await?;
        let mut actions = Vec::new();
        let mut quarantine = None;
        let mut size = Growth::new(&tx.message, body.len(), config);
        let verdict = loop {
            match self.response(self.m.eom_timeout.0).await? {
                Response::Quarantine(reason) => quarantine = Some(reason),
                a if !a.is_verdict() => {
                    if !allowed(&neg, &a) {
                        return Err(Broken(format!("{a:?} was not negotiated")));
                    }
                    if let Response::AddHeader(n, v) | Response::InsertHeader(_, n, v) | Response::ChangeHeader(_, n, v) =
                        &a
                        && !postern_milter::edit::writable(n, v)
                    {
                        return Err(Broken(format!("header field {:?} cannot be written", printable(n))));
                    }
                    if let Some(r) = size.add(&a) {
                        let _ = self.send(&Command::Quit).await;
                        return Ok(Verdict::Refused(r));
                    }
                    actions.push(a);
                }
                Response::Accept => break Verdict::Done(actions, quarantine, "accept"),
                Response::Continue => break Verdict::Done(actions, quarantine, "continue"),
                Response::Discard => break Verdict::Discarded,
                Response::Reject => {
                    break Verdict::Refused(Reply::new(550, EnhancedStatus(5, 7, 1), "Message content rejected"));
                }
                Response::TempFail => {
                    break Verdict::Refused(Reply::new(
                        451,
                        EnhancedStatus(4, 7, 1),
                        "Message content could not be checked, try again later",
                    ));
                }
                Response::ReplyCode(text) => break Verdict::Refused(reply_of(&text)),
                other => return Err(Broken(format!("unexpected {other:?} at end of message"))),
            }
        };
        let _ = self.send(&Command::Quit).await;
        Ok(verdict)
    }
}

/// The size of the message as a filter's end-of-message actions make it, bounded by
/// `[limits] max_message_size` as the message from the client was.
struct Growth {
    headers: usize,
    body: usize,
    replaced: Option<usize>,
    limit: usize,
}

impl Growth {
    fn new(message: &[u8], body: usize, config: &Config) -> Self {
        let limit = usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX);
        Self { headers: message.len() - body, body, replaced: None, limit }
    }

    /// Counts `a`; `552 5.3.4` once the message would be larger than the limit.
    fn add(&mut self, a: &Response) -> Option<Reply> {
        match a {
            Response::AddHeader(n, v) | Response::InsertHeader(_, n, v) | Response::ChangeHeader(_, n, v) => {
                self.headers = self.headers.saturating_add(n.len() + v.len() + 4);
            }
            Response::ReplaceBody(chunk) => *self.replaced.get_or_insert(0) += chunk.len(),
            _ => {}
        }
        let total = self.headers.saturating_add(self.replaced.unwrap_or(self.body));
        (total > self.limit).then(|| {
            Reply::new(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed limit after content filtering")
        })
    }
}

/// Whether the negotiated actions allow `a`.
fn allowed(neg: &Negotiated, a: &Response) -> bool {
    let needed = match a {
        Response::AddHeader(..) => action::ADD_HEADERS,
        Response::ChangeHeader(..) | Response::InsertHeader(..) => action::CHANGE_HEADERS | action::ADD_HEADERS,
        Response::ChangeFrom(..) => action::CHANGE_FROM,
        Response::AddRcpt(..) => action::ADD_RCPT | action::ADD_RCPT_PAR,
        Response::DelRcpt(..) => action::DEL_RCPT,
        Response::ReplaceBody(..) => action::CHANGE_BODY,
        _ => return true,
    };
    neg.actions & needed != 0
}

/// A filter's `y` reply as ours: `550 5.7.1 text`, or several lines (`550-5.7.1 one\r\n550
/// 5.7.1 two`, libmilter's `smfi_setmlreply`) as one multi-line reply whose code and status
/// are the first line's. An unusable one is `550 5.7.1 Command rejected`. The text's controls
/// are escaped when the reply is encoded ([`Reply::encode`]), so a CR LF inside a line can
/// never make two replies of one.
fn reply_of(text: &str) -> Reply {
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty());
    let mut words = lines.next().unwrap_or("").splitn(3, ' ');
    let code = words.next().and_then(|c| c.get(..3)?.parse::<u16>().ok()).filter(|c| (400..600).contains(c));
    let Some(code) = code else { return Reply::new(550, EnhancedStatus(5, 7, 1), "Command rejected") };
    let class = (code / 100) as u8;
    let second = words.next().unwrap_or("");
    let parsed: Vec<u16> = second.split('.').filter_map(|p| p.parse().ok()).collect();
    let (status, first) = match parsed.as_slice() {
        [c, s, d] if u16::from(class) == *c => (EnhancedStatus(class, *s, *d), words.next().unwrap_or("").to_owned()),
        _ => (EnhancedStatus(class, 7, 1), [second, words.next().unwrap_or("")].join(" ").trim().to_owned()),
    };
    let mut reply = Reply::new(code, status, first);
    for line in lines {
        // "550-5.7.1 text" or "550 5.7.1 text": the text after the code and status.
        let rest = line.get(4..).filter(|_| line.get(..3) == Some(code.to_string().as_str())).unwrap_or(line);
        let rest = rest.strip_prefix(&format!("{status} ")).unwrap_or(rest);
        reply.lines.push(rest.to_owned());
    }
    reply
}

/// The end-of-message actions applied to the transaction.
fn apply(
    tx: &mut Transaction,
    actions: &[Response],
    resolve: &(dyn Fn(&Address) -> Vec<postern_types::Destination> + Sync),
) {
    tx.message = postern_milter::edit::apply(&tx.message, actions);
    let unbracket = |s: &str| s.trim().trim_start_matches('<').trim_end_matches('>').to_owned();
    for a in actions {
        match a {
            Response::ChangeFrom(from, _) => {
                let f = unbracket(from);
                tx.reverse_path = if f.is_empty() {
                    ReversePath::Null
                } else {
                    Address::parse(&f).map_or(tx.reverse_path.clone(), ReversePath::Mailbox)
                };
            }
            Response::DelRcpt(rcpt) => {
                let r = unbracket(rcpt).to_lowercase();
                tx.recipients.retain(|x| x.forward_path.to_string().to_lowercase() != r);
            }
            Response::AddRcpt(rcpt, _) => {
                if let Ok(address) = Address::parse(&unbracket(rcpt)) {
                    tx.recipients.push(postern_proto::AcceptedRecipient {
                        destinations: resolve(&address),
                        forward_path: address,
                        notify: None,
                        orcpt: None,
                    });
                }
            }
            _ => {}
        }
    }
}
