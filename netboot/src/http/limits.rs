//! What every HTTP server of the seed bounds (the boot server on either transport and the
//! operators' API listener), so slow or many clients cannot starve the node being deployed:
//!
//! - [`HEADER_READ_TIMEOUT`]: a request's headers must arrive within it (slowloris);
//! - [`IDLE_TIMEOUT`]: a connection with no request in progress and no byte moving for that
//!   long is closed (a request in progress, such as the metadata long-poll of at most 60 s or
//!   a slow image download, keeps it);
//! - [`MAX_CONNECTIONS`] open connections per server: one more is closed on accept, counted
//!   and logged (rate-limited by the count itself: one warning per refusal burst).

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long (no request in progress, nothing read or written) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Open connections per server.
pub const MAX_CONNECTIONS: usize = 512;

/// hyper's HTTP/1 server settings with the header-read timeout (on tokio's timer).
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b
}

/// The connection slots of one server.
#[derive(Clone, Debug)]
pub struct Slots {
    sem: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Slots {
            sem: Arc::new(Semaphore::new(n)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A slot for a new connection, or `None` when all are taken (the caller drops it).
    pub fn take(&self, peer: std::net::SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(%peer, refused = n + 1, "HTTP: connection limit reached, connection closed");
                }
                None
            }
        }
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots::new(MAX_CONNECTIONS)
    }
}

/// What the idle watchdog of one connection reads: when a byte last moved, and how many
/// requests are in progress.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Mark a request in progress until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Whether the connection has been idle for `limit`.
    pub fn idle_for(&self, limit: Duration) -> bool {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Relaxed) == 0 && self.start.elapsed() >= last + limit
    }
}

/// A request in progress (see [`Activity::request`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes its reads and writes in an [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> TokioIo<Self> {
        activity.touch();
        TokioIo::new(Watched { inner, activity })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once `activity` has been idle for [`IDLE_TIMEOUT`] (checked every few seconds).
pub fn idle(activity: Arc<Activity>) -> impl Future<Output = ()> + Send {
    idle_after(activity, IDLE_TIMEOUT)
}

/// [`idle`] with another limit (tests).
pub async fn idle_after(activity: Arc<Activity>, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        if activity.idle_for(limit) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let s = Slots::new(2);
        let peer = "127.0.0.1:1".parse().unwrap();
        let a = s.take(peer).unwrap();
        let _b = s.take(peer).unwrap();
        assert!(s.take(peer).is_none());
        assert_eq!(s.refused(), 1);
        drop(a);
        assert!(s.take(peer).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_not_idle() {
        let a = Activity::new();
        a.touch();
        let req = a.request();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!a.idle_for(Duration::from_millis(1)), "in flight");
        drop(req);
        assert!(!a.idle_for(Duration::from_secs(60)));
    }
}
