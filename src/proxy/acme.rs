//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or another) for the public port,
//! through `instant-acme`: HTTP-01 answered by the plain-HTTP listener (`redirect.rs`), or
//! TLS-ALPN-01 (RFC 8737) answered by the public port's own handshake; the account and
//! certificate kept in a state directory and reused while valid, renewed once less than a
//! third of its lifetime is left. The certificate is swapped into the listener's
//! resolver, so open connections keep theirs and new handshakes get the new one. Until one is
//! issued, handshakes are refused: never a silent default certificate. The last failure (with
//! the CA's problem document) is kept for the admin panel.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// The first retry after a failed order; doubled up to `MAX_RETRY` (Let's Encrypt allows
/// only a few failed validations an hour).
const FIRST_RETRY: Duration = Duration::from_secs(120);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// The longest sleep before the renewal time is checked again (clock changes, suspends).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// How long the CA may take to validate the challenges, and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Stored { path: PathBuf, message: String },
    #[error("ACME directory CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("the CA offers no {0:?} challenge for {1}")]
    NoChallenge(ChallengeType, String),
    #[error("the CA refused the order: {0}")]
    Refused(String),
    #[error("the issued certificate is unusable: {0}")]
    Unusable(String),
}

/// TLS-ALPN-01's protocol name: a handshake offering it is the CA's check, never a client.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Which challenge the CA is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// On the plain-HTTP port (`redirect.rs`).
    Http01,
    /// In the public port's TLS handshake.
    TlsAlpn01,
}

/// What the ACME client is configured with (from `[LetsEncrypt]`).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` contact URIs.
    pub contact: Vec<String>,
    pub directory_url: String,
    /// Extra trust roots for the directory's HTTPS.
    pub directory_ca_file: Option<PathBuf>,
    /// Where the account and certificate are kept (made 0700 if missing).
    pub dir: PathBuf,
    pub challenge: Challenge,
}

/// The ACME state shown to admins.
#[derive(Debug, Clone, Default)]
pub struct AcmeStatus {
    /// The last failure to obtain or renew, with the CA's explanation.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// When the certificate being served expires.
    pub not_after: Option<SystemTime>,
}

/// HTTP-01 tokens being validated → their key authorizations.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, String>>>);

impl Challenges {
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    pub(super) fn set(&self, token: &str, value: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(value) => map.insert(token.to_owned(), value),
            None => map.remove(token),
        };
    }
}

/// The certificate the public listener presents: `None` until one is issued, which makes
/// rustls refuse the handshake. TLS-ALPN-01 validation handshakes get the challenge
/// certificate for the name they ask for instead.
#[derive(Debug, Default)]
struct CertSlot {
    current: ArcSwapOption<CertifiedKey>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let name = hello.server_name()?.to_ascii_lowercase();
            let found = self
                .alpn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
            if found.is_some() {
                tracing::info!(name, "answering an ACME TLS-ALPN-01 challenge");
            }
            return found;
        }
        self.current.load_full()
    }
}

/// A certificate in use and its validity.
struct Issued {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// When to renew: once less than a third of the lifetime is left.
fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after - lifetime / 3
}

pub struct Acme {
    settings: AcmeSettings,
    challenges: Challenges,
    slot: Arc<CertSlot>,
    validity: Mutex<Option<(SystemTime, SystemTime)>>,
    status: Mutex<AcmeStatus>,
    http: http::Client,
}

