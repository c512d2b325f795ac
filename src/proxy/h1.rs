//! The fast path for HTTP/1.1 client connections (plain, or TLS without h2 by ALPN): requests to user servers and services
//! are forwarded by hand (httparse, one buffer per socket, a rewritten head and whatever body
//! has arrived in one write), which costs about two thirds of the CPU per request of hyper's
//! server and client together (BENCHMARKS.md, bench/proxy.sh).
//!
//! Anything it does not fully understand — the hub's route, no route, upgrades, HTTP/1.0,
//! HTTP/2, `Expect`, CONNECT, absolute-form targets, odd framing, oversized heads — is handed,
//! with the bytes already read, to the hyper path (`listen.rs`, `forward.rs`) for the rest of
//! the connection's life: HTTP/1 keeps no state between requests, so a request boundary is a
//! safe place to switch.
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
use tokio_util::sync::CancellationToken;

use super::forward::{ConnInfo, Proxy};
use super::table::{Route, Target};
use super::upstream::connect_tcp;

/// Larger request heads go to hyper, which allows ~400 KiB and answers 431 beyond.
const MAX_REQUEST_HEAD: usize = 16 << 10;
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
    let mut buf = BytesMut::with_capacity(CLIENT_READ);
    let mut out = Vec::with_capacity(1024);
    let mut pool: Vec<Upstream> = Vec::new();
    loop {
        let mut plan = loop {
            match plan_request(&buf, proxy.routes(), conn, &mut out) {
                Parsed::Forward(plan) => break plan,
                Parsed::Partial if buf.len() < MAX_REQUEST_HEAD => {}
                Parsed::Partial | Parsed::Handoff => return Outcome::Handoff(buf.freeze()),
            }
            let read = if buf.is_empty() {
                // Between requests a connection may be closed for shutdown; mid-head it may not.
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Outcome::Done,
                    read = read_into(client, &mut buf, CLIENT_READ) => read,
                }
            } else {
                read_into(client, &mut buf, CLIENT_READ).await
            };
            match read {
                Ok(0) | Err(_) => return Outcome::Done,
                Ok(_) => {}
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
                Err(BadChunk) => return Outcome::Handoff(buf.freeze()),
            }
            if body_len > COALESCE {
                return Outcome::Handoff(buf.freeze());
            }
            match read_into(client, &mut buf, CLIENT_READ).await {
                Ok(0) | Err(_) => return Outcome::Done,
                Ok(_) => {}
            }
        }
        out.extend_from_slice(&buf[plan.head_len..plan.head_len + body_len]);
        buf.advance(plan.head_len + body_len);
        match exchange(client, &mut out, &mut pool, proxy, &plan).await {
            Next::Continue => {}
            Next::Close => {
                let _ = client.shutdown().await;
                return Outcome::Done;
            }
        }
    }
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

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
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
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Handoff;
    };
    if method == "CONNECT"
        || !target.starts_with('/')
        || !target.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Parsed::Handoff;
    }
    let mut host = None;
    let mut length = None;
    let mut chunked = false;
    let mut connection = ConnectionHeader::default();
    let mut upgrade = false;
    for h in req.headers.iter() {
        let name = h.name;
        if is(name, "host") {
            match (host, std::str::from_utf8(h.value)) {
                (None, Ok(v)) if !v.is_empty() => host = Some(v),
                _ => return Parsed::Handoff,
            }
        } else if is(name, "content-length") {
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
    let Some(host) = host else {
        return Parsed::Handoff;
    };
    if (chunked && length.is_some())
        || (upgrade && connection.has("upgrade"))
        || ["host", "content-length", "transfer-encoding"]
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
    for h in req.headers.iter() {
        if is_hop_by_hop(h.name)
            || connection.lists(h.name)
            || lists.iter().any(|(n, _)| is(h.name, n))
        {
            continue;
        }
        forwarded_host |= is(h.name, "x-forwarded-host");
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

/// Where a message's body ends.
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Until the sender closes (responses without a length).
    UntilClose,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid chunked encoding")]
struct BadChunk;

impl Framing {
    /// How many of `avail`'s bytes belong to the message, and whether it ends there.
    fn take(&mut self, avail: &[u8]) -> Result<(usize, bool), BadChunk> {
        match self {
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(avail.len());
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Framing::Chunked(c) => c.scan(avail),
            Framing::UntilClose => Ok((avail.len(), false)),
        }
    }
}

/// Follows chunked framing (RFC 9112 §7.1) over bytes that are forwarded unchanged, to find
/// where the message ends. Chunk extensions and trailers are skipped over, not interpreted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Chunked {
    /// Reading the hex size; `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: whitespace or a `;ext`, up to CR.
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl Chunked {
    fn scan(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if *self == Chunked::Done {
                break;
            }
            if let Chunked::Data { left } = *self {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += n;
                let left = left - n as u64;
                *self = if left == 0 {
                    Chunked::DataCr
                } else {
                    Chunked::Data { left }
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Start, _) => match hex(b) {
                    Some(d) => Chunked::Size { size: d, digits: 1 },
                    None => return Err(BadChunk),
                },
                (Chunked::Size { size, digits }, _) => match hex(b) {
                    Some(d) if digits < 15 => Chunked::Size {
                        size: size << 4 | d,
                        digits: digits + 1,
                    },
                    Some(_) => return Err(BadChunk),
                    None if b == b'\r' => Chunked::SizeLf { size },
                    None if b == b';' || b == b' ' || b == b'\t' => Chunked::Ext { size },
                    None => return Err(BadChunk),
                },
                (Chunked::Ext { size }, b'\r') => Chunked::SizeLf { size },
                (Chunked::Ext { .. }, b'\n') => return Err(BadChunk),
                (Chunked::Ext { size }, _) => Chunked::Ext { size },
                (Chunked::SizeLf { size: 0 }, b'\n') => Chunked::TrailerStart,
                (Chunked::SizeLf { size }, b'\n') => Chunked::Data { left: size },
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Start,
                (Chunked::TrailerStart, b'\r') => Chunked::EndLf,
                (Chunked::TrailerStart, b'\n') => return Err(BadChunk),
                (Chunked::TrailerLine, b'\r') => Chunked::TrailerLineLf,
                (Chunked::TrailerLine, b'\n') => return Err(BadChunk),
                (Chunked::TrailerStart | Chunked::TrailerLine, _) => Chunked::TrailerLine,
                (Chunked::TrailerLineLf, b'\n') => Chunked::TrailerStart,
                (Chunked::EndLf, b'\n') => Chunked::Done,
                _ => return Err(BadChunk),
            };
        }
        Ok((i, *self == Chunked::Done))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// A response body could not be passed on whole: the target closed early or broke its
/// framing, or the client went away. Either way only closing the client connection is left.
struct Cut;

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
    loop {
        let (mut n, done) = framing.take(src_buf).map_err(|_| Cut)?;
        if !out.is_empty() && out.len() + n <= COALESCE {
            out.extend_from_slice(&src_buf[..n]);
            src_buf.advance(n);
            n = 0;
        }
        if !out.is_empty() {
            dst.write_all(out).await.map_err(|_| Cut)?;
            out.clear();
        }
        if n > 0 {
            // Not coalesced: written straight from the read buffer.
            dst.write_all(&src_buf[..n]).await.map_err(|_| Cut)?;
            src_buf.advance(n);
        }
        if done {
            return Ok(());
        }
        match read_into(src, src_buf, UPSTREAM_READ).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(Cut),
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
    if copy_body(&mut up.stream, &mut up.buf, client, out, &mut body)
        .await
        .is_err()
    {
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

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        Chunked::default().scan(input)
    }

    /// Feeding a message one byte at a time finds the same end as feeding it whole.
    fn scan_bytewise(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut c = Chunked::default();
        let mut used = 0;
        for b in input {
            let (n, done) = c.scan(std::slice::from_ref(b))?;
            used += n;
            if done {
                return Ok((used, true));
            }
        }
        Ok((used, false))
    }

    #[test]
    fn chunked_framing() {
        let msg = b"4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        let next = b"GET / HTTP/1.1\r\n";
        let mut input = msg.to_vec();
        input.extend_from_slice(next);
        assert_eq!(scan_all(&input), Ok((msg.len(), true)));
        assert_eq!(scan_bytewise(&input), Ok((msg.len(), true)));
        assert_eq!(scan_all(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(scan_all(b"a\r\n0123"), Ok((7, false)), "incomplete");
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiX\r\n",
            b"4\nWiki\r\n",
            b"0\r\n\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nTrailer: x\n\r\n",
        ] {
            assert_eq!(
                scan_all(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(scan_bytewise(bad), Err(BadChunk));
        }
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
            "GET /user/a/ HTTP/1.1\r\n\r\n",
            "GET /user/a/ HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
            "GET http://h/user/a/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:80 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /user/a/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT /user/a/f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\n",
            "POST /user/a/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET /user/a/ HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /user/a/\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET  /user/a/ HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(matches!(plan(head).0, Parsed::Handoff), "{head:?}");
        }
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
}
