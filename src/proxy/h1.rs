//! The fast path for HTTP/1.1 client connections (plain, or TLS without h2 by ALPN): requests to user servers and services
//! are forwarded by hand (httparse, one buffer per socket, a rewritten head and whatever body
//! has arrived in one write), which costs about two thirds of the CPU per request of hyper's
//! server and client together (BENCHMARKS.md, bench/proxy.sh).
//!
//! Anything it does not fully understand — the hub's route, no route, upgrades, HTTP/1.0,
//! HTTP/2, `Expect`, CONNECT, absolute-form targets, odd framing — is handed, with the bytes
//! already read, to the hyper path (`listen.rs`, `forward.rs`) for the rest of the
//! connection's life: HTTP/1 keeps no state between requests, so a request boundary is a
//! safe place to switch. What is malformed (no, two or an invalid Host; a head over 16 KiB;
//! broken chunked framing) is answered here (400, 431) as the hyper path would answer it, and
//! waiting for the client is bounded by the `Limits` timeouts.
//!
//! Invariants: a request is handed off only before any byte of it went upstream; an upstream
//! connection carries requests of this client connection only and is reused only when its
//! previous response was read to its end and nothing else arrived on it; the bytes of a
//! message are delimited exactly (Content-Length or chunked framing), so a client's next
//! request is never sent upstream as part of the current one.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http::uri::{Authority, PathAndQuery};
use http_body_util::BodyExt;
use httparse::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::forward::{ConnInfo, Proxy};
use super::limits::{FIRST_REQUEST_GRACE, MAX_REQUEST_HEAD};
use super::table::{Route, Target};
use super::upstream::connect_tcp;

mod syntax;

pub(crate) use syntax::valid_host;
use syntax::{BadChunk, Chunked, Framing, canonical_chunked, parse_length};

/// A target's response head may be larger (long CSP headers, many cookies).
const MAX_RESPONSE_HEAD: usize = 256 << 10;
const MAX_REQUEST_HEADERS: usize = 64;
const MAX_RESPONSE_HEADERS: usize = 100;
/// Room made in a client connection's buffer before a read: enough for a typical request
/// head and small body, little for an idle keep-alive connection to hold.
const CLIENT_READ: usize = 4 << 10;
/// Room made in an upstream connection's buffer before a read: response bodies stream in
/// pieces up to this size.
const UPSTREAM_READ: usize = 16 << 10;
/// After refusing a request: how long, and how much, the rest of it is read and dropped.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 << 10;
/// A body already in the buffer is copied behind the head (one write) up to this size.
const COALESCE: usize = 64 << 10;
/// Idle upstream connections kept per client connection (as in `upstream.rs`).
const MAX_IDLE: usize = 4;

/// A client connection: a TCP socket, or TLS over one (HTTP/1.1 by ALPN or by default).
pub(crate) trait Client: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Client for T {}

/// How a client connection left the fast path.
pub(crate) enum Outcome {
    /// Closed, or to be closed: nothing more to do.
    Done,
    /// The hyper path takes over; these bytes were read from the client and not yet used.
    Handoff(Bytes),
}

