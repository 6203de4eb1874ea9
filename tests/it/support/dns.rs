//! A real DNS server on loopback for tests: hickory-server in-process (its own thread and
//! runtime), serving zone files from `tests/fixtures/dns/`, UDP and TCP on one ephemeral port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::store::file::{FileConfig, FileZoneHandler};
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// A running DNS server; stopped when dropped (its thread ends with the test process).
pub struct DnsServer {
    pub addr: SocketAddr,
    zones: Vec<(String, Arc<FileZoneHandler>)>,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// How a zone of [`DnsServer::start_signed`] is signed (DNSSEC, RFC 4035).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Not signed, and no trust anchor covers it.
    Unsigned,
    /// Signed with a key made now; the trust anchors hold its DNSKEY.
    Signed,
    /// Signed with one key while the trust anchors hold another: every answer is bogus.
    Bogus,
}

/// A zone signing key made at test time (ECDSA P-256, RFC 6605) and its DNSKEY.
fn zone_key(origin: &Name) -> (hickory_server::proto::dnssec::DnssecSigner, String) {
    use hickory_server::proto::dnssec::crypto::EcdsaSigningKey;
    use hickory_server::proto::dnssec::rdata::DNSKEY;
    use hickory_server::proto::dnssec::{Algorithm, DnssecSigner, SigningKey as _};
    let pkcs8 = EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256).unwrap();
    let key = EcdsaSigningKey::from_pkcs8(&pkcs8, Algorithm::ECDSAP256SHA256).unwrap();
    let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
    let text = dnskey.to_string();
    (DnssecSigner::new(dnskey, Box::new(key), origin.clone(), Duration::from_secs(86_400)), text)
}

impl DnsServer {
    /// Serves each `(origin, zone file)` pair.
    pub fn start(zones: &[(&str, &Path)]) -> Self {
        let zones: Vec<(String, std::path::PathBuf, Signing)> =
            zones.iter().map(|(o, p)| ((*o).to_owned(), p.to_path_buf(), Signing::Unsigned)).collect();
        Self::serve(zones, Vec::new()).0
    }

    /// Serves each `(origin, zone file, signing)`, signing zones at start; returns the server
    /// and the trust anchors of the signed zones (`NAME 300 IN DNSKEY ...` lines, the form of
    /// `[dns] trust_anchor`).
    pub fn start_signed(zones: &[(&str, &Path, Signing)]) -> (Self, String) {
        Self::serve(zones.iter().map(|(o, p, s)| ((*o).to_owned(), p.to_path_buf(), *s)).collect(), Vec::new())
    }

    /// Serves the zone `origin` of the file `zone`, never answering the queries in
    /// `timeouts`: (name, type), or (name, `None`) for every type of that name. A resolver
    /// asking them times out, as on a broken path to an authoritative server.
    pub fn start_with_timeouts(origin: &str, zone: &Path, timeouts: Vec<(Name, Option<RecordType>)>) -> Self {
        Self::serve(vec![(origin.to_owned(), zone.to_path_buf(), Signing::Unsigned)], timeouts).0
    }

