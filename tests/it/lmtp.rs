//! LMTP delivery to Debian's Dovecot (dovecot-lmtpd, dovecot-sieve; installed by
//! `scripts/test`), started by the test with a private configuration on a socket in the test's
//! folder and stopped by PID: three recipients, one over quota → two delivered at once, the
//! third deferred (452 4.2.2) and delivered once its quota is raised; a Sieve rule files a
//! message into a folder.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command};

use crate::support::smtp::Client;
use crate::support::{Server, TempDir, poll, repo};

pub(crate) struct Dovecot(Child);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn users(dir: &std::path::Path, bob_quota: &str) {
    let text = format!(
        "alice:{{PLAIN}}x::::::\nbob:{{PLAIN}}x::::::userdb_quota_rule=*:storage={bob_quota}\ncarol:{{PLAIN}}x::::::\n"
    );
    std::fs::write(dir.join("users"), text).unwrap();
}

fn new_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// Starts Dovecot with the fixture's configuration in a new folder; returns it, the folder
/// and the LMTP socket.
pub(crate) fn start_dovecot() -> (Dovecot, TempDir, std::path::PathBuf) {
    assert!(std::path::Path::new("/usr/sbin/dovecot").exists(), "dovecot is missing: `bash scripts/test` installs it");
    let dv = TempDir::new("dovecot");
    for d in ["run", "state", "mail", "sieve", "home"] {
        std::fs::create_dir_all(dv.0.join(d)).unwrap();
        // Dovecot delivers as nobody.
        std::fs::set_permissions(dv.0.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let conf = std::fs::read_to_string(repo().join("tests/fixtures/dovecot/dovecot.conf")).unwrap();
    std::fs::write(dv.0.join("dovecot.conf"), conf.replace("{DIR}", &dv.0.display().to_string())).unwrap();
    users(&dv.0, "1");
    std::fs::write(
        dv.0.join("sieve/carol.sieve"),
        "require \"fileinto\";\nif header :contains \"subject\" \"invoice\" { fileinto \"Invoices\"; }\n",
    )
    .unwrap();
    let dovecot =
        Dovecot(Command::new("/usr/sbin/dovecot").arg("-F").arg("-c").arg(dv.0.join("dovecot.conf")).spawn().unwrap());
    let socket = dv.0.join("lmtp");
    poll("Dovecot's LMTP socket", || socket.exists().then_some(()));

    (dovecot, dv, socket)
}

#[test]
fn dovecot_lmtp_per_recipient_replies_quota_and_sieve() {
    let (_dovecot, dv, socket) = start_dovecot();
    let server = Server::start_with("basic", |t| {
        format!("{t}\n[delivery]\nlocal = \"lmtp\"\nlmtp = \"unix:{}\"\n", socket.display())
    });
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let body = format!("Subject: invoice 7\r\n\r\n{}\r\n", "x".repeat(3000));
    let r = c.send_data(
        "someone@example.test",
        &["alice@example.test", "bob@example.test", "carol@example.test"],
        body.as_bytes(),
    );
    assert_eq!(r.code, 250, "{}", r.text);

    let mail = dv.0.join("mail");
    poll("alice's and carol's copies", || {
        (new_files(&mail.join("alice/new")).len() == 1 && new_files(&mail.join("carol/.Invoices/new")).len() == 1)
            .then_some(())
    });
    assert!(new_files(&mail.join("carol/new")).is_empty(), "the Sieve rule filed carol's copy into Invoices");
    let deferred = server.wait_log("to=<bob@example.test>");
    assert!(deferred.contains("status=deferred") && deferred.contains("452 4.2.2"), "{deferred}");
    assert!(deferred.contains("relay=lmtp unix:"), "{deferred}");
    assert!(new_files(&mail.join("bob/new")).is_empty());
    server.wait_log("to=<alice@example.test>, relay=lmtp unix:");

    // The quota is raised: the retry delivers bob's copy, once.
    users(&dv.0, "100M");
    poll("bob's copy after the quota was raised", || (new_files(&mail.join("bob/new")).len() == 1).then_some(()));
    server.wait_queue_empty();
    assert_eq!(new_files(&mail.join("alice/new")).len(), 1, "alice got it once");
    assert!(server.maildir("alice").is_empty(), "nothing in Postern's own Maildir");
}

/// A domain routed to another server's LMTP (`lmtp:` in the routes table, Postfix's
/// `lmtp:` transport): relayed mail for it goes to Dovecot, not to an MX; the next message
/// reuses the connection.
#[test]
fn a_domain_routed_to_lmtp_goes_to_dovecot() {
    let (_dovecot, dv, socket) = start_dovecot();
    let routes = format!("imap.test lmtp:unix:{}\n", socket.display());
    let server = Server::start_prepared(
        "basic",
        &[],
        |t| t.replace("virtual = \"virtual\"", "virtual = \"virtual\"\nroutes = \"routes\""),
        |dir| std::fs::write(dir.join("routes"), &routes).unwrap(),
    );
    let (mut c, _) = Client::connect_from("127.0.0.2", server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@example.test", &["carol@imap.test"], b"Subject: routed\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let new = dv.0.join("mail/carol/new");
    poll("carol's copy in Dovecot", || (new_files(&new).len() == 1).then_some(()));
    let line = server.wait_log("to=<carol@imap.test>");
    assert!(line.contains("relay=lmtp unix:") && line.contains("status=sent"), "{line}");
    assert!(!line.contains("conn_use="), "a new connection: {line}");

    // The next message, within [outbound] connection_cache_time, reuses the idle connection.
    let r = c.send_data("alice@example.test", &["alice@imap.test"], b"Subject: again\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let line = server.wait_log("to=<alice@imap.test>");
    assert!(line.contains("conn_use=2") && line.contains("status=sent"), "{line}");
    assert_eq!(new_files(&dv.0.join("mail/alice/new")).len(), 1);
    server.wait_queue_empty();
}
