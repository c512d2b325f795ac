//! Forwarding one request: route lookup, in-process hub dispatch or HTTP/1.1 to the target,
//! hop-by-hop and X-Forwarded-* headers, error pages. Bodies are streamed, never collected.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use super::h1::valid_host;
use super::limits::{ClientBodyError, InFlight, Limits, MAX_REQUEST_HEAD, TimedBody, Tracked};
use super::table::{Route, RouteTable, Target};
use super::upstream::Upstreams;
use super::websocket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called when a route's target refuses connections or times out.
pub type TargetDownHook = Arc<dyn Fn(&Route) + Send + Sync>;

/// Thaws a route's frozen target; resolves to whether it runs again. The proxy calls it at
/// most once at a time per route, and forwards a frozen route's requests only after it.
pub type ThawHook =
    Arc<dyn Fn(Arc<Route>) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Run `hook` for a frozen `route`, once at a time: concurrent callers wait for the one
/// thaw and then find the route running. True when the route runs (or nobody can thaw it:
/// forwarding is the best there is).
pub(crate) async fn thaw(hook: Option<&ThawHook>, route: &Arc<Route>) -> bool {
    if !route.is_frozen() {
        return true;
    }
    let Some(hook) = hook else { return true };
    let _one = route.exclusive().await;
    if !route.is_frozen() {
        return true;
    }
    if hook(route.clone()).await {
        route.set_frozen(false);
        route.touch();
        true
    } else {
        tracing::warn!(route = %route.spec, "the frozen target could not be thawed");
        false
    }
}

/// A body the proxy sends or receives: an upstream/client stream, the hub's body, or a page.
pub(crate) struct ProxyBody(Inner);

