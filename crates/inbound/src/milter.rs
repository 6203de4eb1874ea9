//! The milter filters of `[[milter]]`, run at the end of DATA, before the 250 (Postfix's
//! `smtpd_milters`, replayed in one conversation per filter once the message is complete):
//! option negotiation, the macros and the connect, HELO, MAIL, RCPT, DATA, header, end of
//! header and body steps the filter did not decline, then end of message with its actions.
//! A refusal is the SMTP reply to DATA and nothing is queued; `discard` gets a 250 and is not
//! queued either; end-of-message actions change the transaction (headers, body, envelope
//! sender, recipients). A filter that cannot be reached, times out or breaks the protocol gets
//! its `default_action`. The protocol and the conversation are `postern_milter`'s
//! ([`postern_milter::conversation`]); this is the socket driver.

use std::net::SocketAddr;

use postern_config::schema::{Milter, MilterDefault};
use postern_config::{Config, Role};
use postern_milter::Response;
use postern_milter::conversation::{self, Conversation, Facts, ProtocolError, Step as MilterStep, Verdict};
use postern_proto::Transaction;
use postern_types::{Address, Reply, ReversePath};
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

/// Why a conversation with a filter broke (the filter's default action applies).
#[derive(Debug, thiserror::Error)]
enum FilterError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("the filter closed the connection")]
    Closed,
    #[error("no reply within {0}s")]
    Timeout(u64),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

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
            Ok(Verdict::Done { actions, quarantine, verdict }) => {
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
            Err(why) => match m.default_action {
                MilterDefault::Accept => tracing::warn!("{id}: milter {name}: {why}; default_action accept"),
                MilterDefault::Tempfail => {
                    tracing::warn!("{id}: milter {name}: {why}; default_action tempfail");
                    return Decision::Refuse(conversation::filter_down());
                }
                MilterDefault::Reject => {
                    tracing::warn!("{id}: milter {name}: {why}; default_action reject");
                    return Decision::Refuse(conversation::rejected());
                }
            },
        }
    }
    hold.map_or(Decision::Accept, Decision::Hold)
}

/// One filter's conversation about `tx`, on a new connection to it.
async fn converse(config: &Config, m: &Milter, client: &Client<'_>, tx: &Transaction) -> Result<Verdict, FilterError> {
    let queue_id = client.queue_id.to_string();
    let macros: Vec<(String, String)> = m.macros.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let facts = Facts {
        hostname: &config.hostname,
        client_name: client.name.unwrap_or("unknown"),
        client: client.peer,
        local: client.local,
        queue_id: &queue_id,
        helo: &tx.helo,
        tls: tx.tls.as_ref().map(|t| (t.version.as_str(), t.cipher.as_str())),
        reverse_path: &tx.reverse_path,
        auth: tx.auth.as_deref().map(|login| (tx.auth_mechanism.unwrap_or("PLAIN"), login)),
        recipients: tx.recipients.iter().map(|r| &r.forward_path).collect(),
        message: &tx.message,
        macros: &macros,
        max_message_size: usize::try_from(config.limits.max_message_size.0).unwrap_or(usize::MAX),
    };
    let conversation = Conversation::new(facts);
    if let Some(path) = m.address.strip_prefix("unix:") {
        let s = connected(tokio::time::timeout(m.connect_timeout.0, tokio::net::UnixStream::connect(path)).await)?;
        drive(s, conversation, m).await
    } else {
        let addr = m.address.trim_start_matches("inet:");
        let s = connected(tokio::time::timeout(m.connect_timeout.0, tokio::net::TcpStream::connect(addr)).await)?;
        drive(s, conversation, m).await
    }
}

/// A connection made in time, or why not.
fn connected<S>(attempt: Result<std::io::Result<S>, tokio::time::error::Elapsed>) -> Result<S, FilterError> {
    match attempt {
        Err(_) => Err(FilterError::ConnectTimeout),
        Ok(r) => r.map_err(FilterError::Connect),
    }
}

/// Performs the conversation's steps on `stream` within the filter's timeouts. A write that
/// fails once the filter decided (its QUIT) does not undo the decision.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut c: Conversation<'_>,
    m: &Milter,
) -> Result<Verdict, FilterError> {
    let mut buf = vec![0; 64 * 1024];
    loop {
        match c.poll() {
            MilterStep::Send(bytes) => {
                if let Err(e) = stream.write_all(&bytes).await {
                    return match c.poll() {
                        MilterStep::Done(Ok(v)) => Ok(v),
                        _ => Err(FilterError::Write(e)),
                    };
                }
            }
            MilterStep::Read { end_of_message } => {
                let timeout = if end_of_message { m.eom_timeout.0 } else { m.command_timeout.0 };
                match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => c.feed(&buf[..n]),
                    Ok(Ok(_)) => return Err(FilterError::Closed),
                    Ok(Err(e)) => return Err(FilterError::Read(e)),
                    Err(_) => return Err(FilterError::Timeout(timeout.as_secs())),
                }
            }
            MilterStep::Done(v) => return Ok(v?),
        }
    }
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
