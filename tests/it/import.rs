//! `postern import sendmail` on a Debian 8 postmaster's `/etc/mail` and opendkim tree
//! (`tests/import/debian8`): the output passes check-config, equals the golden configuration
//! and report, and routes every address of `expected/addresses` as `expected/routes.txt` says.

use std::path::Path;
use std::process::Command;

use crate::support::certs::Pki;
use crate::support::dns::DnsServer;
use crate::support::{TempDir, repo};

/// Copies `src` to `dst` recursively, replacing `{ROOT}` with `root` in every file.
fn copy_tree(src: &Path, dst: &Path, root: &str) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to, root);
        } else {
            let text = std::fs::read_to_string(e.path()).unwrap();
            std::fs::write(to, text.replace("{ROOT}", root)).unwrap();
        }
    }
}

fn postern(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Compares `got` with the golden file `name` (see [`crate::support::golden`]).
fn golden(name: &str, got: &str) {
    let path = repo().join("tests/import/debian8/expected").join(name);
    if let Err(diff) = crate::support::golden(&path, got) {
        panic!("{name} differs from the golden file: {diff}");
    }
}

#[test]
fn a_debian_sendmail_setup_imports_and_routes_as_before() {
    let dir = TempDir::new("import");
    let root = dir.0.display().to_string();
    copy_tree(&repo().join("tests/import/debian8/etc"), &dir.0.join("etc"), &root);
    for domain in ["example.org", "example.net"] {
        let key = dir.0.join(format!("etc/opendkim/keys/{domain}/mail.private"));
        let (code, _, err) =
            postern(&["dkim", "keygen", "--domain", domain, "--selector", "mail", "--out", key.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
    }
    let live = dir.0.join("etc/letsencrypt/live/mx.example.org");
    std::fs::create_dir_all(&live).unwrap();
    Pki::new().server_cert(&["mx.example.org"], false).write(&live);

    let etc = |p: &str| format!("{root}/etc/{p}");
    let out = dir.0.join("out");
    let (code, stdout, err) = postern(&[
        "import",
        "sendmail",
        // No --aliases: sendmail.mc's ALIAS_FILE names the file (issue 28).
        "--mail-dir",
        &etc("mail"),
        "--opendkim",
        &etc("opendkim.conf"),
        "--passwd",
        &etc("passwd"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("check-config: configuration OK"), "{stdout}");
    let cfg = out.join("postern.toml");
    let (code, checked, err) = postern(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "the imported configuration passes check-config: {err}");
    assert!(checked.contains("DKIM key d=example.org s=mail"), "{checked}");

    let config = std::fs::read_to_string(&cfg).unwrap();
    golden("postern.toml", &config.replace(&root, "{ROOT}"));
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert_eq!(report, stdout.split("\nwritten: ").next().unwrap(), "the report is printed and saved");
    golden("report.txt", &report.replace(&root, "{ROOT}"));
    for unmapped in
        ["MAILER(`procmail')", "From:spammer@bad.example", "archive: /var/mail/archive, admin", "confQUEUE_LA"]
    {
        let entry = report.split("\n").skip_while(|l| !l.contains(unmapped)).nth(1).unwrap_or("");
        assert!(entry.contains("!! not mapped:"), "{unmapped} must be listed as not mapped:\n{report}");
    }

    // Routing through the imported configuration, DNS pinned to the loopback server.
    let dns = DnsServer::start(&[("remote.test.", &repo().join("tests/route/common/remote.test.zone"))]);
    std::fs::write(
        &cfg,
        format!("{config}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n", dns.addr),
    )
    .unwrap();
    let addresses = std::fs::read_to_string(repo().join("tests/import/debian8/expected/addresses")).unwrap();
    let mut routes = String::new();
    for line in addresses.lines().filter(|l| !l.trim().is_empty()) {
        let mut args = vec!["route", "--config", cfg.to_str().unwrap()];
        args.extend(line.split_whitespace());
        let (code, stdout, err) = postern(&args);
        assert_eq!(code, Some(0), "{line}: {err}");
        routes.push_str(&stdout);
    }
    assert!(addresses.lines().count() >= 15);
    golden("routes.txt", &routes.replace(&root, "{ROOT}"));
}