enum Inner {
    Stream(Incoming),
    /// A client's request body, which must keep arriving.
    Client(TimedBody<Incoming>),
    Hub(axum::body::Body),
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        Self(Inner::Full(Some(bytes.into())))
    }
    fn empty() -> Self {
        Self(Inner::Full(None))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Hub(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Stream(b) => b.is_end_stream(),
            Inner::Client(b) => b.is_end_stream(),
            Inner::Hub(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Stream(b) => b.size_hint(),
            Inner::Client(b) => b.size_hint(),
            Inner::Hub(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// What the proxy knows about the client connection; computed once per connection.
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub peer_ip: HeaderValue,
    pub port: HeaderValue,
    pub proto: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        let ip = peer.ip().to_canonical().to_string();
        Self {
            peer,
            peer_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            port: HeaderValue::from(local.port()),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// The proxy: routes, a pooled upstream client, the in-process hub and error handling.
pub struct Proxy {
    routes: Arc<RouteTable>,
    client: Client<HttpConnector, ProxyBody>,
    hub: Option<axum::Router>,
    error_target: Option<Uri>,
    target_down: Option<TargetDownHook>,
    thaw: Option<ThawHook>,
    limits: Limits,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.routes)
            .field("error_target", &self.error_target)
            .finish()
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const DOWN_PAGE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title></head>\n<body><h1>503: Service Unavailable</h1>\n<p>The server for this address is not running, or appears to be down.</p>\n<p>If it is your server, go to the <a href=\"/hub/home\">hub home page</a> to start it again.</p>\n</body></html>\n";

impl Proxy {
    pub fn new(routes: Arc<RouteTable>, hub: Option<axum::Router>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A target that does not answer the SYN must become a 503, not a hang.
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // Without a timer, idle connections are only noticed at the next checkout.
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            routes,
            client,
            hub,
            error_target: None,
            target_down: None,
            thaw: None,
            limits: Limits::default(),
        }
    }

    /// Timeouts, head limit and per-address cap for the connections `serve` accepts.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The table this proxy routes by.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// Called with the route when its target refuses connections or times out.
    pub fn set_target_down_hook(&mut self, f: TargetDownHook) {
        self.target_down = Some(f);
    }

    /// Called (and awaited) before a request goes to a route marked frozen.
    pub fn set_thaw_hook(&mut self, f: ThawHook) {
        self.thaw = Some(f);
    }

    /// Wait until `route`'s target is thawed, if it is frozen: one caller runs the hook,
    /// concurrent ones wait for it and then find the route running. False = still frozen.
    pub(crate) async fn thawed(&self, route: &Arc<Route>) -> bool {
        thaw(self.thaw.as_ref(), route).await
    }

    /// Error pages come from `GET {target}/{CODE}?url={path}` (CHP's `--error-target`). A URL
    /// with no authority (e.g. `/hub/error`) is asked of the in-process hub.
    pub fn set_error_target(&mut self, target: Uri) {
        self.error_target = Some(target);
    }

    /// Handle one request from a client connection; `upstreams` are that connection's own.
    pub(crate) async fn handle(
        &self,
        conn: &ConnInfo,
        upstreams: &Upstreams<ProxyBody>,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        if let Err(code) = check_head(&req).and_then(|()| check_host(&req)) {
            return client_error(code);
        }
        let host = request_host(&req);
        let Some(route) = self.routes.lookup(host, req.uri().path()) else {
            let pq = req.uri().path_and_query().cloned();
            return self.error_page(StatusCode::NOT_FOUND, pq.as_ref()).await;
        };
        match &route.target {
            Target::Hub => self.to_hub(conn, &route, req).await,
            Target::Url(base) => self.to_url(conn, upstreams, &route, base, req).await,
        }
    }

    async fn to_hub(
        &self,
        conn: &ConnInfo,
        route: &Route,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let Some(hub) = &self.hub else {
            let pq = req.uri().path_and_query().cloned();
            return self
                .error_page(StatusCode::SERVICE_UNAVAILABLE, pq.as_ref())
                .await;
        };
        add_forwarded(req.headers_mut(), conn);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(conn.peer));
        let timeout = self.limits.body_timeout;
        let res = hub
            .clone()
            .oneshot(req.map(|b| axum::body::Body::new(TimedBody::new(b, timeout))))
            .await
            .unwrap_or_else(|e| match e {});
        if res.status().as_u16() < 300 {
            route.touch();
        }
        res.map(|b| ProxyBody(Inner::Hub(b)))
    }

    async fn to_url(
        &self,
        conn: &ConnInfo,
        upstreams: &Upstreams<ProxyBody>,
        route: &Arc<Route>,
        base: &Uri,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        if !self.thawed(route).await {
            let pq = req.uri().path_and_query().cloned();
            return self
                .error_page(StatusCode::SERVICE_UNAVAILABLE, pq.as_ref())
                .await;
        }
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let body = ProxyBody(Inner::Client(TimedBody::new(
            body,
            self.limits.body_timeout,
        )));
        let original = parts.uri.path_and_query().cloned();
        let (Some(authority), Some(path)) = (base.authority(), target_path(base, original.clone()))
        else {
            return self
                .error_page(StatusCode::BAD_REQUEST, original.as_ref())
                .await;
        };
        // HTTP/2 clients send no Host header: keep the one they addressed for the target.
        // An HTTP/1.0 client may send none at all: then name the target.
        if !parts.headers.contains_key(header::HOST) {
            let host = parts.uri.authority().unwrap_or(authority);
            if let Ok(host) = HeaderValue::from_str(host.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        // Plain HTTP/1 requests, the hot path, go over this client connection's own upstream
        // connections (no pool lock, no other task). Upgrades go through the shared client,
        // whose connection tasks outlive the client connection, as the spliced socket must;
        // HTTP/2 streams run in tasks of their own, which `upstream::drive` does not poll.
        let own = !upgrade && parts.version <= Version::HTTP_11 && parts.method != Method::CONNECT;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        add_forwarded(&mut parts.headers, conn);
        // hyper accepts only identical Content-Lengths, and would send them all: send one.
        if parts
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .nth(1)
            .is_some()
            && let Some(length) = parts.headers.get(header::CONTENT_LENGTH).cloned()
        {
            parts.headers.insert(header::CONTENT_LENGTH, length);
        }
        let sent = if own {
            parts.uri = Uri::from(path);
            let req = Request::from_parts(parts, body);
            send_own(upstreams, authority, req).await
        } else {
            parts.uri = match Uri::from_parts(absolute(base, path)) {
                Ok(uri) => uri,
                Err(_) => {
                    return self
                        .error_page(StatusCode::BAD_REQUEST, original.as_ref())
                        .await;
                }
            };
            let req = Request::from_parts(parts, body);
            self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Down(e.into())
                } else {
                    Failure::Failed(e.into())
                }
            })
        };
        match sent {
            Ok(mut res) => {
                if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_upgrade) = client_upgrade {
                        let upstream = hyper::upgrade::on(&mut res);
                        tokio::spawn(websocket::splice(
                            client_upgrade,
                            upstream,
                            route.clone(),
                            self.thaw.clone(),
                        ));
                    }
                } else {
                    strip_hop_by_hop(res.headers_mut(), false);
                }
                if res.status().as_u16() < 300 {
                    route.touch();
                }
                res.map(|b| ProxyBody(Inner::Stream(b)))
            }
            Err(Failure::Down(e)) => {
                self.target_is_down(route, &e);
                self.error_page(StatusCode::SERVICE_UNAVAILABLE, original.as_ref())
                    .await
            }
            Err(Failure::Failed(e)) if ClientBodyError::find(&*e).is_some() => {
                // The client's body stalled or broke its framing: its fault, not the target's.
                let status =
                    ClientBodyError::find(&*e).map_or(StatusCode::BAD_REQUEST, |c| c.status());
                tracing::debug!(route = %route.spec, error = %e, "request body failed");
                client_error(status)
            }
            Err(Failure::Failed(e)) => {
                tracing::warn!(route = %route.spec, target = %base, error = %e, "proxy request failed");
                self.error_page(StatusCode::BAD_GATEWAY, original.as_ref())
                    .await
            }
        }
    }

    /// Log that `route`'s target refused or timed out, and tell the hook.
    pub(crate) fn target_is_down(&self, route: &Route, error: &dyn std::fmt::Display) {
        tracing::warn!(route = %route.spec, target = ?route.target, %error, "proxy target is down");
        if let Some(hook) = &self.target_down {
            hook(route);
        }
    }

    /// An error response: from the error target when there is one, else built in.
    pub(crate) async fn error_page(
        &self,
        code: StatusCode,
        pq: Option<&PathAndQuery>,
    ) -> Response<ProxyBody> {
        if let Some(target) = &self.error_target {
            match self.fetch_error_page(target, code, pq).await {
                Ok(res) => return res,
                Err(e) => {
                    tracing::warn!(error = %e, "error target failed; using the built-in page")
                }
            }
        }
        let (ctype, body) = match code {
            StatusCode::SERVICE_UNAVAILABLE => {
                ("text/html; charset=utf-8", ProxyBody::full(DOWN_PAGE))
            }
            _ => (
                "text/plain; charset=utf-8",
                ProxyBody::full(code.canonical_reason().unwrap_or("Error")),
            ),
        };
        let mut res = Response::new(body);
        *res.status_mut() = code;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        res
    }

    async fn fetch_error_page(
        &self,
        target: &Uri,
        code: StatusCode,
        pq: Option<&PathAndQuery>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let mut path = target.path().trim_end_matches('/').to_owned();
        path.push('/');
        path.push_str(code.as_str());
        path.push_str("?url=");
        path.extend(form_urlencoded::byte_serialize(
            pq.map_or("/", |p| p.as_str()).as_bytes(),
        ));
        let (status, headers, body) = match target.authority() {
            Some(authority) => {
                let uri = Uri::builder()
                    .scheme(target.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP))
                    .authority(authority.clone())
                    .path_and_query(path)
                    .build()?;
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .body(ProxyBody::empty())?;
                let res = self.client.request(req).await?;
                let (parts, body) = res.into_parts();
                (parts.status, parts.headers, ProxyBody(Inner::Stream(body)))
            }
            None => {
                let hub = self
                    .hub
                    .as_ref()
                    .ok_or("no hub for a path-only error target")?;
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(path)
                    .body(axum::body::Body::empty())?;
                let res = hub
                    .clone()
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|e| match e {});
                let (parts, body) = res.into_parts();
                (parts.status, parts.headers, ProxyBody(Inner::Hub(body)))
            }
        };
        tracing::debug!(%status, "error page fetched");
        let mut res = Response::new(body);
        *res.status_mut() = code;
        for key in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            if let Some(v) = headers.get(&key) {
                res.headers_mut().insert(key, v.clone());
            }
        }
        Ok(res)
    }
}

