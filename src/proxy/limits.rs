//! What one client may hold: the timeouts, the request head size and the per-address
//! connection cap every listener applies, and the pieces that enforce them on the hyper path
//! (request bodies that must keep arriving, the per-connection idle watch, rate-limited logs).
//! Invariant: a connection nobody is using and that sends nothing is closed within
//! `keepalive_timeout` (hyper path: within twice that), whatever state it was left in.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// The largest request head (request line and headers) either path accepts; larger gets 431.
/// configurable-http-proxy (Node) allows 16 KiB too.
pub const MAX_REQUEST_HEAD: usize = 16 << 10;

/// Limits on what one client connection may hold. Plain values, so the proxy knows no config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// From the end of the previous response (or from accept) to a complete request head.
    pub header_timeout: Duration,
    /// The longest a request body may pause (no byte arriving) while it is being read.
    pub body_timeout: Duration,
    /// The longest a connection may wait, nothing in progress, for the first byte of a request.
    pub keepalive_timeout: Duration,
    /// Connections at once from one client address on the public port; 0 = no cap.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    /// Header 30 s (hyper's own default; a real head arrives in one round trip), body 60 s
    /// without a byte (progress, not total: a slow upload is fine, a stalled one is not),
    /// keep-alive 30 s (longer than JupyterLab's polling interval), 1024 connections per address.
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(30),
            max_connections_per_ip: 1024,
        }
    }
}

/// True at most once per second: for warnings any client can cause.
pub(crate) struct LogEvery {
    start: Instant,
    /// Milliseconds after `start` of the last `true`, plus one (0 = never).
    last: AtomicU64,
}

impl LogEvery {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn ready(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// How long to wait after a failed accept (EMFILE, ENFILE, ENOBUFS): the failure repeats at
/// once until a connection closes, and retrying at once would spin a core.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counts open connections per client address.
pub(crate) struct ConnCap {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    log: LogEvery,
}

/// One admitted connection; its address's count drops when this does.
pub(crate) struct CapGuard {
    cap: Option<(Arc<ConnCap>, IpAddr)>,
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
            log: LogEvery::new(),
        })
    }

    /// Admit a connection from `ip`, or `None` when that address has `max` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<CapGuard> {
        if self.max == 0 {
            return Some(CapGuard { cap: None });
        }
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(open);
            if self.log.ready() {
                tracing::warn!(%ip, max = self.max, "connection refused: too many connections from this address");
            }
            return None;
        }
        *n += 1;
        Some(CapGuard {
            cap: Some((self.clone(), ip)),
        })
    }
}

