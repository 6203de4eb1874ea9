//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` answers the text exposition of
//! [`postern_metrics::metrics`], with the queue gauges and the resident set size set at the
//! scrape. HTTP/1.1 by hyper; any other path is 404. Bound before privileges are dropped, like
//! the SMTP listeners.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use postern_queue::Queue;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The resident set size of this process, bytes (`/proc/self/statm`).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn answer(queue: &Queue, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"only /metrics here\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    queue.refresh_metrics();
    let m = postern_metrics::metrics();
    m.set_rss(rss_bytes());
    let mut r = Response::new(Full::new(Bytes::from(m.render())));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Serves `listener` until `stop` changes; each connection in its own task, bounded in time.
pub(crate) fn spawn(listener: TcpListener, queue: Queue, mut stop: watch::Receiver<bool>) {
    let queue = Arc::new(queue);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("metrics: accept: {e}");
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = answer(&queue, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
}