/// A request's head as the fast path limits it (the bytes of an HTTP/1.1 head with single
/// spaces), so both paths refuse the same heads with 431. hyper's own limit (`max_buf_size`)
/// applies only to a head that is still incomplete when its buffer fills.
pub(crate) fn check_head<B>(req: &Request<B>) -> Result<(), StatusCode> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let line = req.method().as_str().len() + target + 11;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + headers + 2 > MAX_REQUEST_HEAD {
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and any Host is a valid
/// `host[:port]`; otherwise 400. (HTTP/1.0 may omit it; HTTP/2 uses `:authority`.)
pub(crate) fn check_host<B>(req: &Request<B>) -> Result<(), StatusCode> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => Err(StatusCode::BAD_REQUEST),
        (None, _) => Ok(()),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        _ => Err(StatusCode::BAD_REQUEST),
    }
}

/// A 4xx the client caused: built in (no error target is asked), and the connection closes,
/// since the rest of what the client sent cannot be trusted to be a request.
pub(crate) fn client_error(code: StatusCode) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(code.canonical_reason().unwrap_or("Error")));
    *res.status_mut() = code;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The hostname the client addressed: `Host`, or the authority of an HTTP/2 request.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// Why a request got no response from its target.
enum Failure {
    /// Refused, timed out or unreachable: the 503 page and the target-down hook.
    Down(BoxError),
    /// Anything else (e.g. the target closed mid-response): 502.
    Failed(BoxError),
}