impl Acme {
    /// The client, with a still-valid stored certificate (for these domains) installed.
    pub fn new(settings: AcmeSettings) -> Result<Acme, Error> {
        let http = http::Client::new(settings.directory_ca_file.as_deref())?;
        let acme = Acme {
            settings,
            challenges: Challenges::default(),
            slot: Arc::new(CertSlot::default()),
            validity: Mutex::new(None),
            status: Mutex::new(AcmeStatus::default()),
            http,
        };
        match acme.load_stored() {
            Ok(Some(issued)) => {
                tracing::info!(
                    domains = ?acme.settings.domains,
                    expires = %iso_time(issued.not_after),
                    "using the stored ACME certificate"
                );
                acme.install(issued);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the stored ACME certificate"),
        }
        Ok(acme)
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    pub fn status(&self) -> AcmeStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The public listener's TLS configuration, presenting whatever certificate is current.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, super::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.slot.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if self.settings.challenge == Challenge::TlsAlpn01 {
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        Ok(Arc::new(config))
    }

    /// Obtain the certificate if there is none, renew it when due, until `stop`. Failures
    /// are logged and kept in `status`, and retried with a back-off.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.slot.current.load().is_none() {
            tracing::warn!(
                domains = ?self.settings.domains,
                directory = %self.settings.directory_url,
                "no certificate yet: HTTPS handshakes are refused until the ACME CA issues one"
            );
        }
        let mut retry = FIRST_RETRY;
        loop {
            let due = self.renew_at().map_or(Duration::ZERO, |at| {
                at.duration_since(SystemTime::now()).unwrap_or_default()
            });
            if !due.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(due.min(MAX_SLEEP)) => continue,
                }
            }
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.obtain() => outcome,
            };
            match outcome {
                Ok(issued) => {
                    tracing::info!(
                        domains = ?self.settings.domains,
                        expires = %iso_time(issued.not_after),
                        "ACME certificate obtained"
                    );
                    self.install(issued);
                    let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    status.last_error = None;
                    retry = FIRST_RETRY;
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(
                        domains = ?self.settings.domains,
                        directory = %self.settings.directory_url,
                        error = %message,
                        retry_in_s = retry.as_secs(),
                        "could not obtain a certificate: {message}"
                    );
                    {
                        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                        status.last_error = Some(message);
                        status.last_error_at = Some(SystemTime::now());
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn renew_at(&self) -> Option<SystemTime> {
        let validity = *self.validity.lock().unwrap_or_else(|e| e.into_inner());
        validity.map(|(not_before, not_after)| renew_at(not_before, not_after))
    }

    fn install(&self, issued: Issued) {
        *self.validity.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((issued.not_before, issued.not_after));
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .not_after = Some(issued.not_after);
        self.slot.current.store(Some(issued.key));
    }

    fn cert_path(&self) -> PathBuf {
        self.settings.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.settings.dir.join("key.pem")
    }

    /// The account's file, one per directory URL (a different CA needs a different account).
    fn account_path(&self) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.settings.directory_url.as_bytes());
        self.settings
            .dir
            .join(format!("account-{}.json", hex::encode(&digest[..8])))
    }

    /// The stored certificate, if it is still valid for a while and names every domain.
    fn load_stored(&self) -> Result<Option<Issued>, Error> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        let cert_pem = read(&cert)?;
        let key_pem = read(&key)?;
        let issued = parse_issued(&cert_pem, &key_pem, &self.settings.domains).map_err(|m| {
            Error::Stored {
                path: cert.clone(),
                message: m,
            }
        })?;
        Ok((issued.not_after > SystemTime::now()).then_some(issued))
    }

    async fn account(&self) -> Result<Account, Error> {
        let path = self.account_path();
        let builder = Account::builder_with_http(Box::new(self.http.clone()));
        if path.exists() {
            let text = read(&path)?;
            let credentials: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| Error::Stored {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            return Ok(builder.from_credentials(credentials).await?);
        }
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await?;
        let text = serde_json::to_string(&credentials).map_err(|e| Error::Stored {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.write_private(&path, &text)?;
        tracing::info!(account = account.id(), "ACME account created");
        Ok(account)
    }

    /// One order: HTTP-01 for every domain, then the certificate, stored and returned.
    async fn obtain(&self) -> Result<Issued, Error> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => order,
            Err(e) => {
                if let instant_acme::Error::Api(problem) = &e
                    && problem
                        .r#type
                        .as_deref()
                        .is_some_and(|t| t.ends_with(":accountDoesNotExist"))
                {
                    // The CA forgot the account (a test CA restarted): make a new one next time.
                    let _ = std::fs::remove_file(self.account_path());
                }
                return Err(e.into());
            }
        };
        let mut tokens = Vec::new();
        let answered = self.answer_challenges(&mut order, &mut tokens).await;
        let ready = match answered {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        for token in &tokens {
            self.challenges.set(token, None);
        }
        self.slot
            .alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        match ready? {
            OrderStatus::Ready => {}
            OrderStatus::Invalid => return Err(Error::Refused(why_invalid(&mut order).await)),
            other => {
                return Err(Error::Refused(format!(
                    "the order is {other:?} after {ORDER_TIMEOUT:?}"
                )));
            }
        }
        let key_pem = order.finalize().await?;
        let cert_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await?;
        let issued =
            parse_issued(&cert_pem, &key_pem, &self.settings.domains).map_err(Error::Unusable)?;
        // The key first: a certificate beside an old key would not load.
        self.write_private(&self.key_path(), &key_pem)?;
        self.write_private(&self.cert_path(), &cert_pem)?;
        Ok(issued)
    }

    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
    ) -> Result<(), Error> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(Error::Refused(format!(
                        "the authorization for {name} is {other:?}"
                    )));
                }
            }
            let kind = match self.settings.challenge {
                Challenge::Http01 => ChallengeType::Http01,
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| Error::NoChallenge(kind, name.clone()))?;
            let key_authorization = challenge.key_authorization();
            match self.settings.challenge {
                Challenge::Http01 => {
                    let value = key_authorization.as_str().to_owned();
                    self.challenges.set(&challenge.token, Some(value));
                    tokens.push(challenge.token.clone());
                }
                Challenge::TlsAlpn01 => {
                    let key = alpn_certificate(&name, key_authorization.digest().as_ref())
                        .map_err(Error::Unusable)?;
                    self.slot
                        .alpn
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_ascii_lowercase(), key);
                }
            }
            challenge.set_ready().await?;
        }
        Ok(())
    }

    /// Write a file readable by the hub alone, replacing the old one in one rename.
    fn write_private(&self, path: &Path, text: &str) -> Result<(), Error> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        if !self.settings.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.settings.dir)
                .map_err(io)?;
        }
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }
}

