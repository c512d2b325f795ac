//! `jupyterhub proxy`: the proxy standalone, with configurable-http-proxy's flags and REST API
//! (`/api/routes`), so it can replace CHP under the Python JupyterHub. Behaviour follows
//! CHP's lib/configproxy.js; route specs are CHP paths (`/user/alice`, no trailing slash).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::table::{Route, RouteTable, Target};
use super::{Error, Limits, Proxy, load_tls, serve, serve_app};

/// Flags of `jupyterhub proxy`, as configurable-http-proxy's. The API token is read from
/// `CONFIGPROXY_AUTH_TOKEN` only (a flag would show it in `ps`). `--log-level` is the global flag.
#[derive(Debug, clap::Args)]
pub struct ChpArgs {
    /// Public-facing IP of the proxy ("" or "*" = all interfaces).
    #[arg(long, default_value = "")]
    pub ip: String,
    /// Public-facing port of the proxy.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Inward-facing IP for API requests.
    #[arg(long, default_value = "localhost")]
    pub api_ip: String,
    /// Inward-facing port for API requests (default: port + 1).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Default proxy target (proto://host[:port]).
    #[arg(long)]
    pub default_target: Option<String>,
    /// Alternate server for handling proxy errors (proto://host[:port]/path).
    #[arg(long)]
    pub error_target: Option<String>,
    /// SSL key to use, if any.
    #[arg(long)]
    pub ssl_key: Option<PathBuf>,
    /// SSL certificate (chain) to use, if any.
    #[arg(long)]
    pub ssl_cert: Option<PathBuf>,
    /// Use host routing (host as first level of path).
    #[arg(long)]
    pub host_routing: bool,
    /// Write our PID to a file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Seconds to a whole request head, from connecting or the previous response [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = millis)]
    pub header_timeout: Option<u32>,
    /// Seconds a request body may go without a byte arriving [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = millis)]
    pub body_timeout: Option<u32>,
    /// Seconds an idle connection waits for its next request [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = millis)]
    pub keepalive_timeout: Option<u32>,
    /// Connections at once from one client address, 0 = no limit [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Accepted for compatibility (JupyterHub passes them when statsd is configured); ignored.
    #[arg(long, hide = true)]
    pub statsd_host: Option<String>,
    #[arg(long, hide = true)]
    pub statsd_port: Option<String>,
    #[arg(long, hide = true)]
    pub statsd_prefix: Option<String>,
}

/// A positive number of seconds (at most a day), for the timeout flags; kept as milliseconds
/// (small: these arguments live in the command enum).
fn millis(s: &str) -> Result<u32, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86400.0 => Ok(((v * 1000.0).round() as u32).max(1)),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

impl ChpArgs {
    fn limits(&self) -> Limits {
        let default = Limits::default();
        let or = |ms: Option<u32>, d| ms.map_or(d, |ms| Duration::from_millis(ms.into()));
        Limits {
            header_timeout: or(self.header_timeout, default.header_timeout),
            body_timeout: or(self.body_timeout, default.body_timeout),
            keepalive_timeout: or(self.keepalive_timeout, default.keepalive_timeout),
            max_connections_per_ip: self
                .max_connections_per_ip
                .map_or(default.max_connections_per_ip, |n| n as usize),
        }
    }
}

/// Shared state of the API server.
struct Api {
    routes: Arc<RouteTable>,
    token: Option<String>,
    host_routing: bool,
}

fn parse_target(target: &str) -> Result<http::Uri, Error> {
    let bad = || Error::BadTarget {
        url: target.to_owned(),
    };
    let uri: http::Uri = target.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(bad()),
    }
}

async fn bind(ip: &str, port: u16) -> Result<TcpListener, Error> {
    let result = match ip {
        // CHP: "" (and the "*" alias) = all interfaces; prefer dual-stack, fall back to IPv4.
        "" | "*" => match super::bind(("::", port)).await {
            Ok(l) => Ok(l),
            Err(_) => super::bind(("0.0.0.0", port)).await,
        },
        ip => super::bind((ip.trim_matches(|c| c == '[' || c == ']'), port)).await,
    };
    result.map_err(|source| Error::Bind {
        addr: format!("{ip}:{port}"),
        source,
    })
}

