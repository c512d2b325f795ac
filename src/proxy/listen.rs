//! The listeners: accept loop (per-address cap, back-off when out of descriptors), optional
//! TLS termination, HTTP/1.1 and HTTP/2 with upgrades, timeouts and the head limit
//! (`limits.rs`), graceful drain on shutdown; `serve_app` gives an axum app (the hub's internal
//! API) the same. Invariant: one failing connection never stops the loop.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Error;
use super::acme::ACME_TLS_ALPN;
use super::forward::{ConnInfo, Proxy, serve_app_request, serve_request};
use super::h1;
use super::limits::{
    ACCEPT_BACKOFF, ConnCap, ConnWatch, Limits, LogEvery, MAX_REQUEST_HEAD, REFUSED, Watched,
    supervise,
};
use super::upstream::{Upstreams, drive};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Load a PEM certificate (chain) and private key for the public listener.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_owned(),
            source,
        }
    }
    let mut certs_file = BufReader::new(std::fs::File::open(cert).map_err(io(cert))?);
    let certs = rustls_pemfile::certs(&mut certs_file)
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(cert))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let mut key_file = BufReader::new(std::fs::File::open(key).map_err(io(key))?);
    let key_der = rustls_pemfile::private_key(&mut key_file)
        .map_err(io(key))?
        .ok_or_else(|| Error::NoKey {
            path: key.to_owned(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How many connections may wait for `accept` on a port the hub binds itself (a socket-
/// activated one has systemd's `Backlog=`): with the standard library's 128 a burst of
/// connections has SYNs dropped, and those clients retry only a second later.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Listen as `TcpListener::bind` does (the first address `addr` resolves to that binds, with
/// `SO_REUSEADDR`), but with a `LISTEN_BACKLOG`-deep queue.
pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

/// Serve the proxy on `listener` until `shutdown` is cancelled, then drain open requests.
/// Upgraded connections (websockets) are independent tasks and are not waited for.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = *proxy.limits();
    let local = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = Arc::new(http_builder(&limits));
    let cap = ConnCap::new(limits.max_connections_per_ip);
    let tasks = TaskTracker::new();
    let accept_log = LogEvery::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &accept_log) => accepted,
        };
        let Some(admitted) = cap.admit(peer.ip()) else {
            // Refused before anything is read or allocated; plain HTTP is told why.
            if acceptor.is_none() {
                let _ = stream.try_write(REFUSED);
            }
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let conn = Arc::new(ConnInfo::new(peer, local, acceptor.is_some()));
        let (proxy, builder, stop, acceptor) = (
            proxy.clone(),
            builder.clone(),
            shutdown.clone(),
            acceptor.clone(),
        );
        tasks.spawn(async move {
            let _admitted = admitted;
            let result = match acceptor {
                None => {
                    // HTTP/1.1 to user servers and services takes the fast path; what it
                    // hands back (with the bytes it read) is served by hyper from here on.
                    let mut stream = stream;
                    let pre = match h1::serve(&mut stream, &proxy, &conn, &stop).await {
                        h1::Outcome::Done => return,
                        h1::Outcome::Handoff(pre) => pre,
                    };
                    serve_hyper(&builder, h1::Rewind::new(pre, stream), proxy, conn, &stop).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        // The CA's TLS-ALPN-01 check is the handshake alone.
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {
                            return;
                        }
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            serve_hyper(&builder, tls, proxy, conn, &stop).await
                        }
                        Ok(Ok(mut tls)) => {
                            let pre = match h1::serve(&mut tls, &proxy, &conn, &stop).await {
                                h1::Outcome::Done => return,
                                h1::Outcome::Handoff(pre) => pre,
                            };
                            serve_hyper(&builder, h1::Rewind::new(pre, tls), proxy, conn, &stop)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drain(listener, tasks).await;
    Ok(())
}

/// Serve `app` (the hub's internal API, the drop-in's REST API) on `listener` with the same
/// timeouts and head limit as the public port, until `shutdown`. No per-address cap: the
/// clients of these ports (user servers, the hub) mostly share one address.
pub async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = Arc::new(http_builder(&limits));
    let tasks = TaskTracker::new();
    let accept_log = LogEvery::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &accept_log) => accepted,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let (app, builder, stop) = (app.clone(), builder.clone(), shutdown.clone());
        tasks.spawn(async move {
            let watch = Arc::new(ConnWatch::default());
            let requests = watch.clone();
            let service = service_fn(move |req| {
                serve_app_request(
                    app.clone(),
                    peer,
                    limits.body_timeout,
                    requests.start(),
                    req,
                )
            });
            let io = TokioIo::new(Watched::new(stream, watch.clone()));
            let served = builder.serve_connection_with_upgrades(io, service);
            let idle = limits.keepalive_timeout;
            if let Err(e) = supervise(served, |c| c.graceful_shutdown(), &watch, idle, &stop).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drain(listener, tasks).await;
    Ok(())
}

/// hyper for client connections: a timer (without one hyper's header timeout is inert), the
/// header timeout (which also bounds an idle keep-alive connection) and the head limit.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper answers 431 when a head does not fit its read buffer.
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        // HPACK counts 32 bytes per field on top of name and value.
        .max_header_list_size((MAX_REQUEST_HEAD + 64 * 32) as u32);
    builder
}

/// The next connection. Running out of descriptors (or kernel memory) repeats until a
/// connection closes, so that backs off and is logged at most once a second.
pub(super) async fn accept(listener: &TcpListener, log: &LogEvery) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                ) =>
            {
                if log.ready() {
                    tracing::warn!(error = %e, "accept failed; backing off");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // A connection that went away before it was accepted: only that one is lost.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

/// Stop listening, then give running connections `DRAIN_TIMEOUT` to finish.
pub(super) async fn drain(listener: TcpListener, tasks: TaskTracker) {
    drop(listener);
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::info!("proxy: some requests were still running at shutdown");
    }
}

/// A client connection served by hyper from here on, with its upstream connections and the
/// idle watch; ends on shutdown once its requests are done.
async fn serve_hyper<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = proxy.limits().keepalive_timeout;
    let upstreams = Upstreams::new();
    let own = upstreams.clone();
    let watch = Arc::new(ConnWatch::default());
    let requests = watch.clone();
    let service = service_fn(move |req| {
        serve_request(
            proxy.clone(),
            conn.clone(),
            upstreams.clone(),
            requests.start(),
            req,
        )
    });
    let io = TokioIo::new(Watched::new(io, watch.clone()));
    let served = builder.serve_connection_with_upgrades(io, service);
    drive(
        supervise(served, |c| c.graceful_shutdown(), &watch, idle, stop),
        own,
    )
    .await
}