    fn serve(
        zones: Vec<(String, std::path::PathBuf, Signing)>,
        timeouts: Vec<(Name, Option<RecordType>)>,
    ) -> (Self, String) {
        use hickory_server::zone_handler::DnssecZoneHandler as _;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut catalog = Catalog::new();
                let mut handlers = Vec::new();
                let mut anchors = String::new();
                for (origin, path, signing) in &zones {
                    let name = Name::from_ascii(origin).unwrap();
                    let nsec = (*signing != Signing::Unsigned).then_some(hickory_server::dnssec::NxProofKind::Nsec);
                    let h = FileZoneHandler::try_from_config(
                        name.clone(),
                        ZoneType::Primary,
                        AxfrPolicy::Deny,
                        None,
                        &FileConfig { zone_path: path.clone() },
                        nsec,
                    )
                    .unwrap();
                    if *signing != Signing::Unsigned {
                        let (signer, dnskey) = zone_key(&name);
                        let anchor = if *signing == Signing::Bogus { zone_key(&name).1 } else { dnskey };
                        anchors.push_str(&format!("{origin} 300 IN DNSKEY {anchor}\n"));
                        h.add_zone_signing_key(signer).await.unwrap();
                        h.secure_zone().await.unwrap();
                    }
                    let h = Arc::new(h);
                    catalog.upsert(LowerName::new(&name), vec![h.clone()]);
                    handlers.push((origin.clone(), h));
                }
                // UDP and TCP on the same port: the resolver uses one port for both.
                let (udp, tcp) = loop {
                    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                        break (udp, tcp);
                    }
                };
                let addr = udp.local_addr().unwrap();
                let timeouts = timeouts.into_iter().map(|(n, t)| (LowerName::new(&n), t)).collect();
                let mut server = Server::new(Timeouts { catalog, timeouts });
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(5), 65535);
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                tx.send((addr, handlers, tokio::runtime::Handle::current(), stop_tx, anchors)).unwrap();
                let _ = stop_rx.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        let (addr, zones, runtime, stop, anchors) = rx.recv().unwrap();
        (Self { addr, zones, runtime, _stop: stop }, anchors)
    }

    /// The fixture zone `example.test`.
    pub fn example() -> Self {
        let path = crate::support::repo().join("tests/fixtures/dns/example.test.zone");
        Self::start(&[("example.test.", &path)])
    }

    /// Adds or replaces a record in the zone of `origin`.
    pub fn upsert(&self, origin: &str, name: &str, ttl: u32, data: RData) {
        self.upsert_record(origin, Name::from_ascii(name).unwrap(), ttl, data);
    }

    /// As [`DnsServer::upsert`], for a name already parsed (any bytes in its labels).
    pub fn upsert_record(&self, origin: &str, name: Name, ttl: u32, data: RData) {
        let (_, zone) = self.zones.iter().find(|(o, _)| o == origin).expect("zone served");
        let zone = zone.clone();
        let record = Record::from_rdata(name, ttl, data);
        let serial = 2 + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
        self.runtime.block_on(async move { zone.upsert(record, serial).await });
    }
}

/// A catalog that leaves some queries unanswered ([`DnsServer::start_with_timeouts`]).
struct Timeouts {
    catalog: Catalog,
    timeouts: Vec<(LowerName, Option<RecordType>)>,
}

#[async_trait::async_trait]
impl hickory_server::server::RequestHandler for Timeouts {
    async fn handle_request<R: hickory_server::server::ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &hickory_server::server::Request,
        response_handle: R,
    ) -> hickory_server::server::ResponseInfo {
        if let Ok(info) = request.request_info() {
            let (name, kind) = (info.query.name(), info.query.query_type());
            if self.timeouts.iter().any(|(n, t)| n == name && t.is_none_or(|t| t == kind)) {
                // Never answered: the resolver's own timeout decides.
                return std::future::pending().await;
            }
        }
        self.catalog.handle_request::<R, T>(request, response_handle).await
    }
}

/// A "name server" that never answers: UDP and TCP bound, nothing read. Lookups time out.
pub struct SilentDns {
    pub addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl SilentDns {
    pub fn start() -> Self {
        loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = std::net::TcpListener::bind(addr) {
                return Self { addr, _udp: udp, _tcp: tcp };
            }
        }
    }
}

/// The address (`127.0.0.1:PORT`) of the one [`ServfailDns`] of this test process: the DNS of
/// every test that needs "no DNS". Each lookup fails at once as a temporary error, where a
/// silent port would cost the whole resolver timeout on every attempt.
pub fn no_dns() -> String {
    static NO_DNS: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    NO_DNS.get_or_init(|| ServfailDns::start().addr).to_string()
}

/// A name server that answers every UDP query with SERVFAIL (RCODE 2, RFC 1035 §4.1.1): a
/// broken recursive resolver or an authoritative server in trouble.
pub struct ServfailDns {
    pub addr: SocketAddr,
}

impl ServfailDns {
    pub fn start() -> Self {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                // Same ID and question; QR=1, RD/RA set, RCODE=2; no answers.
                let mut reply = buf[..n].to_vec();
                reply[2] = 0x80 | (buf[2] & 0x01);
                reply[3] = 0x80 | 0x02;
                reply[6..12].fill(0);
                let _ = udp.send_to(&reply, from);
            }
        });
        Self { addr }
    }
}

#[test]
fn no_dns_answers_servfail_at_once() {
    use dns_probe::query;
    assert_eq!(query(&no_dns()), 2, "SERVFAIL");
}

/// A raw DNS query for the test of [`no_dns`].
mod dns_probe {
    /// Sends one A query for `example.test` to `addr`; returns the reply's RCODE (a silent
    /// server fails the read).
    pub(super) fn query(addr: &str) -> u8 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(crate::support::wait_bound())).unwrap();
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["example", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        s.send_to(&q, addr).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert!(n >= 12 && buf[..2] == [0x12, 0x34] && buf[2] & 0x80 != 0, "a reply to our query");
        buf[3] & 0x0f
    }
}
