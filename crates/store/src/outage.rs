//! The outage log of a shared store: one line when calls start failing, one when the store
//! answers again, however many calls fail in between (a postmaster greps for `store:`).

use std::sync::Mutex;
use std::time::Instant;

use crate::StoreError;

/// Since when the store has been failing, if it is.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    since: Mutex<Option<Instant>>,
}

impl Outage {
    /// Notes the result of one call.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        match (result, since.is_some()) {
            (Err(e), false) => {
                *since = Some(Instant::now());
                postern_metrics::metrics().store_up(false);
                tracing::warn!(
                    "store: {e}; until it answers, greylisting and rate limits apply their [store] \
                     fail settings, bans are not enforced and report counts are not kept"
                );
            }
            (Ok(_), true) => {
                let down = since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                postern_metrics::metrics().store_up(true);
                tracing::info!("store: answering again after {down:.1}s; sharing resumed");
            }
            _ => {}
        }
    }
}
