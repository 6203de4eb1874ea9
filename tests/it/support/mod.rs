//! Test support: a running Postern ([`Server`]), a raw SMTP client ([`smtp`]), the dialog runner
//! ([`dialog`]).

pub mod certs;
pub mod dialog;
pub mod dns;
pub mod https;
pub mod milter;
pub mod net;
pub mod peer;
pub mod redis;
pub mod smtp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// RFC 4648 base64 of `data`, on one line (AUTH strings, MIME parts of the corpus).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() { s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char) } else { s.push('=') }
        }
    }
    s
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A fresh temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("postern-it-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `postern ARGS --config CONFIG`; returns its exit code and standard output.
pub fn postern_cli(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern")).args(args).arg("--config").arg(config).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

/// Asserts that `out` contains every one of `lines`.
pub fn assert_contains_all(out: &str, lines: &[&str]) {
    for line in lines {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
}

/// The one bound on every wait of the tests: 60 s, times `$POSTERN_TEST_WAIT_SCALE` (a decimal
/// factor, e.g. `3` on a machine that is also busy with other work). A passing test never pays
/// it: every wait polls for its event and returns as soon as it happens.
pub fn wait_bound() -> Duration {
    let scale = std::env::var("POSTERN_TEST_WAIT_SCALE").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(60.0 * scale.filter(|s| *s > 0.0).unwrap_or(1.0))
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after [`wait_bound`] with `what`.
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let bound = wait_bound();
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {}s waiting for {what}", bound.as_secs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `text` with each `{NO_DNS}` (the fixtures' DNS where a test needs none) replaced by the
/// address of [`dns::no_dns`], which answers SERVFAIL at once. Tests that need a real zone
/// replace `{NO_DNS}` with their [`dns::DnsServer`]'s address first.
pub fn fill_no_dns(text: &str) -> String {
    text.replace("{NO_DNS}", &dns::no_dns())
}

/// Starts a daemon that binds a TCP port on 127.0.0.1 itself (opendkim, rspamd): `spawn(port)`
/// starts it on a free port, and it is up when `ready(port)` while the process still runs. If
/// the process exits first (another program took the port between the look-up and the bind:
/// EADDRINUSE), it is started again on another port, five times at most. Returns the process and
/// its port.
pub fn daemon_on_free_port(
    what: &str,
    mut spawn: impl FnMut(u16) -> Child,
    ready: impl Fn(u16) -> bool,
) -> (Child, u16) {
    /// Kills the daemon if the wait panics, so that no test leaves one behind.
    struct Guard(Option<Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Guard(Some(spawn(port)));
        let up = poll(&format!("{what} to listen on {port} (or exit)"), || {
            match child.0.as_mut().unwrap().try_wait().unwrap() {
                Some(status) => Some(Err(status)),
                None => ready(port).then_some(Ok(())),
            }
        });
        match up {
            Ok(()) => return (child.0.take().unwrap(), port),
            Err(status) => eprintln!("{what} exited ({status}) before listening on {port}: trying another port"),
        }
    }
    panic!("{what} could not be started on a free port");
}

/// Whether dkimpy (Debian's python3-dkim, an independent implementation) verifies the first
/// DKIM-Signature of `message` with `txt` as the key record (the value `postern dkim keygen`
/// prints), whatever name it is asked for.
pub fn dkimpy_verifies(message: &[u8], txt: &str) -> bool {
    use std::io::Write as _;
    let verify = format!(
        "import dkim,sys\nm=sys.stdin.buffer.read().replace(b'\\r\\n',b'\\n').replace(b'\\n',b'\\r\\n')\nt={txt:?}.encode()\nok=dkim.verify(m,dnsfunc=lambda n,timeout=5: t)\nprint('pass' if ok else 'fail')\nsys.exit(0 if ok else 1)\n"
    );
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", &verify])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3-dkim: `bash scripts/test` installs it");
    py.stdin.take().unwrap().write_all(message).unwrap();
    let out = py.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("pass") || said.contains("fail"), "dkimpy did not run: {said}");
    out.status.success()
}

/// Compares `got` with the golden file at `path`: `Err` with both texts when they differ. With
/// `POSTERN_BLESS` set, a differing file is rewritten with `got`, and the result is still `Err`
/// (naming the file rewritten), so a bless run never passes a test whose output changed.
pub fn golden(path: &Path, got: &str) -> Result<(), String> {
    let want = std::fs::read_to_string(path).unwrap_or_default();
    if got == want {
        return Ok(());
    }
    if std::env::var_os("POSTERN_BLESS").is_some() {
        std::fs::write(path, got).unwrap();
        return Err(format!("{}: rewritten by POSTERN_BLESS; check the diff and run again without it", path.display()));
    }
    Err(format!("{}:\n--- expected\n{want}--- got\n{got}", path.display()))
}

/// Copies `files` of `tests/fixtures/{fixture}` into `dir`, with `{NO_DNS}` filled in.
pub fn copy_fixture(fixture: &str, files: &[&str], dir: &Path) {
    for f in files {
        let text = std::fs::read_to_string(repo().join("tests/fixtures").join(fixture).join(f)).unwrap();
        std::fs::write(dir.join(f), fill_no_dns(&text)).unwrap();
    }
}

/// A running `postern serve` with its own copy of a fixture configuration.
pub struct Server {
    pub dir: TempDir,
    child: Option<Child>,
    pub port: u16,
    /// Every listener's (role, port), in configuration order.
    pub ports: Vec<(String, u16)>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Where the current process's lines start in `log` (set before each spawn): waits look
    /// only at the lines of the process now running, not at those of one before a restart.
    log_mark: usize,
    /// When set, `postern serve` runs under this command (a namespace wrapper) with no
    /// `--config`: it finds its configuration at the default path.
    wrapper: Option<Vec<std::ffi::OsString>>,
    /// Extra environment of the server process.
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `postern serve` with no `--config` and no `$POSTERN_CONFIG` under `wrapper`
    /// (which makes the configuration appear at `/etc/postern/postern.toml`); `dir` holds it.
    pub fn start_wrapped(dir: TempDir, wrapper: Vec<std::ffi::OsString>) -> Self {
        Self::launch(dir, Some(wrapper), Vec::new())
    }

    /// Starts `postern serve --config DIR/postern.toml` on a folder already laid out, with
    /// `env` added to its environment.
    pub fn start_in(dir: TempDir, env: &[(&str, String)]) -> Self {
        Self::launch(dir, None, env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    /// Starts the server on `dir` (under `wrapper`, if any, with `env` added).
    fn launch(dir: TempDir, wrapper: Option<Vec<std::ffi::OsString>>, env: Vec<(String, String)>) -> Self {
        let mut s =
            Self { dir, child: None, port: 0, ports: Vec::new(), log: Arc::default(), log_mark: 0, wrapper, env };
        s.spawn();
        s
    }

    /// Copies `tests/fixtures/{fixture}` to a temporary folder, applies `edit` to its
    /// postern.toml text, and starts the server.
    pub fn start_with(fixture: &str, edit: impl FnOnce(String) -> String) -> Self {
        Self::start_full(fixture, &[], edit)
    }

    /// As [`Server::start_with`], first replacing each `{NAME}` of `vars` in every fixture file.
    pub fn start_full(fixture: &str, vars: &[(&str, String)], edit: impl FnOnce(String) -> String) -> Self {
        Self::start_prepared(fixture, vars, edit, |_| {})
    }

    /// As [`Server::start_full`]; `prepare` runs on the folder just before the server starts
    /// (to write certificates, say).
    pub fn start_prepared(
        fixture: &str,
        vars: &[(&str, String)],
        edit: impl FnOnce(String) -> String,
        prepare: impl FnOnce(&Path),
    ) -> Self {
        Self::launch(prepare_fixture(fixture, vars, edit, prepare), None, Vec::new())
    }

    /// Instance A relaying by its `routes` table only (`routes` replaces it; DNS on a closed
    /// port), one attempt per message within a test (retries an hour apart), with `extra`
    /// appended to its configuration.
    pub fn relay_a_routed(routes: &str, extra: &str) -> Self {
        Self::start_prepared(
            "relay-a",
            &[("PEER", "9".into())],
            |t| {
                t.replace("{DNS}", "{NO_DNS}")
                    .replace("{PORT}", "9")
                    .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
                    .replace("max_backoff = \"2s\"", "max_backoff = \"1h\"")
                    + extra
            },
            |dir| std::fs::write(dir.join("routes"), routes).unwrap(),
        )
    }

    /// The basic fixture, unchanged.
    pub fn start() -> Self {
        Self::start_with("basic", |t| t)
    }

    fn spawn(&mut self) {
        let bin = env!("CARGO_BIN_EXE_postern");
        let mut command = match &self.wrapper {
            Some(w) => {
                let mut c = Command::new(&w[0]);
                c.args(&w[1..]).args([bin, "serve"]).env_remove("POSTERN_CONFIG").env("POSTERN_BIN", bin);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(["serve", "--config"]).arg(self.dir.0.join("postern.toml"));
                c
            }
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        // The mark comes before the spawn, so no line of the new process can fall before it.
        let start = self.log.lock().unwrap().len();
        self.log_mark = start;
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let mut reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("POSTERN_TEST_LOG").is_some() {
                    eprintln!("[postern] {line}");
                }
                log.lock().unwrap().push(line);
            }
        }));
        self.child = Some(child);
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        let ports = poll("the listening lines", || {
            if let Ok(Some(status)) = child.try_wait() {
                // The reader ends at EOF of stderr: after joining it, the log is complete.
                if let Some(r) = reader.take() {
                    let _ = r.join();
                }
                panic!("postern exited with {status} before listening:\n{}", log.lock().unwrap().join("\n"));
            }
            let l = log.lock().unwrap();
            if !l[start..].iter().any(|line| line.contains("postern started")) {
                return None;
            }
            let ports: Vec<(String, u16)> = l[start..]
                .iter()
                .filter_map(|line| {
                    let rest = line.split("listening on ").nth(1)?;
                    let port = rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok()?;
                    let role = rest.split("(role ").nth(1)?.trim_end_matches(')').to_owned();
                    Some((role, port))
                })
                .collect();
            Some(ports)
        });
        self.port = ports[0].1;
        self.ports = ports;
    }

    /// The port of the first listener with `role`.
    pub fn port_of(&self, role: &str) -> u16 {
        self.ports.iter().find(|(r, _)| r == role).unwrap_or_else(|| panic!("no {role} listener")).1
    }

    pub fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.0.join("postern.toml")
    }

    /// Files in `mailbox`'s Maildir `new/`, in delivery order.
    pub fn maildir(&self, mailbox: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data().join("mail").join(mailbox).join("new"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        // By delivery time: `SECONDS.MmicrosP...`, whose microseconds are not zero-padded, so
        // the names themselves do not sort by time within one second.
        let key = |p: &PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let (secs, rest) = name.split_once(".M").unwrap_or((&name, ""));
            let micros: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (secs.parse::<u64>().unwrap_or(0), micros.parse::<u32>().unwrap_or(0), name.clone())
        };
        v.sort_by_cached_key(key);
        v
    }

    /// Waits until `mailbox` holds exactly `n` messages, returns their paths.
    pub fn wait_maildir(&self, mailbox: &str, n: usize) -> Vec<PathBuf> {
        poll(&format!("{n} message(s) in {mailbox}"), || {
            let v = self.maildir(mailbox);
            assert!(v.len() <= n, "{mailbox} has {} messages, expected {n}", v.len());
            (v.len() == n).then_some(v)
        })
    }

    /// Files in the spool's queue folder.
    pub fn queued_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data().join("spool/queue"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    /// Queued messages: the queue files (`ID.msg`) in the spool's queue folder.
    pub fn queued_messages(&self) -> usize {
        self.queued_files().iter().filter(|p| p.extension().is_some_and(|x| x == "msg")).count()
    }

    /// Waits until the queue folder is empty (everything delivered).
    pub fn wait_queue_empty(&self) {
        poll("an empty queue", || self.queued_files().is_empty().then_some(()));
    }

    /// Waits for a log line of the process now running that contains `needle`; returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        poll(&format!("log line containing {needle:?}"), || {
            self.log.lock().unwrap()[self.log_mark..].iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// Log lines containing `needle`, of every process this server ran (across restarts).
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let status = poll("server exit", || c.try_wait().unwrap());
        status.code()
    }

    /// Sets (or with `None` removes) a variable of the server's environment, for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<String>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v));
        }
    }

    /// Starts the server again on the same folder (new port), once the last one has exited
    /// (after [`Server::wait_exit`]).
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn();
    }

    /// Starts the server again on the same folder (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, wait for the exit (deliveries in progress complete), start again.
    pub fn restart_gracefully(&mut self) {
        self.signal(libc::SIGTERM);
        assert_eq!(self.wait_exit(), Some(0), "a clean exit on SIGTERM");
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies `tests/fixtures/{fixture}` to a temporary folder, replacing each `{NAME}` of `vars` in
/// every file and applying `edit` to its postern.toml; `prepare` runs on the folder last. For
/// [`Server::start_in`] (a server with its own environment).
pub fn prepare_fixture(
    fixture: &str,
    vars: &[(&str, String)],
    edit: impl FnOnce(String) -> String,
    prepare: impl FnOnce(&Path),
) -> TempDir {
    let dir = TempDir::new(fixture);
    let src = repo().join("tests/fixtures").join(fixture);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let mut text = std::fs::read_to_string(e.path()).unwrap();
        for (name, value) in vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        std::fs::write(dir.0.join(e.file_name()), text).unwrap();
    }
    let cfg = dir.0.join("postern.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, fill_no_dns(&edit(text))).unwrap();
    prepare(&dir.0);
    dir
}
