//! `postern check-config`: good configurations pass, each broken one in `tests/bad-config/`
//! fails naming file, line and key (its `expected-error` file lists substrings of the output).

use std::process::Command;

use crate::support::repo;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).arg("check-config").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn good_configurations_pass() {
    let dir = crate::support::TempDir::new("good-config");
    crate::support::copy_fixture("basic", &["postern.toml", "users", "aliases", "virtual"], &dir.0);
    let basic = dir.0.join("postern.toml");
    let (code, out, err) = check(&["--config", basic.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK") && out.contains("6 user(s)"), "{out}");
    let (code, out, _) = check(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("<embedded default>: configuration OK"), "{out}");
    let example = repo().join("docs/example/postern.toml");
    let (code, _, err) = check(&["--config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "docs/example must stay valid: {err}");
}

#[test]
fn bad_configurations_name_file_line_and_key() {
    let mut cases: Vec<_> =
        std::fs::read_dir(repo().join("tests/bad-config")).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 10);
    for case in cases {
        let config = case.join("postern.toml");
        let (code, out, err) = check(&["--config", config.to_str().unwrap()]);
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(code, 2, "{name}: must fail, stderr: {err}");
        assert!(!out.contains("configuration OK"), "{name}: said OK before an error:\n{out}");
        let expected = std::fs::read_to_string(case.join("expected-error")).unwrap();
        for want in expected.lines().filter(|l| !l.trim().is_empty()) {
            assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
        }
    }
}

#[test]
fn serve_refuses_a_broken_configuration() {
    let config = repo().join("tests/bad-config/02-bad-size/postern.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_message_size"));
}

#[test]
fn user_add_creates_a_missing_users_table() {
    let dir = crate::support::TempDir::new("user-add");
    let cfg = dir.0.join("postern.toml");
    std::fs::write(
        &cfg,
        "hostname = \"mx.example.test\"\ndata_dir = \"data\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains]\nlocal = [\"example.test\"]\n[tables]\nusers = \"users\"\n",
    )
    .unwrap();
    let (code, _, err) = check(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "a missing table is an error: {err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["user", "add", "alice", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"a long password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("created the users table"), "{err}");
    let users = std::fs::read_to_string(dir.0.join("users")).unwrap();
    assert!(users.starts_with("alice:{ARGON2ID}$argon2id$"), "{users}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(dir.0.join("users")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(check(&["--config", cfg.to_str().unwrap()]).0, 0);
}

/// `postern check-config | head -1` (issue 28): output into a pipe whose reader is gone ends
/// the command quietly (SIGPIPE, as Unix tools end), never with a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("check-config")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?} {err}", out.status);
}

/// `postern reload` says what it could not apply (issue 28): a new `[metrics] listen` needs a
/// restart, so the command exits non-zero naming it, while the rest is applied.
#[test]
fn reload_names_what_needs_a_restart() {
    let server = crate::support::Server::start();
    let cfg = server.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[metrics]\nlisten = \"127.0.0.1:1\"\n")).unwrap();
    let reload = || {
        let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(["reload", "--config"]).arg(&cfg).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, out) = reload();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("not applied until a restart: [metrics] listen"), "{out}");
    assert!(out.contains("reloaded "), "the rest was applied: {out}");
    server.wait_log("reload: not applied until a restart: [metrics] listen");
    std::fs::write(&cfg, text).unwrap();
    let (code, out) = reload();
    assert_eq!(code, Some(0), "nothing pending once it is back: {out}");
}

/// Under systemd the unit's sandbox is fixed at start: a reload that changes the folders the
/// deliveries write (mbox in /var/mail here) says that it needs the sandbox redone and a
/// restart, and exits non-zero.
#[test]
fn reload_under_systemd_names_a_sandbox_change() {
    let dir = crate::support::prepare_fixture("basic", &[], |t| t, |_| {});
    let server = crate::support::Server::start_in(dir, &[("INVOCATION_ID", "0123456789abcdef".into())]);
    let cfg = server.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[delivery]\nlocal = \"mbox\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(["reload", "--config"]).arg(&cfg).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("not applied until a restart: the sandbox's folders (`postern sandbox`"), "{said}");
}
