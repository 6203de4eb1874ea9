//! `postern sendmail` / `sendmail` from a child process, as cron or PHP run it.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{Server, TempDir};

fn sendmail(program: &std::path::Path, server: &Server, args: &[&str], input: &[u8]) -> (i32, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("POSTERN_CONFIG", server.config_path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn sendmail_t_is_delivered_with_completed_headers() {
    let mut server = Server::start();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_postern"));
    let (code, err) = sendmail(
        bin,
        &server,
        &["sendmail", "-t", "-i"],
        b"To: bob@example.test\nCc: Alice <alice@example.test>\nBcc: carol@example.test\nSubject: cron output\n\nhello from cron\n.\nstill the body\n",
    );
    assert_eq!(code, 0, "{err}");
    for mailbox in ["bob", "alice", "carol"] {
        let files = server.wait_maildir(mailbox, 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("Subject: cron output\n"), "{text}");
        assert!(text.contains("\nhello from cron\n.\nstill the body\n"), "-i keeps the dot line: {text}");
        assert!(!text.contains("Bcc:"), "Bcc must be removed: {text}");
        for h in ["\nFrom: ", "\nDate: ", "\nMessage-ID: <", "(Postern, from userid "] {
            assert!(text.contains(h), "missing {h:?}: {text}");
        }
    }
    server.wait_queue_empty();

    // Invoked as `sendmail`, with the -oi spelling and recipients as arguments; without -i a
    // lone dot ends the input.
    let dir = TempDir::new("sendmail");
    let link = dir.0.join("sendmail");
    std::os::unix::fs::symlink(bin, &link).unwrap();
    let (code, err) = sendmail(
        &link,
        &server,
        &["-f", "app@example.test", "-F", "The App", "dave@example.test"],
        b"Subject: argv\n\nline\n.\nnot sent\n",
    );
    assert_eq!(code, 0, "{err}");
    let files = server.wait_maildir("dave", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("Return-Path: <app@example.test>"), "{text}");
    assert!(
        text.contains("From: \"The App\" <app@example.test>")
            && text.ends_with("\nline\n")
            && !text.contains("not sent"),
        "{text}"
    );

    // An unknown recipient: refused, nothing queued, EX_NOUSER.
    let (code, err) = sendmail(bin, &server, &["sendmail", "nobody@example.test"], b"Subject: x\n\nx\n");
    assert_eq!(code, 67, "{err}");
    assert!(err.contains("5.1.1") && err.contains("not queued"), "{err}");

    // The daemon is down: EX_TEMPFAIL and a clear message; the caller keeps the message.
    server.wait_queue_empty();
    server.kill9();
    let (code, err) = sendmail(bin, &server, &["sendmail", "bob@example.test"], b"Subject: x\n\nx\n");
    assert_eq!(code, 75);
    assert!(err.contains("cannot reach the Postern daemon") && err.contains("not queued"), "{err}");
}

/// Routes apply to mail from the `sendmail` command as to SMTP (issue 28): an `error:` route
/// refuses it (exit 69 family, the reply on stderr), a `local:` route delivers it to the
/// mailbox, where before both went to the domain's MX.
#[test]
fn routes_apply_to_local_submissions() {
    let server = Server::start_prepared(
        "basic",
        &[],
        |t| {
            t.replace("virtual = \"virtual\"", "virtual = \"virtual\"\nroutes = \"routes\"")
                + "\n[delivery]\nallow_pipes = true\n"
        },
        |dir| {
            use std::os::unix::fs::PermissionsExt as _;
            let out = dir.join("out");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
            let routes = format!(
                "blackhole.test error:5.3.0:No mail for this domain\ncapture.test local:dave\nlists.test pipe:cat > {}/$LOCAL\n",
                out.display()
            );
            std::fs::write(dir.join("routes"), routes).unwrap();
        },
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_postern"));
    let (code, err) = sendmail(bin, &server, &["sendmail", "x@blackhole.test"], b"Subject: refused\n\nx\n");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("550 5.3.0 No mail for this domain"), "{err}");
    let (code, err) = sendmail(bin, &server, &["sendmail", "y@capture.test"], b"Subject: captured\n\nx\n");
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&server.wait_maildir("dave", 1)[0]).unwrap();
    assert!(text.contains("Subject: captured"), "{text}");
    let (code, err) = sendmail(bin, &server, &["sendmail", "announce@lists.test"], b"Subject: piped\n\nx\n");
    assert_eq!(code, 0, "{err}");
    let piped = server.dir.0.join("out/announce");
    let text =
        crate::support::poll("the piped copy", || std::fs::read_to_string(&piped).ok().filter(|t| t.ends_with("x\n")));
    assert!(text.contains("Subject: piped"), "{text}");
}

/// `[server] submit_group` (issue 28): `submit.sock` is 0660 with that group, so only its
/// members (and root) send; nobody is refused with exit 75, nothing queued.
#[test]
fn submit_group_restricts_who_sends() {
    use std::os::unix::fs::MetadataExt as _;
    let server = Server::start_with("basic", |t| format!("{t}\n[server]\nsubmit_group = \"mail\"\n"));
    let socket = server.data().join("submit.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 8), "group mail");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_postern"), "sendmail", "bob@example.test"])
        .env("POSTERN_CONFIG", server.config_path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_postern"));
    assert_eq!(sendmail(bin, &server, &["sendmail", "bob@example.test"], b"Subject: root\n\nx\n").0, 0);
    server.wait_maildir("bob", 1);
}
