//! The programs of a Debian box calling `/usr/sbin/sendmail` as they do, with no environment
//! variable and no `--config`: cron, mail(1) (bsd-mailx), PHP's mail() and `sendmail -bs`,
//! against a daemon that found its configuration at `/etc/postern/postern.toml`.
//!
//! The seam is a private mount namespace (`tests/bin/with-etc-postern`): `/etc/postern` is the
//! test's folder and `/usr/sbin/sendmail` a link to the postern binary, on overlays whose
//! upper layers are inside the test's folder, so nothing outside it is written. bsd-mailx and
//! php-cli are installed by `scripts/test`.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{Server, TempDir, repo};

/// The wrapper that runs a command with the Debian layout of `dir`.
fn wrapper(dir: &TempDir) -> Vec<OsString> {
    vec![repo().join("tests/bin/with-etc-postern").into(), dir.0.clone().into()]
}

/// Runs `args` inside the layout with `input` on stdin; exit code and stderr.
fn run_in(dir: &TempDir, args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let w = wrapper(dir);
    let mut child = Command::new(&w[0])
        .args(&w[1..])
        .args(args)
        .env("POSTERN_BIN", env!("CARGO_BIN_EXE_postern"))
        .env_remove("POSTERN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn need(program: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap().status.success();
    assert!(found, "{program} is missing: `bash scripts/test` installs it (bsd-mailx, php-cli)");
}

/// The admin's messages, once there are `n`, as text.
fn admin_mail(server: &Server, n: usize) -> Vec<String> {
    server.wait_maildir("admin", n).iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

#[test]
fn debian_programs_deliver_through_the_sendmail_link() {
    need("unshare");
    need("mail");
    need("php");
    let dir = TempDir::new("debian");
    let etc = dir.0.join("etc-postern");
    std::fs::create_dir_all(&etc).unwrap();
    for f in ["postern.toml", "users", "aliases"] {
        let text = std::fs::read_to_string(repo().join("tests/fixtures/debian").join(f)).unwrap();
        std::fs::write(etc.join(f), crate::support::fill_no_dns(&text.replace("{DIR}", &dir.0.display().to_string())))
            .unwrap();
    }
    let wrapped = wrapper(&dir);
    let mut server = Server::start_wrapped(dir, wrapped);
    let dir = &server.dir;
    assert!(
        server.log_lines("").iter().all(|l| !l.contains("embedded development default")),
        "the daemon must have found /etc/postern/postern.toml"
    );

    // Debian cron (cron/do_command.c): headers of its own, the output as the body.
    let cron = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@mx> run-parts /etc/cron.daily\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\nlogrotate: caf\xc3\xa9 done\n.\nstill output\n";
    let (code, _, err) = run_in(dir, &["/usr/sbin/sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], cron);
    assert_eq!(code, Some(0), "cron: {err}");
    let text = &admin_mail(&server, 1)[0];
    assert!(text.contains("Subject: Cron <root@mx> run-parts"), "{text}");
    assert!(text.contains("From: root@example.test (Cron Daemon)\n"), "{text}");
    assert!(text.contains("\nTo: root@example.test\n"), "always_add_domain qualifies To: {text}");
    assert!(text.contains("\nlogrotate: caf\u{e9} done\n.\nstill output\n"), "-i keeps the dot, 8 bits intact: {text}");
    assert!(text.starts_with("Return-Path: <root@example.test>"), "bare root qualified with the origin: {text}");

    // mail(1) from bsd-mailx: `mail -s subject root`.
    let (code, _, err) = run_in(dir, &["mail", "-s", "disk almost full", "root"], b"/var is at 91%\n");
    assert_eq!(code, Some(0), "mail: {err}");
    let all = admin_mail(&server, 2);
    assert!(all[1].contains("Subject: disk almost full") && all[1].contains("/var is at 91%"), "{}", all[1]);

    // PHP's mail(): sendmail_path defaults to `/usr/sbin/sendmail -t -i`.
    let php = r#"exit(mail("www-data", "order 42", "Thank you.\n.\nBye", "From: shop <www-data>") ? 0 : 1);"#;
    let (code, out, err) = run_in(dir, &["php", "-r", php], b"");
    assert_eq!(code, Some(0), "php: {out} {err}");
    let all = admin_mail(&server, 3);
    assert!(all[2].contains("Subject: order 42") && all[2].contains("Thank you.\n.\nBye"), "{}", all[2]);
    assert!(all[2].contains("From: shop <www-data@example.test>"), "unqualified From gets the origin: {}", all[2]);

    // `sendmail -bs`: SMTP on stdin and stdout.
    let dialog = b"EHLO localhost\r\nMAIL FROM:<backup@example.test>\r\nRCPT TO:<root@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\nSubject: backup report\r\n\r\nall good\r\n.\r\nQUIT\r\n";
    let (code, out, err) = run_in(dir, &["/usr/sbin/sendmail", "-bs"], dialog);
    assert_eq!(code, Some(0), "-bs: {err}");
    for want in [
        "220 mx.example.test ESMTP",
        "250 2.1.5",
        "550 5.1.1 <nobody@example.test>",
        "250 2.0.0 Ok: queued as ",
        "221 ",
    ] {
        assert!(out.contains(want), "-bs: missing {want:?} in\n{out}");
    }
    let all = admin_mail(&server, 4);
    assert!(all[3].contains("Subject: backup report") && all[3].ends_with("all good\n"), "{}", all[3]);

    // -oem: a refused recipient is mailed back to the sender (root, so the admin).
    let (code, _, err) = run_in(dir, &["/usr/sbin/sendmail", "-oem", "nobody@example.test"], b"Subject: lost\n\nx\n");
    assert_eq!(code, Some(67), "{err}");
    assert!(err.contains("550 5.1.1") && err.contains("mailed to <root@example.test>"), "{err}");
    let all = admin_mail(&server, 5);
    assert!(all[4].contains("Subject: Returned mail") && all[4].contains("nobody@example.test"), "{}", all[4]);

    // Callers that are not root (issue 28): PHP as www-data, mail(1) and a user crontab's
    // cron as nobody. `users` stays 0600 root, as a real box keeps its password hashes: the
    // caller reads only postern.toml, the daemon decides behind the submission socket.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.0.join("etc-postern/users"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for d in [dir.0.clone(), dir.0.join("etc-postern")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let as_user =
        |user: &str, args: &[&str], input: &[u8]| run_in(dir, &[&["runuser", "-u", user, "--"], args].concat(), input);
    let (code, out, err) = as_user("www-data", &["php", "-r", php], b"");
    assert_eq!(code, Some(0), "php as www-data: {out} {err}");
    let (code, _, err) = as_user("nobody", &["mail", "-s", "from a user", "root"], b"sent by nobody\n");
    assert_eq!(code, Some(0), "mail as nobody: {err}");
    let (code, _, err) = as_user(
        "nobody",
        &["/usr/sbin/sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        b"Subject: Cron <nobody@mx> backup\n\nuser crontab output\n",
    );
    assert_eq!(code, Some(0), "a user crontab's mail: {err}");
    let (code, out, err) = as_user("nobody", &["/usr/sbin/sendmail", "-bs"], b"EHLO localhost\r\nMAIL FROM:<nobody>\r\nRCPT TO:<root>\r\nDATA\r\nSubject: -bs as nobody\r\n\r\nx\r\n.\r\nQUIT\r\n");
    assert!(code == Some(0) && out.contains("250 2.0.0 Ok: queued as "), "-bs as nobody: {out} {err}");
    let all = admin_mail(&server, 9);
    for want in ["Subject: order 42", "Subject: from a user", "user crontab output", "Subject: -bs as nobody"] {
        assert!(all[5..].iter().any(|m| m.contains(want)), "{want} not delivered: {all:?}");
    }
    std::fs::set_permissions(dir.0.join("etc-postern/users"), std::fs::Permissions::from_mode(0o644)).unwrap();

    // The other modes, through the same link and the mailq / newaliases names.
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["mailq", "newaliases"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_postern"), bin.join(name)).unwrap();
    }
    let link = |name: &str| bin.join(name).display().to_string();
    let (code, out, err) = run_in(dir, &["/usr/sbin/sendmail", "-bv", "root", "nobody@example.test"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("alias ") && out.contains("root: admin") && out.contains("verdict: deliver"), "{out}");
    assert!(out.contains("verdict: refuse 550 5.1.1"), "{out}");
    let (code, out, _) = run_in(
        dir,
        &["/usr/sbin/sendmail", "-bt"],
        b"3,0 www-data
/tryflags ES
",
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("www-data@example.test") && out.contains("mailbox admin"), "{out}");
    assert!(out.contains("no rulesets"), "{out}");
    for (args, want) in [
        (vec![link("newaliases")], "tables OK (3 alias(es)"),
        (vec!["/usr/sbin/sendmail".into(), "-bi".into()], "reloaded"),
        (vec![link("mailq")], "Mail queue is empty"),
        (vec!["/usr/sbin/sendmail".into(), "-bp".into()], "Mail queue is empty"),
        (vec!["/usr/sbin/sendmail".into(), "-q".into()], "scheduled for delivery now"),
        (vec!["/usr/sbin/sendmail".into(), "-qRexample.test".into()], "scheduled for delivery now"),
        (vec!["/usr/sbin/sendmail".into(), "-q30m".into()], "not needed"),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_in(dir, &argv, b"");
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
        assert!(out.contains(want), "{args:?}: want {want:?} in {out}{err}");
    }

    // An unknown flag: one line naming it, EX_USAGE.
    let (code, _, err) = run_in(dir, &["/usr/sbin/sendmail", "-X", "/tmp/log", "root"], b"");
    assert_eq!(code, Some(64));
    assert!(err.contains("-X") && err.lines().count() == 1, "{err}");

    // The daemon is down: the error names the configuration file and the socket tried.
    server.wait_queue_empty();
    server.kill9();
    let (code, _, err) = run_in(&server.dir, &["/usr/sbin/sendmail", "root"], b"Subject: x\n\nx\n");
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("/etc/postern/postern.toml") && err.contains("submit.sock"), "{err}");
}
