//! The public listener: accept loop, optional TLS termination, HTTP/1.1 and HTTP/2 with
//! upgrades, graceful drain on shutdown. Invariant: one failing connection never stops the loop.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Error;
use super::forward::{ConnInfo, Proxy, serve_request};
use super::h1;
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

/// Serve the proxy on `listener` until `shutdown` is cancelled, then drain open requests.
/// Upgraded connections (websockets) are independent tasks and are not waited for.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the loop must survive.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let conn = Arc::new(ConnInfo::new(peer, local, acceptor.is_some()));
        let (fast, conn_info, stop) = (proxy.clone(), conn.clone(), shutdown.clone());
        let proxy = proxy.clone();
        let upstreams = Upstreams::new();
        let own = upstreams.clone();
        let service = service_fn(move |req| {
            serve_request(proxy.clone(), conn.clone(), upstreams.clone(), req)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    // HTTP/1.1 to user servers and services takes the fast path; what it
                    // hands back (with the bytes it read) is served by hyper from here on.
                    // `watcher` lives as long as this task, so shutdown waits for both.
                    let mut stream = stream;
                    let pre = match h1::serve(&mut stream, &fast, &conn_info, &stop).await {
                        h1::Outcome::Done => return,
                        h1::Outcome::Handoff(pre) => pre,
                    };
                    let io = TokioIo::new(h1::Rewind::new(pre, stream));
                    let served = watcher.watch(builder.serve_connection_with_upgrades(io, service));
                    drive(served, own).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            let served = watcher.watch(
                                builder.serve_connection_with_upgrades(TokioIo::new(tls), service),
                            );
                            drive(served, own).await
                        }
                        Ok(Ok(mut tls)) => {
                            let pre = match h1::serve(&mut tls, &fast, &conn_info, &stop).await {
                                h1::Outcome::Done => return,
                                h1::Outcome::Handoff(pre) => pre,
                            };
                            let io = TokioIo::new(h1::Rewind::new(pre, tls));
                            let served =
                                watcher.watch(builder.serve_connection_with_upgrades(io, service));
                            drive(served, own).await
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
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("proxy: some requests were still running at shutdown");
    }
    Ok(())
}
