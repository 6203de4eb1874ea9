//! `[spool] min_free`: while the spool's filesystem has less free space than that, MAIL is
//! refused with `452 4.3.1` (RFC 5321 §4.2.2 "insufficient system storage"; RFC 3463 §3.4
//! "mail system full"), before the client sends any data, as Postfix does below
//! `queue_minfree`. Checked at most once a second; logged once when space runs low and once
//! when it is back.

use postern_proto::Refusal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postern_config::Config;
use postern_spool::Spool;

/// How long one reading of the free space is used.
const RECHECK: Duration = Duration::from_secs(1);

/// The last reading of the spool's free space.
#[derive(Debug, Default)]
pub struct SpaceGuard {
    last: Mutex<Option<(Instant, bool)>>,
}

impl SpaceGuard {
    /// The reply to MAIL while the spool is below `min_free`, `None` otherwise (also when the
    /// space cannot be read: a failed statvfs must not stop mail).
    pub fn refusal(&self, spool: &Spool, config: &Config) -> Option<Refusal> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let low = match *last {
            Some((at, low)) if now.duration_since(at) < RECHECK => low,
            before => {
                let low = self.read(spool, config, before.is_some_and(|(_, low)| low));
                *last = Some((now, low));
                low
            }
        };
        low.then_some(Refusal::LowSpace)
    }

    /// Reads the free space and logs a change from `was_low`.
    fn read(&self, spool: &Spool, config: &Config, was_low: bool) -> bool {
        let min = config.spool.min_free.unwrap_or_else(|| {
            postern_config::units::FreeSpace::Bytes(config.limits.max_message_size.0.saturating_mul(3) / 2)
        });
        let Ok((free, total)) = spool.free_space() else { return false };
        let need = min.bytes_of(total);
        let low = free < need;
        if low && !was_low {
            tracing::error!(
                "spool: {free} bytes free, below [spool] min_free ({need} bytes): refusing MAIL with 452 4.3.1"
            );
        } else if !low && was_low {
            tracing::warn!("spool: {free} bytes free again ([spool] min_free {need} bytes): accepting mail");
        }
        low
    }
}
