//! A minimal HTTPS server for tests (rustls): answers every GET with one body, counts requests.
//! Binds `IP:443` (the MTA-STS policy host's port; the tests run as root), so each test uses
//! its own loopback address.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct HttpsServer {
    /// Requests answered.
    pub requests: Arc<Mutex<usize>>,
    body: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl HttpsServer {
    /// Serves `body` as text/plain on `ip:443` with `tls`.
    pub fn start(ip: &str, tls: Arc<rustls::ServerConfig>, body: &str) -> Self {
        let listener = TcpListener::bind((ip, 443)).unwrap_or_else(|e| panic!("bind {ip}:443: {e}"));
        listener.set_nonblocking(true).unwrap();
        let (requests, body, stop) =
            (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(body.to_owned())), Arc::new(AtomicBool::new(false)));
        let (r, b, s) = (requests.clone(), body.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = rustls::ServerConnection::new(tls.clone()).unwrap();
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if request.is_empty() {
                    continue;
                }
                *r.lock().unwrap() += 1;
                let body = b.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
                let _ = stream.flush();
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        });
        Self { requests, body, stop }
    }

    /// Serves `body` from now on.
    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
