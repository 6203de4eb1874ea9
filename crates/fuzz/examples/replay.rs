//! Runs one fuzz target on files: `cargo run -p postern-fuzz --example replay TARGET FILE...`
//! (to debug a crash AFL++ found).

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: replay TARGET FILE...");
    let target = postern_fuzz::target(&name).unwrap_or_else(|| panic!("no target {name}"));
    for file in args {
        eprintln!("{file}");
        target(&std::fs::read(&file).expect("readable"));
    }
}
