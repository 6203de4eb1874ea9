//! `postern route` as data: one folder per case in `tests/route/` (see its README). Each
//! case's output must equal its `expected` file; `POSTERN_BLESS=1` rewrites them.

use crate::support::dns::DnsServer;
use crate::support::{TempDir, postern_cli, repo};

/// Copies `common/` and then the case's own files into `dir`, with `{DNS}` replaced.
fn lay_out(case: &std::path::Path, dir: &std::path::Path, dns: &str) {
    for src in [repo().join("tests/route/common"), case.to_path_buf()] {
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name == "args" || name == "expected" {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap().replace("{DNS}", dns);
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
}

#[test]
fn route_cases() {
    let dns = DnsServer::start(&[("remote.test.", &repo().join("tests/route/common/remote.test.zone"))]);
    let mut cases: Vec<_> = std::fs::read_dir(repo().join("tests/route"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "at least 15 cases");
    let mut failed = Vec::new();
    for case in &cases {
        let dir = TempDir::new("route");
        lay_out(case, &dir.0, &dns.addr.to_string());
        let mut out = String::new();
        for line in std::fs::read_to_string(case.join("args")).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let mut args = vec!["route"];
            args.extend(line.split_whitespace());
            let (code, stdout) = postern_cli(&args, &dir.0.join("postern.toml"));
            assert_eq!(code, Some(0), "{}: {line}", case.display());
            out.push_str(&stdout);
        }
        let out = out.replace(&dir.0.display().to_string(), "{DIR}");
        if let Err(diff) = crate::support::golden(&case.join("expected"), &out) {
            failed.push(diff);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
