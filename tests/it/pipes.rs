//! Pipe delivery (`|command` in the aliases, `[delivery] allow_pipes`): procmail from Debian
//! files a message by its `.procmailrc` rule; EX_TEMPFAIL is retried, EX_NOUSER bounced with
//! the command's output in the log and never in the DSN; a pipe never runs as root; without
//! `allow_pipes` the configuration is refused, naming the alias; and an outsider's local part
//! never becomes a command through a virtual-table template (issue 26, finding 1).

use std::os::unix::fs::PermissionsExt as _;

use crate::support::smtp::Client;
use crate::support::{Server, poll, postern_cli};

#[test]
fn procmail_files_tempfail_retries_nouser_bounces_never_root() {
    assert!(std::path::Path::new("/usr/bin/procmail").exists(), "procmail is missing: `bash scripts/test` installs it");
    let server = Server::start_prepared(
        "basic",
        &[],
        |t| format!("{t}\n[delivery]\nallow_pipes = true\n"),
        |dir| {
            let out = dir.join("out");
            // The pipes run as nobody: they write only here.
            for d in [out.clone(), out.join("procmail")] {
                std::fs::create_dir_all(&d).unwrap();
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            let rc = format!(
                "MAILDIR={o}/procmail\nDEFAULT=$MAILDIR/inbox/\nLOGFILE={o}/procmail.log\n:0\n* ^Subject:.*invoice\ninvoices/\n",
                o = out.display()
            );
            std::fs::write(dir.join("procmailrc"), rc).unwrap();
            let mut aliases = std::fs::read_to_string(dir.join("aliases")).unwrap();
            aliases.push_str(&format!(
                "filed: \"|/usr/bin/procmail -m {d}/procmailrc\"\ntempfail: \"|exit 75\"\nnouser: \"|echo no such user here; exit 67\"\nwhoami: \"|id -u > {d}/out/whoami\"\n",
                d = dir.display()
            ));
            std::fs::write(dir.join("aliases"), aliases).unwrap();
        },
    );
    let out = server.dir.0.join("out");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    let send = |c: &mut Client, to: &str, subject: &str| {
        let body = format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\nFrom the accounts department\r\n");
        assert_eq!(c.send_data("alice@example.test", &[to], body.as_bytes()).code, 250, "{to}");
    };

    // procmail files it by its rule.
    send(&mut c, "filed@example.test", "invoice 42");
    let filed = poll("procmail's delivery into invoices/", || {
        let dir = out.join("procmail/invoices/new");
        let f = std::fs::read_dir(dir).ok()?.next()?.ok()?.path();
        std::fs::read_to_string(f).ok()
    });
    assert!(filed.contains("Subject: invoice 42") && filed.starts_with("Return-Path: <alice@example.test>"), "{filed}");
    server.wait_log("status=sent (250 2.0.0 delivered to command as nobody: /usr/bin/procmail");

    // A pipe never runs as root: the daemon is root here, the command is not.
    send(&mut c, "whoami@example.test", "who");
    let uid = poll("the whoami pipe", || std::fs::read_to_string(out.join("whoami")).ok().filter(|s| !s.is_empty()));
    assert_ne!(uid.trim(), "0", "a pipe ran as root");
    assert_eq!(uid.trim(), "65534", "[delivery] pipe_user nobody");

    // EX_TEMPFAIL: deferred and tried again.
    send(&mut c, "tempfail@example.test", "later");
    poll("two deferred attempts", || {
        (server.log_lines("to=<tempfail@example.test>").iter().filter(|l| l.contains("status=deferred")).count() >= 2)
            .then_some(())
    });
    assert!(server.log_lines("to=<tempfail@example.test>")[0].contains("command exit status 75 (EX_TEMPFAIL)"));

    // EX_NOUSER: bounced; the command's output is logged, and never leaves the host in the DSN.
    send(&mut c, "nouser@example.test", "nobody home");
    let dsn = std::fs::read_to_string(&server.wait_maildir("alice", 1)[0]).unwrap();
    assert!(dsn.contains("Status: 5.1.1") && dsn.contains("command exit status 67 (EX_NOUSER)"), "{dsn}");
    assert!(!dsn.contains("no such user here"), "the command's output reached the sender:\n{dsn}");
    server.wait_log("to=<nouser@example.test>: command output: no such user here");

    // Without allow_pipes the configuration is refused, naming each alias that pipes.
    let err = check_config_without_pipes(&server);
    assert!(err.contains(": filed: pipes to commands are off: set [delivery] allow_pipes = true"), "{err}");
    let _ = postern_cli;
}

/// A `pipe:` route (a domain's mail to a command, as a list manager takes it): the command
/// gets the message and the recipient in its environment, as `[delivery] pipe_user`; without
/// `allow_pipes` the configuration is refused, naming the routes line.
#[test]
fn a_domain_routed_to_a_pipe() {
    let server = Server::start_prepared(
        "basic",
        &[],
        |t| {
            t.replace("virtual = \"virtual\"", "virtual = \"virtual\"\nroutes = \"routes\"")
                + "\n[delivery]\nallow_pipes = true\n"
        },
        |dir| {
            let out = dir.join("out");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
            let routes = format!("# lists\nlists.test pipe:cat > {}/$LOCAL.$DOMAIN\n", out.display());
            std::fs::write(dir.join("routes"), routes).unwrap();
        },
    );
    let (mut c, _) = Client::connect_from("127.0.0.2", server.port);
    c.cmd("EHLO client.test");
    let r = c.send_data("alice@example.test", &["announce@lists.test"], b"Subject: to the list\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let file = server.dir.0.join("out/announce.lists.test");
    let text = poll("the piped copy", || std::fs::read_to_string(&file).ok().filter(|t| t.ends_with("hello\n")));
    assert!(text.starts_with("Return-Path: <alice@example.test>") && text.contains("Subject: to the list"), "{text}");
    let line = server.wait_log("status=sent (250 2.0.0 delivered to command as nobody: cat > ");
    assert!(line.contains("relay=local, pipe route,"), "a route's pipe has no alias to name: {line}");

    let err = check_config_without_pipes(&server);
    assert!(err.contains("routes:2: lists.test: pipes to commands are off"), "{err}");
}

/// The numeric uid of the account `name` (`id -u NAME`).
fn uid_of(name: &str) -> String {
    let out = std::process::Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Issue 26, findings 14 and 16: with the daemon dropped to `[server] user = "nobody"`, as the
/// README advises, a pipe of the alias `mail` still runs as the account `mail`, and a new mbox
/// is its recipient's (0600): the local-delivery helper kept root for that. A command no table
/// names is refused by the helper, whatever the daemon asks.
#[test]
fn under_a_dropped_daemon_deliveries_run_as_the_recipient() {
    let server = Server::start_prepared(
        "basic",
        &[],
        |t| {
            format!(
                "{t}\n[server]\nuser = \"nobody\"\n[delivery]\nallow_pipes = true\nlocal = \"mbox\"\nmbox = \"{{data_dir}}/mbox/{{mailbox}}\"\n"
            )
        },
        |dir| {
            let out = dir.join("out");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
            let mut aliases = std::fs::read_to_string(dir.join("aliases")).unwrap();
            aliases.push_str(&format!("mail: \"|id -u > {}/out/as-mail\"\n", dir.display()));
            std::fs::write(dir.join("aliases"), aliases).unwrap();
            let mut users = std::fs::read_to_string(dir.join("users")).unwrap();
            users.push_str("www-data\n");
            std::fs::write(dir.join("users"), users).unwrap();
        },
    );
    server.wait_log("running as user nobody");
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO client.test");
    for to in ["mail@example.test", "www-data@example.test"] {
        let r = c.send_data("alice@far.test", &[to], b"Subject: for the account\r\n\r\nx\r\n");
        assert_eq!(r.code, 250, "{to}: {}", r.text);
    }
    let out = server.dir.0.join("out/as-mail");
    let uid = poll("the pipe of alias mail", || std::fs::read_to_string(&out).ok().filter(|s| !s.is_empty()));
    assert_eq!(uid.trim(), uid_of("mail"), "the pipe ran as the alias's account, not the daemon's");
    server.wait_log("status=sent (250 2.0.0 delivered to command as mail: id -u");
    let mbox = server.data().join("mbox/www-data");
    poll("the mbox of www-data", || std::fs::metadata(&mbox).ok().filter(|m| m.len() > 0));
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&mbox).unwrap();
    assert_eq!((meta.uid().to_string(), meta.mode() & 0o777), (uid_of("www-data"), 0o600), "{}", mbox.display());

    // What a compromised daemon could ask: a command of its own. The helper reads the tables
    // itself and refuses.
    let request = postern_local::privileged::Request::Pipe {
        alias: "mail".into(),
        command: format!("id > {}/out/pwned", server.dir.0.display()),
        sender: "a@x.test".into(),
        recipient: "mail@example.test".into(),
        original_recipient: "mail@example.test".into(),
        extension: String::new(),
    };
    let socket = server.data().join("local.sock");
    let (outcome, _) =
        postern_local::privileged::deliver(&socket, &request, b"x\r\n", std::time::Duration::from_secs(30));
    assert!(
        matches!(&outcome, postern_local::pipe::PipeOutcome::TempFail(t) if t.contains("no table line names")),
        "{outcome:?}"
    );
    assert!(!server.dir.0.join("out/pwned").exists());

    // The root helpers end with the daemon, even killed (PR_SET_PDEATHSIG alone does not fire
    // once the daemon has changed its user): none is left behind as root.
    let daemon = server.pid();
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(daemon)
        })
        .collect();
    assert_eq!(children.len(), 2, "the key helper and the local-delivery helper: {children:?}");
    let mut server = server;
    server.kill9();
    poll("the helpers to end with the daemon", || {
        children.iter().all(|c| !std::path::Path::new(&format!("/proc/{c}")).exists()).then_some(())
    });
}

