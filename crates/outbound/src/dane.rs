//! DANE for SMTP (RFC 7672): which MX hosts of a destination are DANE-secured, and the
//! certificate check against their TLSA records.
//!
//! A host is DANE-secured when the domain's MX records, the host's addresses and its
//! `_PORT._tcp.HOST` TLSA records all validate with DNSSEC (§2.2) and at least one record is
//! usable: DANE-TA(2) or DANE-EE(3), selector full certificate(0) or SPKI(1), matching type
//! exact(0), SHA-256(1) or SHA-512(2) (§3.1; PKIX usages 0 and 1 are not for SMTP). The
//! certificate then matches a DANE-EE record (no name, expiry or chain check, §3.1.1), or
//! chains to a certificate of the presented chain that matches a DANE-TA record, and names the
//! MX host (§3.1.2, §3.2.2). Anything that does not validate is never a reason to send in clear
//! text: a bogus answer defers.

use std::sync::Arc;

use postern_dns::dnssec::{DnssecResolver, Secured, Tlsa};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Whether a record can be used for SMTP (RFC 7672 §3.1).
pub fn usable(t: &Tlsa) -> bool {
    matches!(t.usage, 2 | 3) && t.selector <= 1 && t.matching <= 2
}

/// Whether `cert` (DER) matches `t` (RFC 6698 §2.1.2, §2.1.3).
pub fn matches(t: &Tlsa, cert: &[u8]) -> bool {
    let selected: Vec<u8> = match t.selector {
        0 => cert.to_vec(),
        1 => match webpki::anchor_from_trusted_cert(&CertificateDer::from(cert)) {
            Ok(anchor) => webpki::spki_for_anchor(&anchor).as_ref().to_vec(),
            Err(_) => return false,
        },
        _ => return false,
    };
    match t.matching {
        0 => selected == t.data,
        1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == t.data.as_slice(),
        2 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == t.data.as_slice(),
        _ => false,
    }
}

/// The `3 1 1` TLSA record (DANE-EE, SPKI, SHA-256) of the certificate `cert` (DER), in
/// presentation form; `None` when it does not parse.
pub fn record_3_1_1(cert: &[u8]) -> Option<String> {
    let der = CertificateDer::from(cert);
    let anchor = webpki::anchor_from_trusted_cert(&der).ok()?;
    let spki = webpki::spki_for_anchor(&anchor);
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("3 1 1 {hex}"))
}

/// How `end_entity` and its `intermediates` fare against `records` for `name`: `None` when
/// one matches (RFC 7672 §3.1), else why not.
pub fn check(
    records: &[Tlsa],
    end_entity: &[u8],
    intermediates: &[&[u8]],
    name: &ServerName<'_>,
    now: UnixTime,
) -> Option<String> {
    let usable: Vec<&Tlsa> = records.iter().filter(|t| usable(t)).collect();
    if usable.iter().any(|t| t.usage == 3 && matches(t, end_entity)) {
        return None;
    }
    let mut chain_error = None;
    for ta in usable.iter().filter(|t| t.usage == 2) {
        for cert in intermediates.iter().filter(|c| matches(ta, c)) {
            match chain_to(cert, end_entity, intermediates, name, now) {
                Ok(()) => return None,
                Err(e) => chain_error = Some(format!("the chain to the DANE-TA certificate does not verify: {e}")),
            }
        }
    }
    if chain_error.is_some() {
        return chain_error;
    }
    Some("no TLSA record matches the certificate".into())
}

/// Verifies `end_entity` for `name` with `anchor` as the only trust anchor.
fn chain_to(
    anchor: &[u8],
    end_entity: &[u8],
    intermediates: &[&[u8]],
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(anchor.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let chain: Vec<CertificateDer<'_>> = intermediates.iter().map(|c| CertificateDer::from(*c)).collect();
    verifier.verify_server_cert(&CertificateDer::from(end_entity), &chain, name, &[], now).map(|_| ())
}

/// What DANE says of one MX host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostDane {
    /// Not DANE-secured (insecure zone, no TLSA records): the destination's policy applies.
    #[default]
    None,
    /// DANE-secured by these records (at least one usable).
    Tlsa(Arc<Vec<Tlsa>>),
    /// The host must not be used now: a lookup was bogus (`bogus` true) or failed.
    Unusable { why: String, bogus: bool },
}

/// Whether `domain`'s MX records validate: `Ok(true)` secure, `Ok(false)` not (no DANE), or
/// the bogus or failed answer (RFC 7672 §2.2.1).
///
/// # Errors
/// `(bogus, why)`.
pub async fn secure_mx(dnssec: &DnssecResolver, domain: &str) -> Result<bool, (bool, String)> {
    match dnssec.mx(domain).await {
        Secured::Secure(mx) => Ok(!mx.is_empty()),
        Secured::Insecure => Ok(false),
        Secured::Bogus(e) => Err((true, e)),
        Secured::TempFail(e) => Err((false, e)),
    }
}

/// What DANE says of `host` (an MX of a domain whose MX records validated), port `port`.
pub async fn host(dnssec: &DnssecResolver, host: &str, port: u16) -> HostDane {
    match dnssec.addresses(host).await {
        Secured::Secure(_) => {}
        Secured::Insecure => return HostDane::None,
        Secured::Bogus(why) => return HostDane::Unusable { why, bogus: true },
        Secured::TempFail(why) => return HostDane::Unusable { why, bogus: false },
    }
    match dnssec.tlsa(host, port).await {
        Secured::Secure(records) if records.iter().any(usable) => HostDane::Tlsa(Arc::new(records)),
        Secured::Secure(_) | Secured::Insecure => HostDane::None,
        Secured::Bogus(why) => HostDane::Unusable { why, bogus: true },
        Secured::TempFail(why) => HostDane::Unusable { why, bogus: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["mx.a.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        use rcgen::PublicKeyData as _;
        (c.der().to_vec(), key.subject_public_key_info())
    }

    #[test]
    fn selectors_and_matching_types() {
        let (der, spki) = cert();
        let sha256 = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec();
        let sha512 = |b: &[u8]| ring::digest::digest(&ring::digest::SHA512, b).as_ref().to_vec();
        for (selector, matching, data) in [
            (0, 0, der.clone()),
            (0, 1, sha256(&der)),
            (1, 0, spki.clone()),
            (1, 1, sha256(&spki)),
            (1, 2, sha512(&spki)),
        ] {
            let t = Tlsa { usage: 3, selector, matching, data };
            assert!(matches(&t, &der), "{t}");
        }
        let hex: String = sha256(&spki).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(record_3_1_1(&der), Some(format!("3 1 1 {hex}")));
        let wrong = Tlsa { usage: 3, selector: 1, matching: 1, data: sha256(b"other") };
        assert!(!matches(&wrong, &der));
        let name = ServerName::try_from("mx.a.test").unwrap();
        let now = UnixTime::now();
        assert_eq!(
            check(&[Tlsa { usage: 3, selector: 1, matching: 1, data: sha256(&spki) }], &der, &[], &name, now),
            None
        );
        assert!(check(&[wrong], &der, &[], &name, now).is_some());
        // A PKIX-EE record is not for SMTP (RFC 7672 §3.1.3), even when it matches.
        let pkix = Tlsa { usage: 1, selector: 1, matching: 1, data: sha256(&spki) };
        assert!(!usable(&pkix) && check(&[pkix], &der, &[], &name, now).is_some());
    }
}
