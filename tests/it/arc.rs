//! ARC results as RFC 8617 defines them (issue 27): only `none`, `pass` and `fail`, every
//! structural or cryptographic error a `fail`. The chains are made by an independent signer,
//! Debian's dkimpy (`dkim.arc_sign`), then broken the ways a forger or a careless forwarder
//! breaks them; Postern B checks each one as it arrives from outside. (Structures that keep a
//! valid signature, such as `rsa-sha1` or an ARC-Message-Signature over an ARC-Seal, cannot be
//! made with dkimpy: `postern_auth::arc`'s unit tests hold them.)

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::authentication::{keygen, txt};
use crate::support::dns::DnsServer;
use crate::support::smtp::Client;
use crate::support::{Server, TempDir, repo};

/// `message` with an ARC set i=1 by dkimpy, sealed as d=`domain` s=`selector` with `key`
/// (dkimpy seals only a message with an `Authentication-Results: mx.a.test` field).
pub(crate) fn dkimpy_sealed(message: &str, key: &std::path::Path, selector: &str, domain: &str) -> String {
    dkimpy_run(message, key, selector, domain, "")
}

/// As [`dkimpy_sealed`], with an ARC-Message-Signature that has no `c=` tag and so is
/// `simple/simple` (RFC 6376 §3.5, which RFC 8617 §4.1.2 takes over): dkimpy always writes
/// `c=relaxed/relaxed`, so its signer is patched here to leave the tag out and canonicalize
/// simply.
fn dkimpy_sealed_without_c(message: &str, key: &std::path::Path) -> String {
    let patch = "import inspect,textwrap\nsrc=textwrap.dedent(inspect.getsource(dkim.ARC.sign))\nsrc=src.replace(\"canon_policy = CanonicalizationPolicy.from_c_value(b'relaxed/relaxed')\",\"canon_policy = CanonicalizationPolicy.from_c_value(b'relaxed/relaxed')\\n  ams_policy = CanonicalizationPolicy.from_c_value(b'simple/simple')\")\nsrc=src.replace('h.update(canon_policy.canonicalize_body(self.body))','h.update(ams_policy.canonicalize_body(self.body))')\nsrc=src.replace('res = self.gen_header(ams_fields, include_headers, canon_policy,','res = self.gen_header(ams_fields, include_headers, ams_policy,')\nsrc=src.replace(\"(b'c', b'relaxed/relaxed'),\",'')\nns={}\nexec(src,dkim.__dict__,ns)\ndkim.ARC.sign=ns['sign']\n";
    dkimpy_run(message, key, "arc", "a.test", patch)
}

fn dkimpy_run(message: &str, key: &std::path::Path, selector: &str, domain: &str, patch: &str) -> String {
    let script = format!(
        "import dkim,sys\n{patch}m=sys.stdin.buffer.read()\nk=open({:?},'rb').read()\nh=dkim.arc_sign(m,{selector:?}.encode(),{domain:?}.encode(),k,b'mx.a.test')\nsys.stdout.buffer.write(b''.join(h)+m)\n",
        key.display().to_string()
    );
    String::from_utf8(python(&script, message, "dkimpy arc_sign")).unwrap()
}

