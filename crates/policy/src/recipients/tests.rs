//! Recipient resolution and relay: exhaustive tests of the rules in the module documentation.

use super::*;
use postern_config::{Tables, Template};

fn tables() -> Tables {
    let mut t = Tables::default();
    for u in ["alice", "bob", "carol", "catchall"] {
        t.users.insert(u.into(), None);
    }
    let a = |s: &str| Target::Address(Address::parse(s).unwrap());
    let n = |s: &str| Target::Name(s.into());
    t.aliases.insert("team".into(), vec![n("alice"), n("bob")]);
    t.aliases.insert("root".into(), vec![n("team")]);
    t.aliases.insert("carol".into(), vec![n("carol"), a("carol@elsewhere.test")]);
    t.aliases.insert("loop1".into(), vec![a("loop2@example.test")]);
    t.aliases.insert("loop2".into(), vec![a("loop1@example.test")]);
    t.virtual_.insert("sales@example.test".into(), n("alice"));
    t.virtual_.insert("info@example.test".into(), a("info@partner.test"));
    t.virtual_.insert("gone@example.test".into(), Target::Error(Reply::new(550, EnhancedStatus(5, 1, 6), "moved")));
    t.virtual_.insert("@catch.test".into(), n("catchall"));
    t.virtual_.insert("bob@catch.test".into(), Target::AsAddressed);
    t.virtual_.insert("special+vip@example.test".into(), n("carol"));
    t.routes.insert("blackhole.test".into(), Route::Error(Reply::new(550, EnhancedStatus(5, 3, 0), "No mail")));
    t.routes.insert(".capture.test".into(), Route::Local("dave".into()));
    t
}

fn resolve(tables: &Tables, client: &str, rcpt: &str) -> Verdict<Vec<Destination>> {
    let local = vec!["example.test".to_owned(), "catch.test".to_owned()];
    let trusted: Vec<IpNet> = vec!["127.0.0.2/32".parse().unwrap()];
    let p = RecipientPolicy { local_domains: &local, trusted_networks: &trusted, separators: "+", tables };
    resolve_recipient(&p, client.parse().unwrap(), false, &Address::parse(rcpt).unwrap())
}

fn mailboxes(v: Verdict<Vec<Destination>>) -> Vec<String> {
    let Verdict::Ok(d) = v else { panic!("not accepted: {v:?}") };
    d.into_iter()
        .map(|d| match d {
            Destination::Mailbox { name, .. } => name,
            Destination::Remote(a) => format!("remote:{a}"),
            Destination::Pipe { command, name, .. } => format!("pipe:{name}:{command}"),
        })
        .collect()
}

fn status(v: Verdict<Vec<Destination>>) -> String {
    match v {
        Verdict::PermFail(r) | Verdict::TempFail(r) => format!("{} {}", r.code, r.status.unwrap()),
        Verdict::Ok(d) => panic!("accepted: {d:?}"),
    }
}

#[test]
fn users_aliases_and_subaddresses() {
    let t = tables();
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "Bob@EXAMPLE.test")), ["bob"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "bob+lists@example.test")), ["bob"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "team@example.test")), ["alice", "bob"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "root@example.test")), ["alice", "bob"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "carol@example.test")), ["carol", "remote:carol@elsewhere.test"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "postmaster@example.test")), ["postmaster"]);
    assert_eq!(status(resolve(&t, "192.0.2.1", "nobody@example.test")), "550 5.1.1");
    assert_eq!(status(resolve(&t, "192.0.2.1", "loop1@example.test")), "451 4.3.0");
}

#[test]
fn virtual_table() {
    let t = tables();
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "sales@example.test")), ["alice"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "info@example.test")), ["remote:info@partner.test"]);
    assert_eq!(status(resolve(&t, "192.0.2.1", "gone@example.test")), "550 5.1.6");
    // Catch-all catches everyone without a more specific entry, existing users too.
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "anything@catch.test")), ["catchall"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "alice@catch.test")), ["catchall"]);
    // `!` exempts an address from the catch-all.
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "bob@catch.test")), ["bob"]);
    // Most specific wins: the full sub-address key beats the user key.
    assert_eq!(
        mailboxes(resolve(&t, "192.0.2.1", "special+vip@example.test")),
        ["carol", "remote:carol@elsewhere.test"]
    );
    assert_eq!(status(resolve(&t, "192.0.2.1", "special@example.test")), "550 5.1.1");
}

