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
    let basic = repo().join("tests/fixtures/basic/postern.toml");
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
        let (code, _, err) = check(&["--config", config.to_str().unwrap()]);
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(code, 2, "{name}: must fail, stderr: {err}");
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
