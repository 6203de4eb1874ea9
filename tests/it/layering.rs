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