#[test]
fn arc_results_are_none_pass_or_fail() {
    let keys = TempDir::new("arc-keys");
    let (_, arc_txt) = keygen(&keys.0, "arc", "rsa");
    let dns = DnsServer::start(&[("test.", &repo().join("tests/fixtures/dns/relay.test.zone"))]);
    dns.upsert("test.", "arc._domainkey.a.test.", 300, txt(&arc_txt));
    let b = Server::start_with("relay-b", |t| {
        t.replace("verify = false", "verify = true").replace("{NO_DNS}", &dns.addr.to_string())
    });
    let original = "Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=a.test\r\nFrom: list@soft.test\r\nTo: bob@b.test\r\nSubject: arc\r\n\r\nHello Bob.\r\n";
    let sealed = dkimpy_sealed(original, &keys.0.join("arc.key"), "arc", "a.test");
    let without_c = dkimpy_sealed_without_c(original, &keys.0.join("arc.key"));
    let ams = without_c.split("ARC-Message-Signature:").nth(1).unwrap().split("\r\nARC-").next().unwrap();
    assert!(!ams.contains("c=") && ams.contains("bh="), "the signer was not patched: {ams}");
    assert!(sealed.starts_with("ARC-Seal: i=1; cv=none"), "{sealed}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("no ARC", original.to_owned(), "arc=none"),
        ("dkimpy's chain", sealed.clone(), "arc=pass"),
        ("a body changed after sealing", sealed.replace("Hello Bob.", "Hello Bob!"), "arc=fail"),
        ("cv=pass at i=1", sealed.replacen("cv=none", "cv=pass", 1), "arc=fail"),
        ("a tag given twice", sealed.replacen("ARC-Seal: i=1;", "ARC-Seal: i=1; i=1;", 1), "arc=fail"),
        ("rsa-sha1 claimed", sealed.replacen("a=rsa-sha256", "a=rsa-sha1", 1), "arc=fail"),
        (
            "no instance",
            sealed.replacen("ARC-Authentication-Results: i=1;", "ARC-Authentication-Results:", 1),
            "arc=fail",
        ),
        ("an AMS without c= (simple/simple)", without_c.clone(), "arc=pass"),
        (
            "a second set i=1",
            sealed.replacen("ARC-Seal:", &format!("{}ARC-Seal:", sealed.split("From:").next().unwrap()), 1),
            "arc=fail",
        ),
    ];
    let (mut c, _) = Client::connect_from("127.0.0.3", b.port);
    c.cmd("EHLO relay.soft.test");
    for (n, (what, message, want)) in cases.iter().enumerate() {
        let r = c.send_data("list@soft.test", &["bob@b.test"], message.as_bytes());
        assert_eq!(r.code, 250, "{what}: {}", r.text);
        let text = std::fs::read_to_string(&b.wait_maildir("bob", n + 1)[n]).unwrap();
        let ar = text.split("\n\n").next().unwrap().split("Authentication-Results: mx.b.test;").nth(1).unwrap_or("");
        let ar = ar.split("\nReceived-SPF").next().unwrap();
        assert!(ar.contains(want), "{what}: want {want} in {ar}");
        for odd in ["arc=neutral", "arc=permerror", "arc=temperror"] {
            assert!(!ar.contains(odd), "{what}: {odd} is no RFC 8617 result: {ar}");
        }
    }
    // A message with no header fields at all still gets an ARC result.
    let r = c.send_data("list@soft.test", &["bob@b.test"], b"\r\nno header fields\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    let n = cases.len();
    let text = std::fs::read_to_string(&b.wait_maildir("bob", n + 1)[n]).unwrap();
    assert!(text.contains("arc=none"), "{text}");
}

/// dkimpy's verdict on the ARC chain of `message` (LF or CRLF): its `cv` (`pass`, `fail`,
/// `none`), with the keys `txts` (name with trailing dot → TXT value) served to it.
pub(crate) fn dkimpy_arc_cv(message: &str, txts: &[(&str, &str)]) -> String {
    let table: Vec<String> = txts.iter().map(|(n, v)| format!("{n:?}.encode():{v:?}.encode()")).collect();
    let script = format!(
        "import dkim,sys\nm=sys.stdin.buffer.read().replace(b'\\r\\n',b'\\n').replace(b'\\n',b'\\r\\n')\nt={{{}}}\ncv,res,why=dkim.arc_verify(m,dnsfunc=lambda n,timeout=5: t.get(n))\nprint(cv.decode() if cv else repr(cv), why)\n",
        table.join(",")
    );
    String::from_utf8_lossy(&python(&script, message, "dkimpy arc_verify")).into_owned()
}

/// Debian's python3 running `script` with `input` on stdin; its stdout (it must succeed:
/// `what` names it in the failure).
fn python(script: &str, input: &str, what: &str) -> Vec<u8> {
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3-dkim: `bash scripts/test` installs it");
    py.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
