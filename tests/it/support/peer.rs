//! A scripted SMTP peer for outbound tests: answers RCPT with the replies it is given, in turn
//! (then 250), and records every message it accepts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A peer on 127.0.0.1:`port`, serving connections one after another in its own thread.
pub struct Peer {
    pub port: u16,
    /// Messages whose final reply the peer withholds (it reads them, records them in
    /// `withheld`, and never answers): the first N transactions.
    pub hang_first: Arc<Mutex<usize>>,
    /// Messages read but never answered.
    pub withheld: Arc<Mutex<usize>>,
    /// Accepted messages (DATA content, dot-unstuffed, CRLF).
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// RCPT commands seen, in order.
    pub rcpts: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// `rcpt_replies`: replies to the first RCPT commands, in order (e.g. `"451 4.7.1 later"`);
    /// once used up, RCPT gets `250 2.1.5 Ok`.
    pub fn start(rcpt_replies: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rcpts: Arc<Mutex<Vec<String>>> = Arc::default();
        let script: Arc<Mutex<Vec<String>>> =
            Arc::new(Mutex::new(rcpt_replies.iter().rev().map(|s| (*s).to_owned()).collect()));
        let (rec, rc) = (received.clone(), rcpts.clone());
        let hang_first: Arc<Mutex<usize>> = Arc::default();
        let withheld: Arc<Mutex<usize>> = Arc::default();
        let (hf, wh) = (hang_first.clone(), withheld.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                // One thread per connection, so that a withheld reply does not block the next.
                let (script, rec, rc, hf, wh) = (script.clone(), rec.clone(), rc.clone(), hf.clone(), wh.clone());
                std::thread::spawn(move || serve(stream, &script, &rec, &rc, &hf, &wh));
            }
        });
        Self { port, hang_first, withheld, received, rcpts }
    }
}

fn serve(
    stream: std::net::TcpStream,
    script: &Mutex<Vec<String>>,
    received: &Mutex<Vec<Vec<u8>>>,
    rcpts: &Mutex<Vec<String>>,
    hang_first: &Mutex<usize>,
    withheld: &Mutex<usize>,
) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"220 peer.test ESMTP scripted\r\n")?;
    let mut accepted = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n".to_owned()
        } else if upper.starts_with("MAIL") {
            accepted = 0;
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT") {
            rcpts.lock().unwrap().push(line.trim_end().to_owned());
            match script.lock().unwrap().pop() {
                Some(s) => format!("{s}\r\n"),
                None => {
                    accepted += 1;
                    "250 2.1.5 Ok\r\n".into()
                }
            }
        } else if upper.starts_with("DATA") {
            if accepted == 0 {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                w.write_all(b"354 go ahead\r\n")?;
                let mut msg = Vec::new();
                loop {
                    let mut l = Vec::new();
                    let n = r.by_ref().take(1 << 20).read_until(b'\n', &mut l)?;
                    if n == 0 || l == b".\r\n" {
                        break;
                    }
                    let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                    msg.extend_from_slice(&l);
                }
                {
                    let mut h = hang_first.lock().unwrap();
                    if *h > 0 {
                        *h -= 1;
                        *withheld.lock().unwrap() += 1;
                        // Never answer: wait until the client goes away.
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink);
                        return Ok(());
                    }
                }
                received.lock().unwrap().push(msg);
                "250 2.0.0 Ok: queued by peer\r\n".into()
            }
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            "250 2.0.0 Ok\r\n".into()
        };
        w.write_all(reply.as_bytes())?;
    }
}