/// Serve requests of `client` until it closes, shutdown is requested between requests, or a
/// request needs the hyper path.
pub(crate) async fn serve<C: Client>(
    client: &mut C,
    proxy: &Proxy,
    conn: &ConnInfo,
    shutdown: &CancellationToken,
) -> Outcome {
    let limits = *proxy.limits();
    let mut buf = BytesMut::with_capacity(CLIENT_READ);
    let mut out = Vec::with_capacity(1024);
    let mut pool: Vec<Upstream> = Vec::new();
    // Whether a request has been taken from this connection yet.
    let mut served = false;
    loop {
        // When this request first had to wait for bytes: the keep-alive and header timeouts
        // count from there (read lazily: pipelined requests never look at the clock).
        let mut since = None;
        let mut plan = loop {
            match plan_request(&buf, proxy.routes(), conn, &mut out) {
                Parsed::Forward(plan) => break plan,
                Parsed::Partial if buf.len() < MAX_REQUEST_HEAD => {}
                Parsed::Partial => {
                    return refuse(client, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
                }
                Parsed::Reject(code) => return refuse(client, code).await,
                Parsed::Handoff => return Outcome::Handoff(buf.freeze()),
            }
            let start = *since.get_or_insert_with(Instant::now);
            let read = if buf.is_empty() {
                // Between requests a connection may be closed for shutdown; mid-head it may not.
                // Before its first request it gets a grace (see `FIRST_REQUEST_GRACE`).
                let idle = limits.keepalive_timeout.min(limits.header_timeout);
                let closing = async {
                    shutdown.cancelled().await;
                    if !served {
                        tokio::time::sleep(FIRST_REQUEST_GRACE).await;
                    }
                };
                tokio::select! {
                    biased;
                    () = closing => return Outcome::Done,
                    read = timeout_at(start + idle, read_into(client, &mut buf, CLIENT_READ)) => read,
                }
            } else {
                let deadline = start + limits.header_timeout;
                timeout_at(deadline, read_into(client, &mut buf, CLIENT_READ)).await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or silent for too long: nothing was asked, nothing to answer.
                _ => return Outcome::Done,
            }
        };
        // The whole body must be here before anything goes upstream: then the request is one
        // write, can be sent again on a fresh connection, and never waits on the target while
        // the target waits on us. Larger or slower bodies are streamed by the hyper path.
        let mut body_len = 0;
        loop {
            match plan.body.take(&buf[plan.head_len + body_len..]) {
                Ok((n, done)) => {
                    body_len += n;
                    if done {
                        break;
                    }
                }
                Err(BadChunk) => {
                    tracing::debug!(peer = %conn.peer, "invalid chunked request body");
                    return refuse(client, StatusCode::BAD_REQUEST).await;
                }
            }
            if body_len > COALESCE {
                return Outcome::Handoff(buf.freeze());
            }
            let read = timeout(
                limits.body_timeout,
                read_into(client, &mut buf, CLIENT_READ),
            );
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Outcome::Done,
                Err(_) => return refuse(client, StatusCode::REQUEST_TIMEOUT).await,
            }
        }
        let body = &buf[plan.head_len..plan.head_len + body_len];
        if matches!(plan.body, Framing::Chunked(_)) {
            // Re-emitted as hyper would, so strict targets see what the hyper path sends.
            if canonical_chunked(body, &mut out).is_err() {
                tracing::debug!(peer = %conn.peer, "invalid trailer in a chunked request body");
                return refuse(client, StatusCode::BAD_REQUEST).await;
            }
        } else {
            out.extend_from_slice(body);
        }
        buf.advance(plan.head_len + body_len);
        served = true;
        match exchange(client, &mut out, &mut pool, proxy, &plan).await {
            Next::Continue => {}
            Next::Close => {
                let _ = client.shutdown().await;
                return Outcome::Done;
            }
        }
    }
}

/// Answer a request the fast path will not forward (431, 400, 408) and close. The client may
/// still be sending: what it sends is read and dropped for a moment, so that closing with
/// unread bytes (a reset) does not destroy the answer before the client reads it.
async fn refuse<C: Client>(client: &mut C, code: StatusCode) -> Outcome {
    use std::io::Write;
    let reason = code.canonical_reason().unwrap_or("Error");
    let mut out = Vec::with_capacity(160);
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{reason}",
        code.as_str(),
        reason.len()
    );
    if client.write_all(&out).await.is_ok() && client.shutdown().await.is_ok() {
        let mut sink = [0u8; 4096];
        let linger = async {
            let mut left = LINGER_BYTES;
            while left > 0 {
                match client.read(&mut sink).await {
                    Ok(n) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
        };
        let _ = timeout(LINGER, linger).await;
    }
    Outcome::Done
}

/// A connection to a target, with the bytes read from it and not yet forwarded.
struct Upstream {
    authority: Authority,
    stream: TcpStream,
    buf: BytesMut,
}

/// Read what is available into `buf`, making room first (BytesMut would otherwise offer tiny
/// reads when full).
async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    room: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < room / 4 {
        buf.reserve(room);
    }
    stream.read_buf(buf).await
}

/// An idle connection to `authority` that is still open, if there is one.
fn checkout(pool: &mut Vec<Upstream>, authority: &Authority) -> Option<Upstream> {
    while let Some(i) = pool.iter().position(|u| &u.authority == authority) {
        let mut up = pool.swap_remove(i);
        // An idle connection has nothing to say: EOF means the target closed it, data is a
        // protocol error; either way it is dropped. Unless the reactor saw it become readable,
        // this costs no system call.
        if let Err(e) = up.stream.try_read_buf(&mut up.buf)
            && e.kind() == io::ErrorKind::WouldBlock
        {
            return Some(up);
        }
    }
    None
}

fn checkin(pool: &mut Vec<Upstream>, mut up: Upstream) {
    if up.buf.capacity() > UPSTREAM_READ * 2 {
        // Grown by a large head: an idle connection should not keep that.
        up.buf = BytesMut::new();
    }
    if pool.len() >= MAX_IDLE {
        pool.remove(0);
    }
    pool.push(up);
}

// ---------------------------------------------------------------- requests

enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// The hyper path must take this request (and the connection).
    Handoff,
    /// Answered with this status and closed: the request is malformed (RFC 9112).
    Reject(StatusCode),
    Forward(Plan),
}

/// A request the fast path forwards; its rewritten head is in the `out` buffer.
struct Plan {
    head_len: usize,
    route: Arc<Route>,
    authority: Authority,
    body: Framing,
    /// The client asked to close the connection after this exchange.
    close: bool,
    /// A HEAD request: the response has no body whatever its headers say.
    head: bool,
    /// Safe to send again on a fresh connection if a reused one fails before answering.
    idempotent: bool,
    /// The request's path and query as the client sent them, for error pages.
    original: String,
}

fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction. Framing
/// (Content-Length, Transfer-Encoding) is forwarded as is, since bodies pass through unchanged.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| is(name, h))
}

/// The values of Connection headers seen in a head, to drop the headers they name.
#[derive(Default)]
struct ConnectionHeader<'a> {
    values: [&'a [u8]; 4],
    count: usize,
}

impl<'a> ConnectionHeader<'a> {
    /// False when there are more Connection headers than kept (the caller gives up).
    fn push(&mut self, value: &'a [u8]) -> bool {
        let Some(slot) = self.values.get_mut(self.count) else {
            return false;
        };
        *slot = value;
        self.count += 1;
        true
    }
    fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.values[..self.count].iter().copied().flat_map(tokens)
    }
    fn has(&self, token: &str) -> bool {
        self.tokens()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
    /// The header `name` is listed as connection-specific.
    fn lists(&self, name: &str) -> bool {
        self.count > 0 && self.has(name)
    }
}