/// Send `req` (origin-form URI) over one of this client connection's connections to
/// `authority`, opening one if none is idle.
async fn send_own(
    upstreams: &Upstreams<ProxyBody>,
    authority: &Authority,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, Failure> {
    let connect = async || {
        upstreams
            .connect(authority)
            .await
            .map_err(|e| Failure::Down(e.into()))
    };
    let (reused, mut sender) = match upstreams.checkout(authority) {
        Some(sender) => (true, sender),
        None => (false, connect().await?),
    };
    let res = match sender.try_send_request(req).await {
        Ok(res) => res,
        Err(mut e) => match e.take_message() {
            // The target closed the idle connection before this request went out (keep-alive
            // timeout): nothing was sent, so one fresh connection is safe for any method.
            Some(req) if reused => {
                sender = connect().await?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| Failure::Failed(e.into()))?
            }
            _ => return Err(Failure::Failed(e.into_error().into())),
        },
    };
    upstreams.checkin(authority.clone(), sender);
    Ok(res)
}

/// The request's full path for the target (CHP does not strip the prefix), with a path in
/// `base` prepended. No allocation unless `base` has a path.
fn target_path(base: &Uri, pq: Option<PathAndQuery>) -> Option<PathAndQuery> {
    let prefix = base.path().trim_end_matches('/');
    if prefix.is_empty() {
        return Some(pq.unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    let rest = pq.as_ref().map_or("/", |p| p.as_str());
    let mut joined = String::with_capacity(prefix.len() + rest.len());
    joined.push_str(prefix);
    joined.push_str(rest);
    PathAndQuery::try_from(joined).ok()
}

/// The absolute URI (for the shared client) of `path` on `base`'s scheme and authority.
fn absolute(base: &Uri, path: PathAndQuery) -> http::uri::Parts {
    let mut parts = http::uri::Parts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(path);
    parts
}

/// True when a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those the Connection header names.
/// For an upgrade, `Connection` and `Upgrade` must reach the target.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        // Host is end-to-end whatever Connection says (a target must see it).
        let listed: Vec<HeaderName> = conn
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.eq_ignore_ascii_case(b"upgrade")
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"host")
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
        if !keep_upgrade {
            headers.remove(header::CONNECTION);
        }
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
}