/// Run the CHP drop-in until SIGTERM or SIGINT.
pub async fn run_chp(args: ChpArgs) -> Result<(), Error> {
    let token = std::env::var("CONFIGPROXY_AUTH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!("REST API is not authenticated: CONFIGPROXY_AUTH_TOKEN is not set");
    }
    if args.statsd_host.is_some() {
        tracing::warn!("--statsd-host is not supported and is ignored");
    }
    let routes = Arc::new(RouteTable::new());
    if let Some(target) = &args.default_target {
        let uri = parse_target(target)?;
        routes.add("/", Target::Url(uri), Value::Object(Map::new()));
        if let Some(route) = routes.get("/") {
            route.touch();
        }
    }
    let mut proxy = Proxy::new(routes.clone(), None);
    let limits = args.limits();
    proxy.set_limits(limits);
    if let Some(target) = &args.error_target {
        proxy.set_error_target(parse_target(target)?);
    }
    let tls = match (&args.ssl_cert, &args.ssl_key) {
        (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
        (None, None) => None,
        _ => return Err(Error::TlsPair),
    };
    let public = bind(&args.ip, args.port).await?;
    let api_port = args.api_port.unwrap_or(args.port.saturating_add(1));
    let api_listener = bind(&args.api_ip, api_port).await?;
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, std::process::id().to_string()).map_err(|source| Error::Io {
            path: pid_file.clone(),
            source,
        })?;
    }
    let api = Arc::new(Api {
        routes,
        token,
        host_routing: args.host_routing,
    });
    let app = axum::Router::new().fallback(api_request).with_state(api);
    let shutdown = CancellationToken::new();
    tracing::info!(public = %public.local_addr().map_err(Error::Serve)?, api = %api_listener.local_addr().map_err(Error::Serve)?, "proxy listening");
    let api_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { serve_app(api_listener, app, limits, shutdown).await })
    };
    let proxy_task = tokio::spawn(serve(public, Arc::new(proxy), tls, shutdown.clone()));
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let proxied = proxy_task
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
    let api = api_task
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
    proxied.map_err(Error::Serve)?;
    api.map_err(Error::Serve)?;
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// CHP's `authorized` decorator: `Authorization` must contain `token <TOKEN>`.
fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let Some(expected) = &api.token else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = value.match_indices("token").find_map(|(i, _)| {
        let rest = &value[i + 5..];
        let trimmed = rest.trim_start();
        (trimmed.len() < rest.len())
            .then(|| trimmed.split_whitespace().next())
            .flatten()
    });
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

/// CHP's `trimPrefix`: leading `/`, no trailing `/` (except the root).
fn clean_path(path: &str) -> String {
    let mut p = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    p
}

impl Api {
    /// The table spec for a CHP path: with host routing, `/host.tld/x` is host route `host.tld/x`.
    fn table_spec<'a>(&self, chp_path: &'a str) -> &'a str {
        if self.host_routing && chp_path != "/" {
            &chp_path[1..]
        } else {
            chp_path
        }
    }

    fn chp_path(&self, route: &Route) -> String {
        if route.spec.starts_with('/') {
            route.spec.clone()
        } else {
            format!("/{}", route.spec)
        }
    }
}

fn iso(micros: i64) -> Value {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(t) => Value::String(t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        Err(_) => Value::Null,
    }
}

/// A route as CHP returns it: its data, `target` and `last_activity`.
fn route_json(route: &Route) -> Value {
    let mut obj = match &route.data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Target::Url(uri) = &route.target {
        obj.insert(
            "target".into(),
            Value::String(uri.to_string().trim_end_matches('/').to_owned()),
        );
    }
    obj.insert(
        "last_activity".into(),
        route.last_activity().map_or(Value::Null, iso),
    );
    Value::Object(obj)
}

