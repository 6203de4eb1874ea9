//! A private `redis-server` (Debian's, installed by `scripts/test`) on a unix socket in a
//! temporary folder: no port to collide with, nothing reachable from outside. Stopped by PID
//! on drop; `stop` and `start_again` make an outage in the middle of a test.

use std::process::{Child, Command};

use super::{TempDir, poll};

pub struct Redis {
    pub dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Self { dir: TempDir::new("redis"), child: None };
        r.start_again();
        r
    }

    /// The `[store] url`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.0.join("redis.sock").display())
    }

    /// The `[store]` section that points a host at this server, with `extra` keys.
    pub fn store_config(&self, extra: &str) -> String {
        format!("\n[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"300ms\"\n{extra}\n", self.url())
    }

    /// Starts the server (again, on the same socket); returns when it answers.
    pub fn start_again(&mut self) {
        let sock = self.dir.0.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(std::fs::File::create(self.dir.0.join("redis.log")).unwrap())
            .spawn()
            .expect("redis-server (Debian's redis-server package; scripts/test installs it)");
        self.child = Some(child);
        poll("redis-server's socket", || sock.exists().then_some(()));
    }

    /// Kills the server (by PID) and removes its socket: every call fails at once.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.0.join("redis.sock"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
