//! The AFL++ entry point: runs the fuzz target named by `$POSTERN_FUZZ_TARGET` (one of
//! `postern_fuzz::TARGETS`) on each input AFL++ hands over, in persistent mode.

fn main() {
    let name = std::env::var("POSTERN_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = postern_fuzz::target(&name) else {
        let names: Vec<&str> = postern_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("postern-fuzz-afl: set POSTERN_FUZZ_TARGET to one of: {}", names.join(" "));
        std::process::exit(64);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