/// `postern check-config` on the server's configuration with `allow_pipes = false`: it must
/// refuse it (exit 2); returns its error output.
fn check_config_without_pipes(server: &Server) -> String {
    let text =
        std::fs::read_to_string(server.config_path()).unwrap().replace("allow_pipes = true", "allow_pipes = false");
    let off = server.dir.0.join("off.toml");
    std::fs::write(&off, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check-config", "--config"])
        .arg(&off)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// The documented catch-all `@example.org %1@example.test`, with pipes on for some procmail
/// alias: an untrusted client's `RCPT TO:<"|id >FILE #"@example.org>` must not run a command.
/// `%1` goes into the local part of an address, whose local part is then looked up as a name:
/// unknown, so refused at RCPT, nothing queued, no file written. With pipes off too.
#[test]
fn an_outsiders_local_part_never_becomes_a_command() {
    for pipes in ["true", "false"] {
        let server = Server::start_prepared(
            "basic",
            &[],
            |t| {
                t.replace(
                    "local = [\"example.test\", \"catch.test\"]",
                    "local = [\"example.test\", \"catch.test\", \"example.org\"]",
                ) + &format!("\n[delivery]\nallow_pipes = {pipes}\n")
            },
            |dir| {
                let mut virtual_ = std::fs::read_to_string(dir.join("virtual")).unwrap();
                virtual_.push_str("@example.org %1@example.test\n");
                std::fs::write(dir.join("virtual"), virtual_).unwrap();
                if pipes == "true" {
                    let mut aliases = std::fs::read_to_string(dir.join("aliases")).unwrap();
                    aliases.push_str("proc: \"|cat >/dev/null\"\n");
                    std::fs::write(dir.join("aliases"), aliases).unwrap();
                }
            },
        );
        let marker = server.dir.0.join("pwned");
        let (mut c, _) = Client::connect_from("127.0.0.3", server.port);
        c.cmd("EHLO attacker.test");
        assert_eq!(c.cmd("MAIL FROM:<x@attacker.test>").code, 250);
        for local in
            [format!("\"|id >{} #\"", marker.display()), "\"|/bin/sh\"".into(), "\":include:/etc/passwd\"".into()]
        {
            let r = c.cmd(&format!("RCPT TO:<{local}@example.org>"));
            assert_eq!((r.code, &r.text[4..9]), (550, "5.1.1"), "pipes = {pipes}, {local}: {}", r.text);
        }
        // The catch-all itself still works for a real user.
        assert_eq!(c.cmd("RCPT TO:<bob@example.org>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        assert_eq!(c.cmd("Subject: catch-all\r\n\r\nx\r\n.").code, 250);
        server.wait_maildir("bob", 1);
        server.wait_queue_empty();
        assert!(!marker.exists(), "a command ran");
        assert!(server.log_lines("delivered to command").is_empty(), "{:?}", server.log_lines("command"));
    }
}
