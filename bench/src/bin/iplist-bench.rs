//! Block-list benchmark (`bench/policy.sh`): writes a file of N random IPv4 and M random IPv6
//! networks, loads it as `[policy] block_networks_file` does (`IpList::parse`), and measures the
//! load time, the lookup time (hits and misses mixed) and the memory the list holds (the
//! process's resident set before and after). Bounded by the counts given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use clap::Parser;
use postern_policy::screen::IpList;

#[derive(Debug, Parser)]
struct Args {
    /// IPv4 networks in the file.
    #[arg(long, default_value_t = 1_000_000)]
    v4: usize,
    /// IPv6 networks in the file.
    #[arg(long, default_value_t = 100_000)]
    v6: usize,
    /// Lookups to time.
    #[arg(long, default_value_t = 2_000_000)]
    lookups: usize,
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut text = String::with_capacity(args.v4 * 20 + args.v6 * 30);
    for _ in 0..args.v4 {
        let ip = Ipv4Addr::from(rng.next() as u32);
        // Mostly single addresses, as attack lists are, some /24s.
        if rng.next().is_multiple_of(10) {
            let o = ip.octets();
            text.push_str(&format!("{}.{}.{}.0/24\n", o[0], o[1], o[2]));
        } else {
            text.push_str(&format!("{ip}\n"));
        }
    }
    for _ in 0..args.v6 {
        let ip = Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next()));
        let seg = ip.segments();
        text.push_str(&format!("{:x}:{:x}:{:x}:{:x}::/64\n", seg[0], seg[1], seg[2], seg[3]));
    }
    let path = std::env::temp_dir().join(format!("postern-iplist-{}.txt", std::process::id()));
    std::fs::write(&path, &text)?;
    drop(text);
    let before = rss_kib();
    let start = Instant::now();
    let loaded = std::fs::read_to_string(&path)?;
    let list = IpList::parse(&loaded).map_err(|(n, w)| anyhow::anyhow!("line {n}: {w}"))?;
    drop(loaded);
    let load = start.elapsed();
    let after = rss_kib();
    let _ = std::fs::remove_file(&path);
    let probes: Vec<IpAddr> = (0..1024u32)
        .map(|i| {
            if i.is_multiple_of(2) {
                IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next())))
            }
        })
        .collect();
    let start = Instant::now();
    let mut hits = 0usize;
    for i in 0..args.lookups {
        hits += usize::from(list.contains(probes[i % probes.len()]));
    }
    let lookup = start.elapsed();
    println!(
        "| networks in file | ranges after merging | load (read + parse + sort) | lookup | list memory | process RSS growth |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} IPv4 + {} IPv6 | {} | {:.3} s | {:.0} ns | {:.1} MiB | {:.1} MiB |",
        args.v4,
        args.v6,
        list.len(),
        load.as_secs_f64(),
        lookup.as_nanos() as f64 / args.lookups as f64,
        list.heap_bytes() as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
    eprintln!("({hits} hits in {} lookups)", args.lookups);
    Ok(())
}
