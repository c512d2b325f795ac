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
    if let Err(e) = copy_both_ways(&mut client, &mut upstream).await {
        tracing::debug!(route = %upstream.route.spec, error = %e, "upgraded connection ended");
    }
}

/// Bytes read per call: on the stack of the call, so an idle connection holds no buffer.
const CHUNK: usize = 64 << 10;

/// One direction of a splice. Unlike `tokio::io::copy_bidirectional`, which keeps a buffer per
/// direction for the connection's whole life, a chunk is read into the stack and written at
/// once; only what the other side cannot take yet is kept, on the heap, until it can. A
/// thousand idle kernel websockets then cost their sockets and this state, not 2 × 64 KiB.
#[derive(Default)]
struct Direction {
    /// Read but not yet written (empty, and unallocated, nearly always).
    pending: Vec<u8>,
    written: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader reached its end; the writer is shut down next.
    eof: bool,
    done: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.written < self.pending.len() {
                let n = std::task::ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.pending[self.written..])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
                self.unflushed = true;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.written = 0;
            }
            if self.eof {
                if self.unflushed {
                    std::task::ready!(writer.as_mut().poll_flush(cx))?;
                    self.unflushed = false;
                }
                std::task::ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut storage);
            match reader.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing more to forward for now: push out what was written.
                    if self.unflushed && writer.as_mut().poll_flush(cx)?.is_ready() {
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            let chunk = buf.filled();
            if chunk.is_empty() {
                self.eof = true;
                continue;
            }
            let mut at = 0;
            while at < chunk.len() {
                match writer.as_mut().poll_write(cx, &chunk[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        at += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The other side is slow: keep the rest, and read no more until it
                        // has taken it (its back-pressure reaches the sender).
                        self.pending = chunk[at..].to_vec();
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// Copy both ways until both directions have ended (each shuts its writer down when its
/// reader ends), or either fails.
async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Direction::default(), Direction::default());
    std::future::poll_fn(|cx| {
        let there = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if there.is_ready() && back.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both directions at once through pipes far smaller than a chunk, so nearly every write
    /// is partial or refused: every byte arrives in order, and each end sees the other's end.
    #[tokio::test]
    async fn copies_both_ways_through_slow_writers_and_passes_on_the_end() {
        let (client, mut near) = tokio::io::duplex(1000);
        let (mut far, target) = tokio::io::duplex(777);
        let splice = tokio::spawn(async move { copy_both_ways(&mut near, &mut far).await });
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up_sent, down_sent) = (up.clone(), down.clone());
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut target_r, mut target_w) = tokio::io::split(target);
        let writer_up = tokio::spawn(async move {
            client_w.write_all(&up_sent).await.expect("client writes");
            client_w.shutdown().await.expect("client ends");
        });
        let writer_down = tokio::spawn(async move {
            target_w.write_all(&down_sent).await.expect("target writes");
            target_w.shutdown().await.expect("target ends");
        });
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (a, b) = tokio::join!(
            target_r.read_to_end(&mut got_up),
            client_r.read_to_end(&mut got_down)
        );
        a.expect("target reads");
        b.expect("client reads");
        writer_up.await.expect("client task");
        writer_down.await.expect("target task");
        assert!(
            got_up == up,
            "client to target: {} of {} bytes",
            got_up.len(),
            up.len()
        );
        assert!(
            got_down == down,
            "target to client: {} of {} bytes",
            got_down.len(),
            down.len()
        );
        splice
            .await
            .expect("splice task")
            .expect("splice ends cleanly");
    }
}