fn uninit_headers<const N: usize>() -> [MaybeUninit<httparse::Header<'static>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

fn plan_request(
    buf: &[u8],
    routes: &super::RouteTable,
    conn: &ConnInfo,
    out: &mut Vec<u8>,
) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut storage = uninit_headers::<MAX_REQUEST_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut storage) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    if head_len > MAX_REQUEST_HEAD {
        return Parsed::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Handoff;
    };
    // RFC 9112 §3.2: exactly one Host, and a valid one, or 400 (whatever else is odd).
    let mut hosts = req.headers.iter().filter(|h| is(h.name, "host"));
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) if valid_host(h.value) => std::str::from_utf8(h.value).ok(),
        _ => None,
    };
    let Some(host) = host else {
        return Parsed::Reject(StatusCode::BAD_REQUEST);
    };
    if method == "CONNECT"
        || !target.starts_with('/')
        || !target.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Parsed::Handoff;
    }
    let mut length = None;
    let mut chunked = false;
    let mut connection = ConnectionHeader::default();
    let mut upgrade = false;
    for h in req.headers.iter() {
        let name = h.name;
        if is(name, "content-length") {
            match (length, parse_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => return Parsed::Handoff,
            }
        } else if is(name, "transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Parsed::Handoff;
            }
            chunked = true;
        } else if is(name, "connection") {
            if !connection.push(h.value) {
                return Parsed::Handoff;
            }
        } else if is(name, "upgrade") {
            upgrade = true;
        } else if is(name, "expect") {
            return Parsed::Handoff;
        }
    }
    if (chunked && length.is_some())
        || (upgrade && connection.has("upgrade"))
        || ["content-length", "transfer-encoding"]
            .iter()
            .any(|h| connection.lists(h))
    {
        return Parsed::Handoff;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(route) = routes.lookup(Some(host), path) else {
        return Parsed::Handoff;
    };
    let Target::Url(base) = &route.target else {
        return Parsed::Handoff;
    };
    let (Some(authority), None | Some("http")) = (base.authority(), base.scheme_str()) else {
        return Parsed::Handoff;
    };
    let authority = authority.clone();
    let prefix = base.path().trim_end_matches('/');

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_host = false;
    // X-Forwarded-For/-Proto/-Port are appended to, as CHP's http-proxy does; -Host is kept.
    let lists: [(&str, &[u8]); 3] = [
        ("X-Forwarded-For", conn.peer_ip.as_bytes()),
        ("X-Forwarded-Proto", conn.proto.as_bytes()),
        ("X-Forwarded-Port", conn.port.as_bytes()),
    ];
    let mut wrote_length = false;
    for h in req.headers.iter() {
        // Host is end-to-end even when Connection names it; request trailers are dropped
        // (as by the hyper path), so a Trailer header would announce nothing.
        if is_hop_by_hop(h.name)
            || (connection.lists(h.name) && !is(h.name, "host"))
            || lists.iter().any(|(n, _)| is(h.name, n))
            || is(h.name, "trailer")
        {
            continue;
        }
        forwarded_host |= is(h.name, "x-forwarded-host");
        if is(h.name, "content-length") {
            // Framing as hyper would send it: one Content-Length, no leading zeros.
            if std::mem::replace(&mut wrote_length, true) {
                continue;
            }
            if h.value.len() > 1 && h.value[0] == b'0' {
                let n = length.unwrap_or(0).to_string();
                push_header(out, h.name.as_bytes(), n.as_bytes());
                continue;
            }
        } else if is(h.name, "transfer-encoding") {
            push_header(out, h.name.as_bytes(), b"chunked");
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    for (name, ours) in lists {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for h in req.headers.iter().filter(|h| is(h.name, name)) {
            out.extend_from_slice(h.value);
            out.push(b',');
        }
        out.extend_from_slice(ours);
        out.extend_from_slice(b"\r\n");
    }
    if !forwarded_host {
        push_header(out, b"X-Forwarded-Host", host.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Forward(Plan {
        head_len,
        route: route.clone(),
        authority,
        body: if chunked {
            Framing::Chunked(Chunked::default())
        } else {
            Framing::Length(length.unwrap_or(0))
        },
        close: connection.has("close"),
        head: method == "HEAD",
        idempotent: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"].contains(&method),
        original: target.to_owned(),
    })
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------- bodies

/// A response body could not be passed on whole: the target closed early or broke its
/// framing, or the client went away. If nothing reached the client yet (`sent` false), it can
/// still be told (502); otherwise only closing the client connection is left.
struct Cut {
    sent: bool,
}

/// Forward the rest of a response's body from `src` to `dst`: first what is in `src_buf`,
/// preceded by `out` (the head, not yet written), then as it arrives. On success `src_buf` holds
/// only bytes after the message.
async fn copy_body<C: Client>(
    src: &mut TcpStream,
    src_buf: &mut BytesMut,
    dst: &mut C,
    out: &mut Vec<u8>,
    framing: &mut Framing,
) -> Result<(), Cut> {
    let mut sent = false;
    loop {
        let (mut n, done) = framing.take(src_buf).map_err(|_| Cut { sent })?;
        if !out.is_empty() && out.len() + n <= COALESCE {
            out.extend_from_slice(&src_buf[..n]);
            src_buf.advance(n);
            n = 0;
        }
        if !out.is_empty() {
            sent = true;
            dst.write_all(out).await.map_err(|_| Cut { sent })?;
            out.clear();
        }
        if n > 0 {
            // Not coalesced: written straight from the read buffer.
            sent = true;
            dst.write_all(&src_buf[..n])
                .await
                .map_err(|_| Cut { sent })?;
            src_buf.advance(n);
        }
        if done {
            return Ok(());
        }
        match read_into(src, src_buf, UPSTREAM_READ).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(Cut { sent }),
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------- responses

/// What the target's response head says about the rest of the exchange.
struct ResponseHead {
    head_len: usize,
    status: u16,
    body: Framing,
    /// The client connection must close after this response.
    close: bool,
    /// The upstream connection may carry another request afterwards.
    reusable: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid response head from the target")]
struct BadResponse;

/// Parse a response head in `buf` and write the client's version of it to `out`.
fn plan_response(
    buf: &[u8],
    head_request: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    let head_len = match res.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(BadResponse);
    };
    // A 101 answers an upgrade, and upgrades go through hyper.
    if status == 101 || !(100..1000).contains(&status) {
        return Err(BadResponse);
    }
    let mut length = None;
    let mut encoding: Option<&[u8]> = None;
    let mut connection = ConnectionHeader::default();
    for h in res.headers.iter() {
        if is(h.name, "content-length") {
            match (length, parse_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => return Err(BadResponse),
            }
        } else if is(h.name, "transfer-encoding") {
            if encoding.is_some() {
                return Err(BadResponse);
            }
            encoding = Some(h.value);
        } else if is(h.name, "connection") && !connection.push(h.value) {
            return Err(BadResponse);
        }
    }
    let informational = status < 200;
    let body = if informational || head_request || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match (encoding, length) {
            // The final coding decides; a length next to it is ignored (RFC 9112 §6.3).
            (Some(te), _) => match tokens(te).last() {
                Some(last) if last.eq_ignore_ascii_case(b"chunked") => {
                    Framing::Chunked(Chunked::default())
                }
                _ => Framing::UntilClose,
            },
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let until_close = matches!(body, Framing::UntilClose);
    let close = !informational && (client_close || until_close);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = StatusCode::from_u16(status).map_err(|_| BadResponse)?;
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        if is_hop_by_hop(h.name)
            || connection.lists(h.name)
            || (encoding.is_some() && is(h.name, "content-length"))
        {
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        head_len,
        status,
        body,
        close,
        reusable: version == 1 && !until_close && !connection.has("close"),
    }))
}

// ---------------------------------------------------------------- one exchange

enum Next {
    Continue,
    Close,
}

/// Why no response head came from the target.
enum Failed {
    /// Nothing came back (closed or reset before a byte): may be retried on a fresh connection.
    Silent,
    /// The head was invalid, too large, or cut off.
    Bad,
}

async fn read_response_head(
    up: &mut Upstream,
    head_request: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, Failed> {
    loop {
        if !up.buf.is_empty() {
            match plan_response(&up.buf, head_request, client_close, out) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if up.buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(None) | Err(_) => return Err(Failed::Bad),
            }
        }
        match read_into(&mut up.stream, &mut up.buf, UPSTREAM_READ).await {
            Ok(n) if n > 0 => {}
            _ if up.buf.is_empty() => return Err(Failed::Silent),
            _ => return Err(Failed::Bad),
        }
    }
}

/// Forward one planned request (the whole of it in `out`) and the response.
async fn exchange<C: Client>(
    client: &mut C,
    out: &mut Vec<u8>,
    pool: &mut Vec<Upstream>,
    proxy: &Proxy,
    plan: &Plan,
) -> Next {
    if !proxy.thawed(&plan.route).await {
        return error_page(client, proxy, StatusCode::SERVICE_UNAVAILABLE, plan).await;
    }
    let (mut up, mut reused) = match checkout(pool, &plan.authority) {
        Some(up) => (up, true),
        None => match connect(&plan.authority).await {
            Ok(up) => (up, false),
            Err(e) => return target_down(client, proxy, plan, &e).await,
        },
    };
    let mut head = loop {
        let result = match up.stream.write_all(out).await {
            Ok(()) => read_response_head(&mut up, plan.head, plan.close, out).await,
            Err(_) => Err(Failed::Silent),
        };
        match result {
            Ok(head) => break head,
            // The target closed the idle connection as the request went out; `out` still
            // holds the request (plan_response writes to it only once a head has arrived).
            Err(Failed::Silent) if reused && plan.idempotent => {
                reused = false;
                up = match connect(&plan.authority).await {
                    Ok(up) => up,
                    Err(e) => return target_down(client, proxy, plan, &e).await,
                };
            }
            Err(_) => {
                tracing::warn!(route = %plan.route.spec, "proxy request failed: no valid response from the target");
                return error_page(client, proxy, StatusCode::BAD_GATEWAY, plan).await;
            }
        }
    };
    // Informational responses (100, 103) are passed on; the final one follows.
    while head.status < 200 {
        up.buf.advance(head.head_len);
        if client.write_all(out).await.is_err() {
            return Next::Close;
        }
        head = match read_response_head(&mut up, plan.head, plan.close, out).await {
            Ok(head) => head,
            Err(_) => return Next::Close,
        };
    }
    if head.status < 300 {
        plan.route.touch();
    }
    up.buf.advance(head.head_len);
    let mut body = head.body;
    if let Err(Cut { sent }) = copy_body(&mut up.stream, &mut up.buf, client, out, &mut body).await
    {
        if !sent {
            tracing::warn!(route = %plan.route.spec, "proxy request failed: invalid response body from the target");
            return error_page(client, proxy, StatusCode::BAD_GATEWAY, plan).await;
        }
        // Mid-body, the client can only learn of a failure by the connection closing.
        return Next::Close;
    }
    if head.reusable && up.buf.is_empty() {
        checkin(pool, up);
    }
    if head.close {
        Next::Close
    } else {
        Next::Continue
    }
}

async fn connect(authority: &Authority) -> Result<Upstream, super::upstream::ConnectError> {
    Ok(Upstream {
        authority: authority.clone(),
        stream: connect_tcp(authority).await?,
        buf: BytesMut::new(),
    })
}

async fn target_down<C: Client>(
    client: &mut C,
    proxy: &Proxy,
    plan: &Plan,
    error: &super::upstream::ConnectError,
) -> Next {
    proxy.target_is_down(&plan.route, error);
    error_page(client, proxy, StatusCode::SERVICE_UNAVAILABLE, plan).await
}

/// Answer with the proxy's error page for `code`, then close: the rest of the request may
/// still be on its way.
async fn error_page<C: Client>(
    client: &mut C,
    proxy: &Proxy,
    code: StatusCode,
    plan: &Plan,
) -> Next {
    let pq = PathAndQuery::try_from(plan.original.as_str()).ok();
    let (parts, body) = proxy.error_page(code, pq.as_ref()).await.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "error page body failed");
            Bytes::new()
        }
    };
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str()) && name != http::header::CONTENT_LENGTH {
            push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    push_header(
        &mut out,
        b"content-length",
        body.len().to_string().as_bytes(),
    );
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if !plan.head {
        out.extend_from_slice(&body);
    }
    let _ = client.write_all(&out).await;
    Next::Close
}

// ---------------------------------------------------------------- handoff

/// A client connection given to hyper: the bytes the fast path read first, then the socket.
pub(crate) struct Rewind<T> {
    pre: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    pub fn new(pre: Bytes, io: T) -> Self {
        Self { pre, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pre.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.pre.len().min(buf.remaining());
        buf.put_slice(&self.pre[..n]);
        self.pre.advance(n);
        if self.pre.is_empty() {
            // An emptied slice still holds the whole read buffer; an upgraded connection
            // would keep it for its life.
            self.pre = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::RouteTable;
    use proptest::prelude::*;

    /// Once hyper has read the bytes handed over, the connection no longer holds the fast
    /// path's read buffer (an upgraded connection lives for hours).
    #[tokio::test]
    async fn a_handed_over_buffer_is_let_go_once_read() {
        use tokio::io::AsyncReadExt;
        let mut buf = BytesMut::with_capacity(CLIENT_READ);
        buf.extend_from_slice(b"GET /hub/ HTTP/1.1\r\n\r\n");
        let pre = buf.freeze();
        let probe = pre.clone();
        let mut rewind = Rewind::new(pre, tokio::io::empty());
        let mut read = Vec::new();
        rewind.read_to_end(&mut read).await.expect("read");
        assert_eq!(read, probe);
        assert!(probe.is_unique(), "the Rewind still holds the read buffer");
    }

    fn table() -> RouteTable {
        let t = RouteTable::new();
        t.add("/hub/", Target::Hub, serde_json::Value::Null);
        t.add(
            "/user/a/",
            Target::Url("http://127.0.0.1:9000/pre/".parse().expect("uri")),
            serde_json::Value::Null,
        );
        t
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(
            "10.0.0.1:5000".parse().expect("addr"),
            "127.0.0.1:8000".parse().expect("addr"),
            false,
        )
    }

    fn plan(head: &str) -> (Parsed, String) {
        let mut out = Vec::new();
        let parsed = plan_request(head.as_bytes(), &table(), &conn(), &mut out);
        (parsed, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn request_heads_are_rewritten() {
        let head = "POST /user/a/api?x=1 HTTP/1.1\r\nHost: hub.tld\r\nConnection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\n\
            X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nContent-Length: 3\r\nCookie: c=1\r\n\r\nabc";
        let (parsed, out) = plan(head);
        let Parsed::Forward(p) = parsed else {
            panic!("not forwarded")
        };
        assert_eq!(p.head_len, head.len() - 3);
        assert!(matches!(p.body, Framing::Length(3)));
        assert!(!p.close && !p.head && !p.idempotent);
        assert_eq!(p.original, "/user/a/api?x=1");
        assert_eq!(p.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(
            out,
            "POST /pre/user/a/api?x=1 HTTP/1.1\r\nHost: hub.tld\r\nContent-Length: 3\r\nCookie: c=1\r\n\
             X-Forwarded-For: 1.2.3.4,5.6.7.8,10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8000\r\n\
             X-Forwarded-Host: hub.tld\r\n\r\n"
        );
        let (parsed, out) = plan(
            "GET /user/a/ HTTP/1.1\r\nhost: h\r\nx-forwarded-host: orig\r\nConnection: close\r\n\r\n",
        );
        let Parsed::Forward(p) = parsed else {
            panic!("not forwarded")
        };
        assert!(p.close && p.idempotent);
        assert!(out.contains("x-forwarded-host: orig\r\n") && !out.contains("X-Forwarded-Host"));
        assert!(matches!(
            plan("GET /user/a/ HTTP/1.1\r\nHost: h\r\n").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn what_goes_to_hyper() {
        for head in [
            "GET /hub/home HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /user/a/ HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/user/a/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:80 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /user/a/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT /user/a/f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /user/a/\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET  /user/a/ HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(matches!(plan(head).0, Parsed::Handoff), "{head:?}");
        }
    }

    #[test]
    fn what_is_refused() {
        let big = format!(
            "GET /user/a/ HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "x".repeat(16 << 10)
        );
        let cases = [
            ("GET /user/a/ HTTP/1.1\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: h:x\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: [zz]\r\n\r\n", 400),
            ("GET /user/a/ HTTP/1.1\r\nHost: \r\n\r\n", 400),
            // Refused before it would have been handed over (RFC 9112: any HTTP/1.1 request).
            ("CONNECT h:80 HTTP/1.1\r\n\r\n", 400),
            ("GET /hub/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (big.as_str(), 431),
        ];
        for (head, code) in cases {
            match plan(head).0 {
                Parsed::Reject(c) => assert_eq!(c.as_u16(), code, "{head:?}"),
                _ => panic!("not refused: {head:?}"),
            }
        }
    }

    #[test]
    fn framing_and_host_are_forwarded_normalised() {
        let (parsed, out) = plan(
            "POST /user/a/ HTTP/1.1\r\nHost: h:8000\r\nConnection: host\r\nContent-Length: 03\r\nContent-Length: 3\r\nTrailer: X\r\n\r\n",
        );
        assert!(matches!(parsed, Parsed::Forward(_)));
        assert!(out.contains("Host: h:8000\r\n"), "{out}");
        assert_eq!(out.matches("Content-Length").count(), 1, "{out}");
        assert!(
            out.contains("Content-Length: 3\r\n") && !out.contains("Trailer"),
            "{out}"
        );
        let (parsed, out) =
            plan("POST /user/a/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked \r\n\r\n");
        assert!(matches!(
            parsed,
            Parsed::Forward(Plan {
                body: Framing::Chunked(_),
                ..
            })
        ));
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    }

    fn response(head: &str, head_request: bool, client_close: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let r = plan_response(head.as_bytes(), head_request, client_close, &mut out)
            .expect("valid")
            .expect("complete");
        (r, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn response_heads_and_framing() {
        let head = "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-Kept: 1\r\n\r\nok";
        let (r, out) = response(head, false, false);
        assert_eq!(
            (r.status, r.head_len, r.close, r.reusable),
            (200, head.len() - 2, false, true)
        );
        assert!(matches!(r.body, Framing::Length(2)));
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nX-Kept: 1\r\n\r\n"
        );

        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            true,
        );
        assert!(matches!(r.body, Framing::Chunked(_)) && r.close && r.reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );

        let (r, _) = response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
        assert!(matches!(r.body, Framing::Length(0)), "HEAD has no body");
        for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let (r, out) = response(
                &format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"),
                false,
                true,
            );
            assert!(matches!(r.body, Framing::Length(0)), "{status}");
            assert_eq!(out.contains("Connection: close"), !status.starts_with('1'));
        }
        let (r, out) = response("HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert!(matches!(r.body, Framing::UntilClose) && r.close && !r.reusable);
        assert!(out.contains("Connection: close"));
        let (r, _) = response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, false);
        assert!(!r.reusable && !r.close);
        let (r, _) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            false,
            false,
        );
        assert!(!r.reusable && !r.close);

        let mut out = Vec::new();
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                plan_response(bad.as_bytes(), false, false, &mut out).is_err(),
                "{bad:?}"
            );
        }
        assert!(matches!(
            plan_response(b"HTTP/1.1 200 OK\r\n", false, false, &mut out),
            Ok(None)
        ));
    }

    // ------------------------------------------------------------ against hyper

    /// What hyper's HTTP/1 server makes of the first request in `input`: `None` if it refuses
    /// the head or the body, else the body's exact length if it has one (Content-Length) and
    /// the body's bytes.
    fn hyper_reads(rt: &tokio::runtime::Runtime, input: &[u8]) -> Option<(Option<u64>, Vec<u8>)> {
        use std::sync::Mutex;
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let seen = Arc::new(Mutex::new(None));
            let record = seen.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let exact = http_body::Body::size_hint(req.body()).exact();
                        if let Ok(body) = req.into_body().collect().await {
                            *record.lock().expect("lock") = Some((exact, body.to_bytes().to_vec()));
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Empty::<Bytes>::new(),
                        ))
                    }
                });
            // Half-close: the input ends with our EOF, which must not cancel the request.
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let _ = client.write_all(input).await;
            let _ = client.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            seen.lock().expect("lock").take()
        })
    }

    /// The data of a canonical chunked body.
    fn dechunk(mut body: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            let line = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size line");
            let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).expect("hex"), 16)
                .expect("canonical size");
            body = &body[line + 2..];
            if size == 0 {
                assert_eq!(body, b"\r\n", "no trailers");
                return data;
            }
            data.extend_from_slice(&body[..size]);
            assert_eq!(&body[size..size + 2], b"\r\n");
            body = &body[size + 2..];
        }
    }

    fn chunk_line() -> impl Strategy<Value = String> {
        // Sizes with leading zeros and either case, then what may follow a size.
        (
            prop::sample::select(vec!["", "0", "00"]),
            prop::sample::select(vec![
                "", " ", "\t ", ";a=b", " ;x", "; \"q\"", " x", "\n", ";\n",
            ]),
        )
            .prop_map(|(zeros, tail)| format!("{zeros}{{}}{tail}\r\n"))
    }

    fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(
                (
                    chunk_line(),
                    prop::collection::vec(any::<u8>(), 1..20),
                    any::<bool>(),
                ),
                0..4,
            ),
            chunk_line(),
            prop::sample::select(vec!["", "X-T: 1\r\n", "bad trailer\r\n", "X: \u{1}\r\n"]),
            prop::sample::select(vec!["\r\n", "", "\n", "junk"]),
        )
            .prop_map(|(chunks, last, trailer, end)| {
                let mut body = Vec::new();
                for (line, data, upper) in chunks {
                    let size = if upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    body.extend_from_slice(line.replace("{}", &size).as_bytes());
                    body.extend_from_slice(&data);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(last.replace("{}", "0").as_bytes());
                body.extend_from_slice(trailer.as_bytes());
                body.extend_from_slice(end.as_bytes());
                body
            })
    }

    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "Host: h",
                "Host: h:80",
                "Host: [::1]:1",
                "Host: a b",
                "Host:",
                "Host: h",
                "Content-Length: 3",
                "Content-Length: 03",
                "Content-Length: 3, 3",
                "Content-Length:  3 ",
                "Content-Length: +3",
                "Content-Length: 0",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: Chunked ",
                "Transfer-Encoding: gzip, chunked",
                "Transfer-Encoding: chunked, gzip",
                "Connection: close",
                "Connection: host",
                "Connection: content-length",
                "Connection: upgrade",
                "Upgrade: websocket",
                "Expect: 100-continue",
                "Trailer: x",
                "X-Forwarded-For: 1.2.3.4",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z-]{1,8}: [ -~]{0,12}",
        ]
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "CONNECT"]),
            prop::sample::select(vec!["/user/a/", "/user/a/x?y=1", "/user/a/", "/hub/", "*"]),
            prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
            // Mostly one valid Host first, so that most requests get as far as framing.
            (
                prop::sample::select(vec![
                    Some("Host: h"),
                    Some("Host: h"),
                    Some("Host: h"),
                    None,
                ]),
                prop::collection::vec(header(), 0..5),
            )
                .prop_map(|(host, mut rest)| {
                    rest.splice(0..0, host.map(str::to_owned));
                    rest
                }),
            prop_oneof![
                chunked_body(),
                prop::collection::vec(any::<u8>(), 0..16),
                Just(b"abc".to_vec()),
            ],
        )
            .prop_map(|(method, target, version, headers, body)| {
                let mut req = format!("{method} {target} {version}\r\n");
                for h in headers {
                    req.push_str(&h);
                    req.push_str("\r\n");
                }
                req.push_str("\r\n");
                let mut req = req.into_bytes();
                req.extend_from_slice(&body);
                req
            })
    }

    /// What the fast path would send upstream for `input`, if it forwards it whole:
    /// the framing it decided (exact length or chunked) and the body's data.
    fn fast_path_reads(input: &[u8]) -> Option<(Option<u64>, Vec<u8>)> {
        let mut out = Vec::new();
        let Parsed::Forward(mut plan) = plan_request(input, &table(), &conn(), &mut out) else {
            return None;
        };
        let exact = match plan.body {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let rest = &input[plan.head_len..];
        let Ok((n, true)) = plan.body.take(rest) else {
            return None;
        };
        if exact.is_some() {
            return Some((exact, rest[..n].to_vec()));
        }
        let mut canon = Vec::new();
        canonical_chunked(&rest[..n], &mut canon).ok()?;
        Some((None, dechunk(&canon)))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the fast path's parsing.
        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            let _ = plan_request(&input, &table(), &conn(), &mut out);
            let _ = Chunked::default().scan(&input);
            let _ = canonical_chunked(&input, &mut out);
            let _ = valid_host(&input);
            let _ = plan_response(&input, false, false, &mut out);
        }

        /// What the fast path forwards, hyper's server accepts, with the same framing and
        /// the same body data.
        #[test]
        fn forwarded_requests_are_framed_as_hyper_frames_them(input in request()) {
            if let Some(ours) = fast_path_reads(&input) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                prop_assert_eq!(hyper_reads(&rt, &input), Some(ours), "{:?}", String::from_utf8_lossy(&input));
            }
        }

        /// A chunked body the fast path accepts, hyper accepts with the same data.
        #[test]
        fn chunked_bodies_are_read_as_hyper_reads_them(body in chunked_body()) {
            let mut input = b"POST /user/a/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(&body);
            if let Some(ours) = fast_path_reads(&input) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                prop_assert_eq!(hyper_reads(&rt, &input), Some(ours), "{:?}", String::from_utf8_lossy(&body));
            }
        }
    }
}