/// X-Forwarded-For/-Proto/-Port are appended to (as CHP's http-proxy does); -Host is kept if set.
fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo) {
    append_list(headers, &X_FORWARDED_FOR, &conn.peer_ip);
    append_list(headers, &X_FORWARDED_PROTO, &conn.proto);
    append_list(headers, &X_FORWARDED_PORT, &conn.port);
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match headers.get(name) {
        None => {
            headers.insert(name.clone(), value.clone());
        }
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 1 + value.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.push(b',');
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// The service hyper calls for each request of a connection; the request counts as in
/// progress (for the idle watch) until its response body is dropped.
pub(crate) async fn serve_request(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    upstreams: Arc<Upstreams<ProxyBody>>,
    in_flight: InFlight,
    req: Request<Incoming>,
) -> Result<Response<Tracked<ProxyBody>>, Infallible> {
    let res = proxy.handle(&conn, &upstreams, req).await;
    Ok(res.map(|b| Tracked::new(b, in_flight)))
}

/// The service for `serve_app`: Host checked, the body timed, the peer given to the app as
/// axum's `ConnectInfo`.
pub(crate) async fn serve_app_request(
    app: axum::Router,
    peer: SocketAddr,
    body_timeout: Duration,
    in_flight: InFlight,
    mut req: Request<Incoming>,
) -> Result<Response<Tracked<axum::body::Body>>, Infallible> {
    if let Err(code) = check_head(&req).and_then(|()| check_host(&req)) {
        let res = client_error(code).map(axum::body::Body::new);
        return Ok(res.map(|b| Tracked::new(b, in_flight)));
    }
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout)));
    let res = app.oneshot(req).await.unwrap_or_else(|e| match e {});
    Ok(res.map(|b| Tracked::new(b, in_flight)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret, Upgrade"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(is_upgrade(&h));
        let mut up = h.clone();
        strip_hop_by_hop(&mut up, true);
        assert!(up.contains_key(header::UPGRADE) && up.contains_key(header::CONNECTION));
        assert!(
            !up.contains_key("x-secret")
                && !up.contains_key(header::TE)
                && !up.contains_key("keep-alive")
        );
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn forwarded_headers_append() {
        let conn = ConnInfo::new(
            "[::ffff:10.0.0.1]:5000".parse().expect("addr"),
            "127.0.0.1:8000".parse().expect("addr"),
            true,
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("hub.tld"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        add_forwarded(&mut h, &conn);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4,10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-forwarded-host"], "hub.tld");
    }

    #[test]
    fn uris() {
        let pq = |s: &'static str| Some(PathAndQuery::from_static(s));
        let t = |b: &'static str, p| {
            let base = Uri::from_static(b);
            let path = target_path(&base, p)?;
            Uri::from_parts(absolute(&base, path))
                .ok()
                .map(|u| u.to_string())
        };
        assert_eq!(
            t("http://127.0.0.1:9000", pq("/user/a/x?y=1")).as_deref(),
            Some("http://127.0.0.1:9000/user/a/x?y=1")
        );
        assert_eq!(
            t("http://127.0.0.1:9000/", pq("/user/a/")).as_deref(),
            Some("http://127.0.0.1:9000/user/a/")
        );
        assert_eq!(
            t("http://h:1/pre/", pq("/user/a/?q")).as_deref(),
            Some("http://h:1/pre/user/a/?q")
        );
    }
}
