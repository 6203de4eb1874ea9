//! The deployment kit: the systemd unit (`dist/postern.service`) passes `systemd-analyze
//! verify`, the daemon speaks systemd's notify protocol on a `$NOTIFY_SOCKET` the test listens
//! on (READY, watchdog pings, RELOADING, STOPPING), and the example configuration starts as it
//! is, its IPv4 and IPv6 listeners on one port.

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use crate::support::{Server, TempDir, poll, postern_cli, repo};

#[test]
fn the_systemd_unit_verifies() {
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(repo().join("dist/postern.service")).unwrap();
    // systemd-analyze checks that ExecStart's program exists: point it at the one just built.
    let unit = unit.replace("/usr/local/bin/postern", env!("CARGO_BIN_EXE_postern"));
    let path = dir.0.join("postern.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("postern.service"), "warnings about the unit:\n{err}");
}

/// The next datagram on `socket` (20 s at most).
fn next(socket: &UnixDatagram) -> String {
    let mut buf = vec![0; 4096];
    let n = socket.recv(&mut buf).expect("a notify datagram within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_watchdog_reloading_stopping() {
    let dir = TempDir::new("notify");
    crate::support::copy_fixture("basic", &["postern.toml", "users", "aliases", "virtual"], &dir.0);
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(crate::support::wait_bound())).unwrap();
    // WatchdogSec=0.4s: a ping every 200 ms.
    let env = [("NOTIFY_SOCKET", path.display().to_string()), ("WATCHDOG_USEC", "400000".into())];
    let mut server = Server::start_in(dir, &env);
    let ready = poll("READY=1", || Some(next(&socket)).filter(|m| m.contains("READY=1")));
    assert!(ready.contains("STATUS=1 listener(s)"), "{ready}");
    let mut pings = 0;
    poll("two watchdog pings", || {
        pings += usize::from(next(&socket).trim() == "WATCHDOG=1");
        (pings >= 2).then_some(())
    });
    let (code, out) = postern_cli(&["reload"], &server.config_path());
    assert_eq!(code, Some(0), "{out}");
    let reloading = poll("RELOADING=1", || Some(next(&socket)).filter(|m| m.contains("RELOADING=1")));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    poll("READY=1 after the reload", || Some(next(&socket)).filter(|m| m.contains("READY=1")));
    server.signal(libc::SIGTERM);
    poll("STOPPING=1", || Some(next(&socket)).filter(|m| m.contains("STOPPING=1")));
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn the_example_configuration_starts_with_ipv4_and_ipv6_on_one_port() {
    let dir = TempDir::new("example");
    for e in std::fs::read_dir(repo().join("docs/example")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.0.join(e.file_name())).unwrap();
    }
    // The port is held for the listeners until they bind it (see DeadPort).
    let held = crate::support::net::DeadPort::new();
    let port = held.port;
    let cfg = dir.0.join("postern.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("address = \"0.0.0.0:25\"") && text.contains("address = \"[::]:25\""), "{text}");
    // Only what a test must change: the port, the data folder, and DNS pinned to loopback.
    let text = text.replace(":25\"", &format!(":{port}\"")).replace("/var/lib/postern", "data")
        + &format!("\n[dns]\nnameservers = [\"{}\"]\n", crate::support::dns::no_dns());
    std::fs::write(&cfg, text).unwrap();
    let server = Server::start_in(dir, &[]);
    let roles: Vec<u16> = server.ports.iter().map(|(_, p)| *p).collect();
    assert_eq!(roles, [port, port], "both listeners bound: {:?}", server.log_lines("listening"));
    assert!(!server.log_lines(&format!("listening on 0.0.0.0:{port}")).is_empty());
    assert!(!server.log_lines(&format!("listening on [::]:{port}")).is_empty());
    let (mut c, greeting) = crate::support::smtp::Client::connect(port);
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("QUIT").code, 221);
}

/// `postern sandbox` and the Debian package's generator (issue 28): the unit's sandbox opens
/// what the configured deliveries write, no more; the drop-in passes `systemd-analyze verify`
/// beside the unit; a broken configuration makes the generator write nothing and succeed.
#[test]
fn the_sandbox_follows_the_configured_deliveries() {
    let dir = TempDir::new("sandbox");
    let cfg = dir.0.join("postern.toml");
    let write = |delivery: &str| {
        let head = "data_dir = \"/var/lib/postern\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n\
                    [domains]\nlocal = [\"example.test\"]\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n";
        std::fs::write(&cfg, format!("{head}[delivery]\n{delivery}\n")).unwrap();
    };
    let sandbox = || {
        let (code, out) = postern_cli(&["sandbox"], &cfg);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    write("");
    let lines = sandbox();
    assert!(lines.contains("ReadWritePaths=-\"/var/lib/postern\"\n"), "{lines}");
    assert!(!lines.contains("/var/mail") && !lines.contains("ProtectHome"), "Maildirs in data_dir: {lines}");
    write("local = \"mbox\"\nallow_pipes = true");
    let lines = sandbox();
    for want in ["ReadWritePaths=-\"/var/mail\"\n", "ReadWritePaths=-\"/home\"\n", "ProtectHome=no\n"] {
        assert!(lines.contains(want), "mbox and procmail need {want}: {lines}");
    }

    // The generator script as the package installs it, on this configuration and binary.
    let script = std::fs::read_to_string(repo().join("dist/postern-sandbox-generator")).unwrap();
    let script = script
        .replace("/usr/sbin/postern", env!("CARGO_BIN_EXE_postern"))
        .replace("/etc/postern/postern.toml", cfg.to_str().unwrap());
    let units = dir.0.join("units");
    let generate = || Command::new("sh").arg("-c").arg(&script).arg("generator").arg(&units).output().unwrap().status;
    assert!(generate().success());
    let drop_in = units.join("postern.service.d/50-deliveries.conf");
    assert_eq!(std::fs::read_to_string(&drop_in).unwrap(), lines);

    // The unit with the drop-in beside it verifies.
    let unit = std::fs::read_to_string(repo().join("dist/postern.service")).unwrap();
    std::fs::write(
        units.join("postern.service"),
        unit.replace("/usr/local/bin/postern", env!("CARGO_BIN_EXE_postern")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(units.join("postern.service")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("postern.service"), "{err}");

    // A broken configuration: nothing written, and the boot goes on.
    std::fs::remove_dir_all(units.join("postern.service.d")).unwrap();
    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    assert!(generate().success());
    assert!(!drop_in.exists());
}

/// `check-config`, which the unit runs first inside its sandbox, warns of a delivery folder
/// that is read-only there: here the mbox folder, bound read-only in a private mount namespace.
#[test]
fn check_config_warns_of_a_read_only_delivery_folder() {
    let dir = TempDir::new("sandbox-ro");
    let mail = dir.0.join("mail");
    std::fs::create_dir(&mail).unwrap();
    let cfg = dir.0.join("postern.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"data\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"example.test\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[delivery]\nlocal = \"mbox\"\nmbox = \"{}/{{mailbox}}\"\n",
            mail.display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount --bind {m} {m} && mount -o remount,bind,ro {m} && exec {bin} check-config --config {cfg}",
        m = mail.display(),
        bin = env!("CARGO_BIN_EXE_postern"),
        cfg = cfg.display()
    );
    let out =
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("warning: {} is read-only here", mail.display())), "{text}");
    let (code, text) = postern_cli(&["check-config"], &cfg);
    assert_eq!(code, Some(0));
    assert!(!text.contains("read-only"), "writable outside the namespace: {text}");
}
