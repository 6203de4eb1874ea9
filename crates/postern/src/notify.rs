//! systemd's service protocol (`Type=notify`, sd_notify(3)) through the sd-notify crate:
//! `READY=1` once the listeners accept, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`
//! around a reload, `STOPPING=1` at shutdown, and `WATCHDOG=1` every half `WatchdogSec` from
//! the runtime (so a stuck runtime stops the pings and systemd restarts the daemon). Without
//! `$NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// `READY=1` with a status line.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` and the monotonic time, as `Type=notify-reload` requires.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog every half of `$WATCHDOG_USEC` until `stop`, when systemd asked for it.
pub(crate) fn spawn_watchdog(mut stop: watch::Receiver<bool>) {
    let Some(timeout) = sd_notify::watchdog_enabled() else { return };
    let every = (timeout / 2).max(Duration::from_millis(100));
    tracing::info!("systemd watchdog: pinging every {}ms", every.as_millis());
    tokio::spawn(async move {
        loop {
            send(&[NotifyState::Watchdog]);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    });
}
