//! A milter filter of our own for tests (the filter side of the protocol, written here from
//! libmilter's wire format, not with Postern's codec): answers every step with `continue` and
//! decides at end of message by the Subject: `reject me` (a reply code), `discard me`,
//! `quarantine me`, `edit me` (every end-of-message action), the hostile `grow me`, `one huge
//! packet`, `fold me` and `split my reply`, anything else `continue`. It
//! records the commands and macros it received.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// (command byte, data) of every packet received.
pub type Seen = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// A running test milter on 127.0.0.1:`port`.
pub struct TestMilter {
    pub port: u16,
    /// (command byte, data) of every packet received, across connections.
    pub seen: Seen,
}

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(code);
    p.extend_from_slice(data);
    p
}

fn z(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.bytes().chain(std::iter::once(0))).collect()
}

impl TestMilter {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut subject = String::new();
                    loop {
                        let mut len = [0u8; 4];
                        if s.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut data = vec![0; u32::from_be_bytes(len) as usize];
                        if s.read_exact(&mut data).is_err() {
                            return;
                        }
                        let (code, body) = (data[0], data[1..].to_vec());
                        record.lock().unwrap().push((code, body.clone()));
                        let reply = match code {
                            // Version 6, every action, every step with a reply.
                            b'O' => {
                                packet(b'O', &[6u32.to_be_bytes(), 0x1ffu32.to_be_bytes(), 0u32.to_be_bytes()].concat())
                            }
                            b'D' => continue,
                            b'L' => {
                                let parts: Vec<&[u8]> = body.split(|&b| b == 0).collect();
                                if parts[0].eq_ignore_ascii_case(b"subject") {
                                    subject = String::from_utf8_lossy(parts[1]).into_owned();
                                }
                                packet(b'c', b"")
                            }
                            b'E' => Self::end_of_message(&subject),
                            b'Q' => return,
                            _ => packet(b'c', b""),
                        };
                        if s.write_all(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, seen }
    }

    fn end_of_message(subject: &str) -> Vec<u8> {
        match subject.trim() {
            "reject me" => packet(b'y', &z(&["554 5.7.1 no thanks"])),
            "discard me" => packet(b'd', b""),
            "quarantine me" => [packet(b'q', &z(&["suspicious"])), packet(b'c', b"")].concat(),
            "edit me" => [
                packet(b'h', &z(&["X-Milter", "added"])),
                packet(b'i', &[&0u32.to_be_bytes()[..], &z(&["X-Top", "first"])].concat()),
                packet(b'm', &[&1u32.to_be_bytes()[..], &z(&["Subject", "edited"])].concat()),
                packet(b'e', &z(&["<changed@example.test>"])),
                packet(b'+', &z(&["<carol@example.test>"])),
                packet(b'-', &z(&["<bob@example.test>"])),
                packet(b'b', b"replaced body\r\n"),
                packet(b'a', b""),
            ]
            .concat(),
            // Hostile filters (issue 26, finding 10): a replacement body in many chunks past
            // the size limit, one packet past it, values folded libmilter's way or trying to
            // start a field of their own, a reply text with CR LF in it.
            "grow me" => {
                let chunk = packet(b'b', &vec![b'x'; 65_000]);
                [chunk.repeat(40), packet(b'a', b"")].concat()
            }
            "one huge packet" => [packet(b'b', &vec![b'x'; 2 << 20]), packet(b'a', b"")].concat(),
            "fold me" => [
                packet(b'h', &z(&["X-Folded", "one\n\ttwo"])),
                packet(b'h', &z(&["X-Sneaky", "a\r\nBcc: hidden@evil.test\r\n\r\nfake body"])),
                packet(b'a', b""),
            ]
            .concat(),
            "split my reply" => packet(b'y', &z(&["550 5.7.1 first\r\n250 2.0.0 Ok: fake"])),
            _ => packet(b'c', b""),
        }
    }

    /// The macros received (name, value), across connections.
    pub fn macros(&self) -> Vec<(String, String)> {
        let seen = self.seen.lock().unwrap();
        let mut out = Vec::new();
        for (code, body) in seen.iter().filter(|(c, _)| *c == b'D') {
            let _ = code;
            let parts: Vec<String> =
                body[1..].split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            for pair in parts.chunks(2).filter(|p| p.len() == 2 && !p[0].is_empty()) {
                out.push((pair[0].clone(), pair[1].clone()));
            }
        }
        out
    }
}