fn json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn parse_since(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_microsecond());
    }
    // Python's naive isoformat(): UTC by JupyterHub's convention.
    let civil = s.parse::<jiff::civil::DateTime>().ok().or_else(|| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    })?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_microsecond())
}

async fn api_request(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(rest) = path
        .strip_prefix("/api/routes")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if !matches!(method, Method::GET | Method::POST | Method::DELETE) {
        return (StatusCode::METHOD_NOT_ALLOWED, "Method not supported").into_response();
    }
    if !authorized(&api, &headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    let chp_path = clean_path(&decoded);
    let spec = api.table_spec(&chp_path);
    match method {
        Method::GET if rest.is_empty() || rest == "/" => list_routes(&api, uri.query()),
        Method::GET => match api.routes.get(spec) {
            Some(route) => json(StatusCode::OK, &route_json(&route)),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Method::POST => {
            let data: Value = match serde_json::from_slice(&body) {
                Ok(Value::Null) => Value::Object(Map::new()),
                Ok(v) => v,
                Err(e) => {
                    return (StatusCode::BAD_REQUEST, format!("Body not valid JSON: {e}"))
                        .into_response();
                }
            };
            let Value::Object(mut data) = data else {
                return (StatusCode::BAD_REQUEST, "Must specify 'target' as string")
                    .into_response();
            };
            let target = match data.remove("target") {
                Some(Value::String(t)) => t,
                _ => {
                    return (StatusCode::BAD_REQUEST, "Must specify 'target' as string")
                        .into_response();
                }
            };
            let target = match parse_target(&target) {
                Ok(t) => t,
                Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            };
            data.remove("last_activity");
            tracing::info!(route = %chp_path, %target, "adding route");
            api.routes
                .add(spec, Target::Url(target), Value::Object(data));
            // CHP stamps a new route with the time it was added.
            if let Some(route) = api.routes.get(spec) {
                route.touch();
            }
            StatusCode::CREATED.into_response()
        }
        Method::DELETE => match api.routes.remove(spec) {
            Some(_) => {
                tracing::info!(route = %chp_path, "removed route");
                StatusCode::NO_CONTENT.into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, "Method not supported").into_response(),
    }
}

fn list_routes(api: &Api, query: Option<&str>) -> Response {
    let since_param = query.and_then(|q| {
        let pairs: Vec<_> = form_urlencoded::parse(q.as_bytes()).collect();
        let find = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.to_string())
        };
        find("inactiveSince")
            .or_else(|| find("inactive_since"))
            .filter(|v| !v.is_empty())
    });
    let since = match since_param {
        None => None,
        Some(s) => match parse_since(&s) {
            Some(t) => Some(t),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("Invalid datestamp '{s}' must be ISO8601."),
                )
                    .into_response();
            }
        },
    };
    let mut out = Map::new();
    for route in api.routes.list() {
        if since.is_some_and(|since| route.last_activity().unwrap_or(0) >= since) {
            continue;
        }
        out.insert(api.chp_path(&route), route_json(&route));
    }
    json(StatusCode::OK, &Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header() {
        let api = Api {
            routes: Arc::new(RouteTable::new()),
            token: Some("secret".into()),
            host_routing: false,
        };
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().expect("header"));
            m
        };
        assert!(authorized(&api, &h("token secret")));
        assert!(authorized(&api, &h("token   secret extra")));
        assert!(!authorized(&api, &h("token secrets")));
        assert!(!authorized(&api, &h("tokensecret")));
        assert!(!authorized(&api, &h("Bearer secret")));
        assert!(!authorized(&api, &HeaderMap::new()));
    }

    #[test]
    fn paths_and_dates() {
        assert_eq!(clean_path("/user/a/"), "/user/a");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path(""), "/");
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000_000)
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00"),
            Some(1_767_225_600_000_000)
        );
        assert_eq!(
            parse_since("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000_000)
        );
        assert_eq!(parse_since("yesterday"), None);
        assert_eq!(
            iso(1_767_225_600_123_456),
            Value::String("2026-01-01T00:00:00.123Z".into())
        );
    }
}
