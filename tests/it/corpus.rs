//! The message corpus: generated messages with the shapes that MTAs have corrupted (binary
//! attachments, 8-bit and UTF-8 headers, 998-octet lines, leading dots, a malformed
//! Content-Disposition, no trailing newline...). Each must be delivered exactly as sent, apart
//! from the prepended trace headers and CRLF → LF (Maildir files are stored with LF).

use std::collections::HashMap;

use crate::support::Server;
use crate::support::smtp::Client;

/// Deterministic xorshift, so that a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn base64_lines(data: &[u8]) -> String {
    let s = crate::support::base64(data);
    s.as_bytes().chunks(76).map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap())).collect()
}

/// The corpus: `(name, bytes)`, at least 50 messages.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut out = Vec::new();
    for i in 0..60 {
        let head = format!(
            "From: Sender {i} <sender{i}@remote.test>\r\nTo: bob@example.test\r\nMessage-ID: <corpus-{i}@remote.test>\r\n"
        );
        let (name, msg): (&str, Vec<u8>) = match i % 10 {
            0 => {
                let n = 1 + (rng.next() % 60_000) as usize;
                let att = rng.bytes(n);
                let body = format!(
                    "{head}Subject: binary attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b{i}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b{i}--\r\n",
                    base64_lines(&att)
                );
                ("multipart-binary", body.into_bytes())
            }
            1 => ("utf8-headers", format!("{head}Subject: Grüße aus Köln — 日本語の件名 {i}\r\nFrom-Name: Jörg Müller\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄpfel, Birnen und Pflaumen. Ça va? Ωμέγα.\r\n").into_bytes()),
            2 => {
                let mut m = format!("{head}Subject: latin-1 8bit\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").into_bytes();
                m.extend_from_slice(b"Caf\xe9 cr\xe8me br\xfbl\xe9e \xa9 \xff\xfe\r\n");
                ("8bit-latin1", m)
            }
            3 => {
                let line: String = (0..998).map(|k| (b'a' + (k % 26) as u8) as char).collect();
                ("998-octet-lines", format!("{head}Subject: long lines\r\n\r\n{line}\r\n{line}\r\nend\r\n").into_bytes())
            }
            4 => ("leading-dots", format!("{head}Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.hidden\r\n. space\r\nmid.dle\r\n.\r\n").into_bytes()),
            5 => ("unterminated-filename-quote", format!("{head}Subject: broken MIME\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x{i}\r\n\r\n--x{i}\r\nContent-Type: application/pdf; name=\"r\u{e9}sum\u{e9}.pdf\r\nContent-Disposition: attachment; filename=\"report {i}.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--x{i}--\r\n", base64_lines(&rng.bytes(900))).into_bytes()),
            6 => ("no-trailing-newline", format!("{head}Subject: no newline at end\r\n\r\nlast line without CRLF {i}").into_bytes()),
            7 => ("headers-only-folded-whitespace", format!("{head}Subject: folded\r\n  continuation with trailing spaces   \r\n\tand a tab\t\r\nX-Empty:\r\nX-Trailing: value   \r\n\r\n").into_bytes()),
            8 => ("quoted-printable", format!("{head}Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSoft=\r\n break and =3D sign and a very long line that goes on and on and on and on and on =\r\nuntil here.\r\n").into_bytes()),
            _ => {
                let mut body = format!("{head}Subject: random text {i}\r\n\r\n");
                for _ in 0..(rng.next() % 200) {
                    let words = (rng.next() % 15) as usize;
                    let line: Vec<String> = (0..words).map(|_| format!("w{}", rng.next() % 1000)).collect();
                    body.push_str(&line.join(" "));
                    body.push_str("\r\n");
                }
                ("random-text", body.into_bytes())
            }
        };
        out.push((format!("{i:02}-{name}"), msg));
    }
    out
}

fn lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[test]
fn corpus_is_delivered_byte_for_byte() {
    let corpus = corpus();
    assert!(corpus.len() >= 50);
    let server = Server::start();
    let (mut c, _) = Client::connect(server.port);
    c.cmd("EHLO corpus.test");
    // Queue ID → (name, what must be in the Maildir after the trace headers).
    let mut expected: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    for (n, (name, msg)) in corpus.iter().enumerate() {
        // Even messages by DATA (a missing final CRLF is added by the client, as SMTP requires),
        // odd ones by BDAT in odd-sized chunks (sent exactly, even without a final CRLF).
        let (reply, sent) = if n % 2 == 0 {
            let mut sent = msg.clone();
            if !sent.ends_with(b"\r\n") {
                sent.extend_from_slice(b"\r\n");
            }
            (c.send_data("sender@remote.test", &["bob@example.test"], msg), sent)
        } else {
            (c.send_bdat("sender@remote.test", &["bob@example.test"], msg, 997 + n), msg.clone())
        };
        assert_eq!(reply.code, 250, "{name}: {}", reply.text);
        let id = reply.text.trim_end().rsplit(' ').next().unwrap().to_owned();
        expected.insert(id, (name.clone(), lf(&sent)));
    }
    let files = server.wait_maildir("bob", corpus.len());
    for f in files {
        let got = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&got);
        let id = text.split(" id ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        let (name, want) = expected.remove(&id).unwrap_or_else(|| panic!("unexpected delivery {id}"));
        assert!(got.ends_with(&want), "{name}: body differs from what was sent");
        // What precedes it is exactly the trace: Return-Path, Delivered-To, Received (3 lines).
        let prefix = String::from_utf8(got[..got.len() - want.len()].to_vec()).unwrap();
        let lines: Vec<&str> = prefix.lines().collect();
        assert_eq!(lines.len(), 5, "{name}: prefix {prefix:?}");
        assert!(lines[0].starts_with("Return-Path: <sender@remote.test>"));
        assert!(lines[1].starts_with("Delivered-To: bob@example.test"));
        assert!(lines[2].starts_with("Received: from corpus.test ([127.0.0.1])"));
        assert!(lines[3].starts_with("\tby mx.example.test (Postern) with ESMTP id "));
        assert!(lines[4].starts_with("\tfor <bob@example.test>; "));
    }
    assert!(expected.is_empty());
}
