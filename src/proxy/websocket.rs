//! Upgraded connections (WebSockets and any other `Upgrade:` protocol): bytes are spliced
//! between client and target without re-framing. Invariant: an upgraded connection owns its
//! `Arc<Route>` and lives until either side closes, whatever happens to the route table.
//! Bytes from the client to a target frozen since the upgrade wait for its thaw first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::forward::ThawHook;
use super::table::{Route, now_micros};

/// Record activity at most once per second, so a busy socket costs a clock read per chunk.
const ACTIVITY_INTERVAL_MICROS: i64 = 1_000_000;

/// Wraps the target's side: touches the route when bytes flow either way, and thaws a
/// frozen target before writing to it.
pub(crate) struct Activity<T> {
    io: T,
    route: Arc<Route>,
    last: i64,
    thaw: Option<ThawHook>,
    thawing: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl<T> Activity<T> {
    pub fn new(io: T, route: Arc<Route>, thaw: Option<ThawHook>) -> Self {
        Self {
            io,
            route,
            last: 0,
            thaw,
            thawing: None,
        }
    }

    fn saw_traffic(&mut self) {
        let now = now_micros();
        if now - self.last >= ACTIVITY_INTERVAL_MICROS {
            self.last = now;
            self.route.touch_at(now);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.saw_traffic();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.thawing.is_none() && this.route.is_frozen() && this.thaw.is_some() {
            let (hook, route) = (this.thaw.clone(), this.route.clone());
            this.thawing = Some(Box::pin(async move {
                super::forward::thaw(hook.as_ref(), &route).await
            }));
        }
        if let Some(thawing) = &mut this.thawing {
            // Thawed or not, the bytes go to the socket: a target that stays frozen reads
            // them once it runs, as after any pause.
            std::task::ready!(thawing.as_mut().poll(cx));
            this.thawing = None;
        }
        let res = Pin::new(&mut this.io).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.saw_traffic();
        }
        res
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Wait for both sides to finish upgrading, then copy bytes both ways until both close.
/// No idle timeout: an idle kernel websocket must stay open.
pub(crate) async fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    route: Arc<Route>,
    thaw: Option<ThawHook>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(route = %route.spec, error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = Activity::new(TokioIo::new(upstream), route, thaw);
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 64 << 10, 64 << 10)
            .await
    {
        tracing::debug!(route = %upstream.route.spec, error = %e, "upgraded connection ended");
    }
}
