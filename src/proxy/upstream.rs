//! Upstream HTTP/1.1 connections owned by one client connection and polled by that client
//! connection's own task, so a proxied request never hops to another task or worker thread.
//! Invariant: a connection here carries only requests of the client connection that opened
//! it, and is closed when that client connection ends.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An HTTP/1.1 client connection's future, polled by [`drive`].
type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Idle connections kept per client connection. A client connection carries one HTTP/1.1
/// request at a time, so one per target is the steady state; a few cover a client that
/// alternates between servers.
const MAX_IDLE: usize = 4;

/// A target that does not answer the SYN must become a 503, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no upstream connection could be made: the target is down, for the 503 page and hook.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect: timed out after {CONNECT_TIMEOUT:?}")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The upstream connections of one client connection. Every method must be called from a
/// future that [`drive`] polls (the HTTP/1 request handlers of that client connection).
pub(crate) struct Upstreams<B> {
    idle: Mutex<Vec<(Authority, SendRequest<B>)>>,
    conns: Mutex<FuturesUnordered<ConnFuture>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can panic while holding the lock; if something did, the data is still a
    // plain list of connections and usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<B> Upstreams<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            conns: Mutex::new(FuturesUnordered::new()),
        })
    }

    /// An idle connection to `authority` that can take a request now, if there is one.
    pub fn checkout(&self, authority: &Authority) -> Option<SendRequest<B>> {
        let mut idle = lock(&self.idle);
        idle.retain(|(_, sender)| !sender.is_closed());
        let index = idle
            .iter()
            .position(|(a, sender)| a == authority && sender.is_ready())?;
        Some(idle.swap_remove(index).1)
    }

    /// Keep `sender` for the next request to `authority` (its previous response has arrived;
    /// hyper makes it ready again once that response's body is read).
    pub fn checkin(&self, authority: Authority, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((authority, sender));
    }

    /// Open a new connection to `authority` (`host[:port]`, port 80 by default).
    pub async fn connect(&self, authority: &Authority) -> Result<SendRequest<B>, ConnectError> {
        let stream = connect_tcp(authority).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let conn: ConnFuture = Box::pin(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        lock(&self.conns).push(conn);
        Ok(sender)
    }

    /// Poll every connection until none can make progress.
    fn poll_conns(&self, cx: &mut Context<'_>) {
        let mut conns = lock(&self.conns);
        while let Poll::Ready(Some(())) = conns.poll_next_unpin(cx) {}
    }
}

/// A TCP connection to `authority` (`host[:port]`, port 80 by default), with Nagle off.
pub(crate) async fn connect_tcp(authority: &Authority) -> Result<TcpStream, ConnectError> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    // Requests and responses are written whole; waiting for ACKs only adds latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Run `server` (a client connection) together with the upstream connections its requests
/// open, in the calling task. Ends when `server` ends, which closes those connections: by then
/// every response has been sent.
pub(crate) async fn drive<F, B>(server: F, upstreams: Arc<Upstreams<B>>) -> F::Output
where
    F: Future,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut server = pin!(server);
    std::future::poll_fn(move |cx| {
        // The server first: its handlers push new connections and requests, which the
        // connections then write in the same pass.
        let out = server.as_mut().poll(cx);
        if out.is_pending() {
            upstreams.poll_conns(cx);
        }
        out
    })
    .await
}
