//! Replays every committed input of every fuzz target: the seed corpora (`fuzz/seeds/TARGET/`)
//! and the crashes found and fixed (`fuzz/regressions/TARGET/`, one file each, named after what
//! they caught). A crash that comes back fails here, in the ordinary test run.

use std::path::PathBuf;

fn folder(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join(target)
}

#[test]
fn every_seed_and_regression_input_runs_clean() {
    let mut ran = 0;
    for (name, target) in postern_fuzz::TARGETS {
        let seeds = folder("seeds", name);
        assert!(seeds.is_dir(), "target {name} has no seed corpus at {}", seeds.display());
        for kind in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(folder(kind, name)) else { continue };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} crashes the target", path.display());
                ran += 1;
            }
        }
    }
    assert!(ran > 100, "only {ran} inputs replayed");
}
