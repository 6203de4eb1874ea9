//! The resolver (crates/dns) against a real DNS server on loopback.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_server::proto::rr::RData;
use hickory_server::proto::rr::rdata::A;
use postern_dns::{Answer, DnsSettings, HickoryResolver, Mx, Resolver};

use crate::support::dns::{DnsServer, SilentDns};

fn resolver(addr: std::net::SocketAddr, timeout: Duration) -> HickoryResolver {
    HickoryResolver::new(&DnsSettings { nameservers: vec![addr], timeout, attempts: 1 }).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn lookups_against_zone_fixture() {
    let dns = DnsServer::example();
    let r = resolver(dns.addr, Duration::from_secs(2));
    rt().block_on(async {
        let Answer::Found(mut mx) = r.mx("example.test").await else { panic!("no MX") };
        mx.sort_by_key(|m| (m.preference, m.exchange.clone()));
        assert_eq!(mx[0], Mx { preference: 10, exchange: "mx1.example.test".into() });
        assert_eq!(mx.len(), 3);
        assert_eq!(r.mx("nomx.example.test").await, Answer::NotFound, "NODATA");
        assert_eq!(r.mx("missing.example.test").await, Answer::NotFound, "NXDOMAIN");
        assert_eq!(
            r.mx("nullmx.example.test").await,
            Answer::Found(vec![Mx { preference: 0, exchange: String::new() }])
        );
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(r.ipv4("mx2.example.test").await, Answer::Found(vec![v4("127.0.0.2")]));
        assert_eq!(r.ipv6("mx2.example.test").await, Answer::Found(vec![v4("::1")]));
        assert_eq!(r.ipv6("mx1.example.test").await, Answer::NotFound);
        // CNAMEs are followed.
        assert_eq!(r.ipv4("alias.example.test").await, Answer::Found(vec![v4("127.0.0.1")]));
        // TXT strings of one record are concatenated.
        assert_eq!(r.txt("txt.example.test").await, Answer::Found(vec!["v=spf1 ip4:127.0.0.1 -all".into()]));
    });
}

#[test]
fn cache_honours_ttl() {
    let dns = DnsServer::example();
    let r = resolver(dns.addr, Duration::from_secs(2));
    let rt = rt();
    // Within its TTL (an hour) the cached answer is served, although the zone changed: far
    // more time than the test can take, so the check is never skipped.
    let long = rt.block_on(r.ipv4("long.example.test"));
    assert_eq!(long, Answer::Found(vec!["127.0.0.12".parse().unwrap()]));
    dns.upsert("example.test.", "long.example.test.", 3600, RData::A(A("127.0.0.13".parse().unwrap())));
    assert_eq!(rt.block_on(r.ipv4("long.example.test")), long, "answer must come from the cache within its TTL");
    // After its TTL (1 s) the new answer is served, without any restart (poll with a deadline).
    // `upsert` adds the address to the RRset, so the fresh answer holds both.
    let first = rt.block_on(r.ipv4("short.example.test"));
    assert_eq!(first, Answer::Found(vec!["127.0.0.10".parse().unwrap()]));
    dns.upsert("example.test.", "short.example.test.", 1, RData::A(A("127.0.0.11".parse().unwrap())));
    let new: IpAddr = "127.0.0.11".parse().unwrap();
    crate::support::poll("the new A record after TTL expiry", || match rt.block_on(r.ipv4("short.example.test")) {
        Answer::Found(ips) if ips.contains(&new) => Some(()),
        _ => None,
    });
}

#[test]
fn silent_server_is_a_temporary_failure() {
    let dns = SilentDns::start();
    let r = resolver(dns.addr, Duration::from_millis(300));
    let start = Instant::now();
    let answer = rt().block_on(r.mx("example.test"));
    assert!(matches!(answer, Answer::TempFail(_)), "{answer:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "timeout must be bounded: {:?}", start.elapsed());
}
