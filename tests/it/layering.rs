//! Architecture rules that a grep can hold: the spool commit (`Spool::commit(&envelope, ...)`,
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
            // redb's `tx.commit()` takes no argument; the spool's takes the envelope.
            if line.contains(".commit(&") || line.contains(".commit_batch(") || line.contains("Spool::commit") {
                offenders.push(format!("{}:{}: {}", f.strip_prefix(&root).unwrap().display(), n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "the spool commit outside queue::submit:\n{}", offenders.join("\n"));
    let submit = std::fs::read_to_string(&allowed[0]).unwrap();
    assert!(submit.contains("spool.commit_batch(&"), "queue::submit still commits");
}