/// The CA's reasons an order became invalid: each failed challenge's problem.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    if let Some(problem) = &order.state().error {
        reasons.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let Ok(mut authorization) = authorization else {
            continue;
        };
        let name = authorization.identifier().to_string();
        if let Ok(state) = authorization.refresh().await {
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!("{name}: {problem}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the order is invalid (the CA gave no reason)".into()
    } else {
        reasons.join("; ")
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// TLS-ALPN-01's certificate for `name` (RFC 8737): self-signed, naming only `name`, with the
/// key authorization's SHA-256 in the critical acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// A PEM chain and key as a `CertifiedKey`, with the leaf's validity; the leaf must name
/// every domain.
fn parse_issued(cert_pem: &str, key_pem: &str, domains: &[String]) -> Result<Issued, String> {
    let chain = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate in the chain")?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_bytes()))
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("certificate: {e}"))?;
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(missing) = domains
        .iter()
        .find(|d| !names.contains(&d.to_ascii_lowercase()))
    {
        return Err(format!("the certificate does not name {missing}"));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    let not_before = time(parsed.validity().not_before);
    let not_after = time(parsed.validity().not_after);
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let key = CertifiedKey::new(chain, signing);
    // A certificate stored beside another order's key would fail every handshake.
    key.keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(Issued {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

fn iso_time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `check-config`'s dry run: does each domain resolve, can the ports be listened on. One
/// line per finding; `false` when a domain does not resolve.
pub fn dry_check(
    domains: &[String],
    ports: &[(&str, std::net::SocketAddr)],
) -> (bool, Vec<String>) {
    use std::net::ToSocketAddrs;
    let mut ok = true;
    let mut lines = Vec::new();
    for domain in domains {
        match (domain.as_str(), 80).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                if addrs.is_empty() {
                    ok = false;
                    lines.push(format!("{domain}: does not resolve"));
                } else {
                    lines.push(format!("{domain}: resolves to {}", addrs.join(", ")));
                }
            }
            Err(e) => {
                ok = false;
                lines.push(format!("{domain}: does not resolve: {e}"));
            }
        }
    }
    for (what, addr) in ports {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => lines.push(format!("{what} {addr}: free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => lines.push(format!(
                "{what} {addr}: in use (the running hub, or its socket unit)"
            )),
            Err(e) => lines.push(format!(
                "{what} {addr}: cannot listen ({e}); below 1024 that needs root or the socket \
                 unit"
            )),
        }
    }
    (ok, lines)
}

/// The ACME client's HTTPS: hyper over rustls (ring), the system's roots and the configured
/// CA file's.
mod http {
    use std::future::Future;
    use std::path::Path;
    use std::pin::Pin;

    use bytes::Bytes;
    use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

    use super::Error;

    type Connector =
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

    #[derive(Clone)]
    pub struct Client(hyper_util::client::legacy::Client<Connector, BodyWrapper<Bytes>>);

    impl Client {
        pub fn new(ca_file: Option<&Path>) -> Result<Client, Error> {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if let Some(path) = ca_file {
                let ca = |message: String| Error::CaFile {
                    path: path.to_owned(),
                    message,
                };
                let file = std::fs::File::open(path).map_err(|e| ca(e.to_string()))?;
                let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca("no PEM certificate".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca(e.to_string()))?;
                }
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::CaFile {
                    path: ca_file.map(Path::to_owned).unwrap_or_default(),
                    message: e.to_string(),
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .build();
            Ok(Client(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
            ))
        }
    }

    impl HttpClient for Client {
        fn request(
            &self,
            req: http::Request<BodyWrapper<Bytes>>,
        ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>>
        {
            let fut = self.0.request(req);
            Box::pin(async move {
                match tokio::time::timeout(std::time::Duration::from_secs(30), fut).await {
                    Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                    Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                    Err(_) => Err(instant_acme::Error::Str("the ACME server did not answer")),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_with_a_third_of_the_lifetime_left() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ninety_days = Duration::from_secs(90 * 86_400);
        assert_eq!(
            renew_at(start, start + ninety_days),
            start + Duration::from_secs(60 * 86_400)
        );
        // A certificate "valid" backwards renews at once.
        assert!(renew_at(start, start - ninety_days) <= start);
    }

    #[test]
    fn an_empty_stored_chain_is_refused() {
        let err = parse_issued("", "", &["a.example.org".into()])
            .err()
            .expect("no certificate");
        assert!(err.contains("no certificate"), "{err}");
    }
}