impl Drop for CapGuard {
    fn drop(&mut self) {
        if let Some((cap, ip)) = self.cap.take() {
            let mut open = cap.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// What a connection refused by the cap is told, when it can be told cheaply (plain HTTP).
pub(crate) const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
    content-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";

// ---------------------------------------------------------------- request bodies

/// Why a client's request body ended before its end: the client's fault, so a 4xx and a
/// debug line, never a 502 and a warning.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("request body stalled for {0:?}")]
    Stalled(Duration),
    #[error("invalid request body: {0}")]
    Invalid(hyper::Error),
}

impl ClientBodyError {
    /// The client's body error somewhere in `error`'s source chain.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut e = Some(error);
        while let Some(err) = e {
            if let Some(found) = err.downcast_ref::<Self>() {
                return Some(found);
            }
            e = err.source();
        }
        None
    }

    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Stalled(_) => http::StatusCode::REQUEST_TIMEOUT,
            Self::Invalid(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// A client's request body that fails with `ClientBodyError::Stalled` when no frame arrives
/// for `timeout` while it is being read. The timer exists only while the body waits.
pub(crate) struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            progressed: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Invalid)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                // One timer per body, pushed back only when a frame came since it was armed.
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if this.progressed {
                            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
                        }
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(timeout))),
                };
                this.progressed = false;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::Stalled(timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------- idle connections

/// What the hyper path's idle watch sees of one connection: bytes read, requests in progress.
#[derive(Default)]
pub(crate) struct ConnWatch {
    reads: AtomicU64,
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl ConnWatch {
    /// A request has started; it ends when the returned guard (kept by its response body) drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub(crate) struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
pub(crate) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection's IO that counts reads for the idle watch.
pub(crate) struct Watched<T> {
    io: T,
    watch: Arc<ConnWatch>,
}

impl<T> Watched<T> {
    pub fn new(io: T, watch: Arc<ConnWatch>) -> Self {
        Self { io, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.watch.reads.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How long a connection accepted just before shutdown may take to send its first request.
/// hyper closes a connection with no request in progress at once when asked to finish, which
/// is right between keep-alive requests (clients retry those) but loses the request of a
/// client that connected a moment before `systemctl restart` and has not sent it yet.
pub(crate) const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);
const FIRST_REQUEST_POLL: Duration = Duration::from_millis(10);

/// Run a hyper connection until it ends, asking it to finish (`graceful`) on shutdown or
/// once it has had no request in progress and read nothing for a whole `idle` period (so it
/// closes between `idle` and twice that after its last activity). On shutdown a connection
/// that has not started a request yet gets `FIRST_REQUEST_GRACE` to start one first.
pub(crate) async fn supervise<F, G>(
    conn: F,
    mut graceful: G,
    watch: &ConnWatch,
    idle: Duration,
    shutdown: &CancellationToken,
) -> F::Output
where
    F: Future,
    G: FnMut(Pin<&mut F>),
{
    let mut conn = std::pin::pin!(conn);
    let mut ending = false;
    // Set while a fresh connection is given its grace on shutdown: until then.
    let mut awaiting_first: Option<tokio::time::Instant> = None;
    let mut seen = watch.reads.load(Ordering::Relaxed);
    let tick = tokio::time::sleep(idle);
    let mut tick = std::pin::pin!(tick);
    let poll = tokio::time::sleep(FIRST_REQUEST_POLL);
    let mut poll = std::pin::pin!(poll);
    loop {
        tokio::select! {
            biased;
            out = conn.as_mut() => return out,
            () = shutdown.cancelled(), if !ending && awaiting_first.is_none() => {
                if watch.started.load(Ordering::Relaxed) == 0 {
                    let now = tokio::time::Instant::now();
                    awaiting_first = Some(now + FIRST_REQUEST_GRACE);
                    poll.as_mut().reset(now + FIRST_REQUEST_POLL);
                } else {
                    ending = true;
                    graceful(conn.as_mut());
                }
            }
            () = poll.as_mut(), if awaiting_first.is_some() => {
                let now = tokio::time::Instant::now();
                let late = awaiting_first.is_some_and(|until| now >= until);
                if late || watch.started.load(Ordering::Relaxed) > 0 {
                    awaiting_first = None;
                    ending = true;
                    graceful(conn.as_mut());
                } else {
                    poll.as_mut().reset(now + FIRST_REQUEST_POLL);
                }
            }
            () = tick.as_mut(), if !ending && awaiting_first.is_none() => {
                let reads = watch.reads.load(Ordering::Relaxed);
                if reads == seen && watch.in_flight.load(Ordering::Relaxed) == 0 {
                    ending = true;
                    graceful(conn.as_mut());
                } else {
                    seen = reads;
                    tick.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_counts_per_address() {
        let cap = ConnCap::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let one = cap.admit(a).expect("first");
        let two = cap.admit(mapped).expect("second, same address");
        assert!(cap.admit(a).is_none(), "third from the same address");
        let other = cap.admit(b).expect("another address");
        drop(one);
        let three = cap.admit(a).expect("room again");
        drop((two, three, other));
        assert!(cap.open.lock().expect("lock").is_empty());
        let off = ConnCap::new(0);
        let all: Vec<_> = (0..1000).map(|_| off.admit(a).expect("no cap")).collect();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn log_every_second() {
        let log = LogEvery::new();
        assert!(log.ready());
        assert!(!log.ready());
    }
}
