//! Architecture rules that a grep can hold: the spool commit (`Spool::commit(envelope, ...)`,
//! `Spool::commit_batch`) is called only by `queue::submit`, the one typed way into the queue.

use std::path::Path;

use crate::support::repo;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_queue_submit_commits_to_the_spool() {
    let root = repo();
    let mut files = Vec::new();
    for dir in ["crates", "bench", "tests/it"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "the walk found the sources");
    let allowed = [root.join("crates/queue/src/submit.rs")];
    let mut offenders = Vec::new();
    for f in &files {
        if f.starts_with(root.join("crates/spool")) || allowed.contains(f) || f.ends_with("layering.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if commits_to_the_spool(line) {
                offenders.push(format!("{}:{}: {}", f.strip_prefix(&root).unwrap().display(), n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "the spool commit outside queue::submit:\n{}", offenders.join("\n"));
    let submit = std::fs::read_to_string(&allowed[0]).unwrap();
    assert!(submit.lines().any(commits_to_the_spool), "queue::submit still commits");
}

/// Whether `line` calls the spool's commit: `.commit(` with an argument (the spool's takes the
/// envelope; redb's `tx.commit()` and a prepared message's `commit()` take none),
/// `.commit_batch(` or `Spool::commit` in any form.
fn commits_to_the_spool(line: &str) -> bool {
    let with_argument = line.match_indices(".commit(").any(|(i, m)| !line[i + m.len()..].starts_with(')'));
    with_argument || line.contains(".commit_batch(") || line.contains("Spool::commit")
}

#[test]
fn the_rule_sees_every_form_of_the_commit() {
    for call in [
        "spool.commit(&env, &trace, &msg)?;",
        "spool.commit(c.envelope, c.trace, c.message)?;",
        "self.spool.commit(\n",
        "spool.commit_batch(&commits)",
        "Spool::commit(&spool, env, t, m)",
    ] {
        assert!(commits_to_the_spool(call), "{call}");
    }
    for other in ["tx.commit()?;", "let c = prepared.commit();", "// committed"] {
        assert!(!commits_to_the_spool(other), "{other}");
    }
}

/// The code of the library crates under `dirs`, without test code: files of tests, and each
/// file from its `#[cfg(test)]` on (test modules come last). Each item: the file (relative to
/// the repository) and its text.
fn library_code(dirs: &[&str]) -> Vec<(String, String)> {
    let root = repo();
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty(), "the walk found the sources of {dirs:?}");
    files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            name != "tests.rs" && !name.ends_with("_tests.rs") && !f.components().any(|c| c.as_os_str() == "tests")
        })
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            (f.strip_prefix(&root).unwrap().display().to_string(), code)
        })
        .collect()
}

/// Every line of `code` in `files` containing one of `needles`, as `file:line: text`.
fn lines_with(files: &[(String, String)], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, code) in files {
        for (n, line) in code.lines().enumerate() {
            if !line.trim_start().starts_with("//") && needles.iter().any(|x| line.contains(x)) {
                found.push(format!("{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

/// Issue 29: after `queue::submit` the envelope stays typed; nothing is parsed back from text
/// in the queue, outbound delivery, reports or local delivery.
#[test]
fn envelope_data_is_never_parsed_back_after_the_queue() {
    let code = library_code(&["crates/queue/src", "crates/outbound/src", "crates/report/src", "crates/local/src"]);
    let parsed_back =
        ["Address::parse(", "Notify::parse(", "split_once('@')", "rsplit_once('@')", "strip_prefix(\"tls=\")"];
    let found = lines_with(&code, &parsed_back);
    assert!(found.is_empty(), "envelope data parsed back from text:\n{}", found.join("\n"));
    let planted =
        [("x.rs".to_owned(), "let a = Address::parse(&text)?;\n// Address::parse( in a comment\n".to_owned())];
    assert_eq!(lines_with(&planted, &parsed_back), ["x.rs:1: let a = Address::parse(&text)?;"]);
}

/// Issue 29: the inbound driver performs I/O and says why it refuses (`proto::Refusal`); the
/// replies are made in `proto` (and the crates whose checks decide).
#[test]
fn the_inbound_driver_builds_no_reply() {
    let code = library_code(&["crates/inbound/src"]);
    let found = lines_with(&code, &["Reply::new(", "Reply::plain(", "EnhancedStatus("]);
    assert!(found.is_empty(), "replies built by the inbound driver:\n{}", found.join("\n"));
}

/// Issue 29: errors are types; no function returns `Result<_, String>`.
#[test]
fn no_error_is_a_string() {
    let code = library_code(&["crates"]);
    let mut found = Vec::new();
    for (file, text) in &code {
        for (at, _) in text.match_indices("Result<") {
            if last_generic_argument(&text[at + "Result<".len()..]).is_some_and(|a| a == "String") {
                found.push(format!("{file}:{}", text[..at].lines().count()));
            }
        }
    }
    assert!(found.is_empty(), "Result<_, String> at:\n{}", found.join("\n"));
    assert_eq!(last_generic_argument("u8, String> {"), Some("String".into()));
    assert_eq!(last_generic_argument("BTreeMap<String, String>, Structure> {"), Some("Structure".into()));
    assert_eq!(last_generic_argument("Vec<u8>> {"), None, "one argument");
}

/// The last top-level argument of a generic list that starts just after its `<`, when there
/// are two or more.
fn last_generic_argument(after: &str) -> Option<String> {
    let (mut depth, mut start, mut commas) = (0usize, 0usize, 0usize);
    for (i, c) in after.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            '>' if depth == 0 => return (commas > 0).then(|| after[start..i].trim().to_owned()),
            '>' => depth -= 1,
            ',' if depth == 0 => {
                commas += 1;
                start = i + 1;
            }
            '{' | ';' => return None,
            _ => {}
        }
    }
    None
}