#[test]
fn relay_only_for_trusted_clients() {
    let t = tables();
    assert_eq!(status(resolve(&t, "192.0.2.1", "x@elsewhere.test")), "550 5.7.1");
    assert_eq!(status(resolve(&t, "127.0.0.1", "x@elsewhere.test")), "550 5.7.1");
    assert_eq!(mailboxes(resolve(&t, "127.0.0.2", "x@elsewhere.test")), ["remote:x@elsewhere.test"]);
    // Routes apply to relayed mail at RCPT time, and never open relaying.
    assert_eq!(status(resolve(&t, "127.0.0.2", "x@blackhole.test")), "550 5.3.0");
    assert_eq!(mailboxes(resolve(&t, "127.0.0.2", "x@a.capture.test")), ["dave"]);
    assert_eq!(status(resolve(&t, "192.0.2.1", "x@a.capture.test")), "550 5.7.1");
    // A trusted client still gets 550 5.1.1 for unknown local users.
    assert_eq!(status(resolve(&t, "127.0.0.2", "nobody@example.test")), "550 5.1.1");
}

#[test]
fn sendmail_templates_and_wildcard_details() {
    let mut t = tables();
    // `@domain %1@other`: every user of the domain, kept as the same user elsewhere.
    t.virtual_.insert("@catch.test".into(), Target::Template(Template::parse("%1@example.test").unwrap()));
    t.virtual_.insert("carol+*@example.test".into(), Target::Template(Template::parse("%2").unwrap()));
    t.virtual_.insert("alice++@example.test".into(), Target::Name("bob".into()));
    t.virtual_.insert("@example.test".into(), Target::Template(Template::parse("%1%3@elsewhere.test").unwrap()));
    // The catch-all gives the user part to %1; the detail goes with %3 only.
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "alice@catch.test")), ["remote:alice@elsewhere.test"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "nosuch+x@example.test")), ["remote:nosuch+x@elsewhere.test"]);
    // `user+*`: any non-empty detail; %2 is the detail.
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "carol+bob@example.test")), ["bob"]);
    // `user++`: the empty detail only.
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "alice+@example.test")), ["bob"]);
    // The exact key still wins over both.
    assert_eq!(
        mailboxes(resolve(&t, "192.0.2.1", "special+vip@example.test")),
        ["carol", "remote:carol@elsewhere.test"]
    );
}

#[test]
fn the_trace_follows_the_tables() {
    let t = tables();
    let local = vec!["example.test".to_owned(), "catch.test".to_owned()];
    let p = RecipientPolicy { local_domains: &local, trusted_networks: &[], separators: "+", tables: &t };
    let (v, trace) =
        explain_recipient(&p, "192.0.2.1".parse().unwrap(), false, &Address::parse("root@example.test").unwrap());
    assert_eq!(mailboxes(v), ["alice", "bob"]);
    let steps: Vec<(usize, &Explain)> = trace.iter().map(|s| (s.depth, &s.step)).collect();
    assert!(matches!(steps[0], (0, Explain::LocalDomain(_))), "{steps:?}");
    assert!(matches!(steps[1], (0, Explain::Alias { name, .. }) if name == "root"), "{steps:?}");
    assert!(matches!(steps[2], (1, Explain::Alias { name, .. }) if name == "team"), "{steps:?}");
    assert!(matches!(steps[3], (2, Explain::Mailbox { name, implicit: false }) if name == "alice"), "{steps:?}");
    let (_, trace) =
        explain_recipient(&p, "192.0.2.1".parse().unwrap(), false, &Address::parse("x@other.test").unwrap());
    assert_eq!(
        trace.last().map(|s| &s.step),
        Some(&Explain::Failed(Reply::new(550, EnhancedStatus(5, 7, 1), "<x@other.test>: Relaying denied")))
    );
}

#[test]
fn pipes_are_destinations_of_their_alias() {
    let mut t = tables();
    t.aliases.insert("proc".into(), vec![Target::Pipe("/usr/bin/procmail".into()), Target::Name("bob".into())]);
    t.aliases.insert("staff".into(), vec![Target::Name("proc".into())]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "proc@example.test")), ["pipe:proc:/usr/bin/procmail", "bob"]);
    assert_eq!(mailboxes(resolve(&t, "192.0.2.1", "staff@example.test")), ["pipe:proc:/usr/bin/procmail", "bob"]);
}
