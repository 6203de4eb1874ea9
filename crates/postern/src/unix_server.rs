//! The daemon's local sockets (control, submission): bind with a mode, accept until stopped,
//! one task per connection.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Binds `path` (replacing a stale socket) with permissions `mode`, and runs `handler` for each
/// connection until `stop` changes; the socket file is removed then.
///
/// # Errors
/// When the socket cannot be bound or its mode set.
pub(crate) fn serve<F, Fut>(path: &Path, mode: u32, mut stop: watch::Receiver<bool>, handler: F) -> std::io::Result<()>
where
    F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let path = path.to_path_buf();
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.changed() => break,
            };
            if let Ok((stream, _)) = conn {
                tokio::spawn(handler(stream));
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}
