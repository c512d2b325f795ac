//! `[LetsEncrypt]` against Debian's `pebble` (Let's Encrypt's test CA), with real HTTP-01
//! validation: `pebble-challtestsrv` answers pebble's DNS with 127.0.0.1 for every name, and
//! pebble's `httpPort` is the hub's plain-HTTP listener, so pebble fetches the challenge from
//! the hub itself. Pebble issues 30-second certificates, so renewal happens within the test.
//! The harness's HTTP client speaks no TLS: HTTPS goes through curl, or rustls directly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

const DOMAIN: &str = "hub.jupyterhub.test";
/// In pebble's `domainBlocklist`: every order for it is refused.
const BLOCKED: &str = "blocked.jupyterhub.test";
/// The certificates' lifetime; the hub renews with a third left.
const VALIDITY_SECS: u64 = 30;

/// A running pebble and its DNS, killed on drop.
struct Pebble {
    dir: tempfile::TempDir,
    directory_url: String,
    management_port: u16,
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn require_program(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "needs {path}: install Debian's {package} (`apt-get install -y {package}`; \
         `bash tests/run.sh` does)"
    );
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a program");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a `localhost` certificate it signed, for pebble's own HTTPS.
fn pebble_tls(dir: &Path) {
    let openssl = || {
        let mut c = Command::new("openssl");
        c.current_dir(dir);
        c
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(openssl()
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
        .args(["-subj", "/CN=pebble test CA"]));
    run(openssl().arg("req").args(ec).args([
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]));
    run(openssl().args([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]));
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port` (the hub's plain-HTTP listener) and
    /// TLS-ALPN-01 on `tls_port`.
    fn start(http_port: u16, tls_port: u16) -> Pebble {
        require_program("/usr/bin/pebble", "pebble");
        require_program("/usr/bin/pebble-challtestsrv", "pebble");
        require_program("/usr/bin/openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        pebble_tls(dir.path());
        let (acme, management, dns, dns_management) = (
            reserve_port(),
            reserve_port(),
            reserve_port(),
            reserve_port(),
        );
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", acme.port),
            "managementListenAddress": format!("127.0.0.1:{}", management.port),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": [BLOCKED],
            "certificateValidityPeriod": VALIDITY_SECS,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).expect("config");
        let mut children = Vec::new();
        let mut dns_server = Command::new("/usr/bin/pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", dns.port)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", dns_management.port)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let out = dns_server.stdout.take().expect("stdout");
        children.push(dns_server);
        wait_for_lines(
            out,
            "Starting management server",
            1,
            Duration::from_secs(10),
        );
        let mut pebble = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", dns.port)])
            // No pauses before validating; every nonce good; every order validated afresh.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let out = pebble.stdout.take().expect("stdout");
        children.push(pebble);
        wait_for_lines(out, "ACME directory available", 1, Duration::from_secs(20));
        Pebble {
            directory_url: format!("https://localhost:{}/dir", acme.port),
            management_port: management.port,
            dir,
            children,
        }
    }

    /// The CA that signed pebble's own HTTPS.
    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root pebble issues under, from its management interface, as a PEM file.
    fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(self.ca_file())
            .arg(format!(
                "https://localhost:{}/roots/0",
                self.management_port
            ))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "roots/0: {out:?}");
        std::fs::write(&path, &out.stdout).expect("write root");
        path
    }

    fn config(&self, domain: &str, http_port: u16) -> String {
        format!(
            "[LetsEncrypt]\ndomains = [\"{domain}\"]\nemail = \"admin@jupyterhub.test\"\n\
             directory_url = \"{}\"\ndirectory_ca_file = \"{}\"\nhttp_port = {http_port}\n\
             [Proxy]\nkeepalive_timeout = 300\n",
            self.directory_url,
            self.ca_file().display(),
        )
    }
}

fn plain_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind the plain-HTTP listener")
}

/// Wait (within `within`) until the hub's log has `count` lines containing `needle`.
async fn log_lines(hub: &TestHub, needle: &str, count: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let log = hub.log();
        if log.lines().filter(|l| l.contains(needle)).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} × {needle:?} in the hub's log within {within:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `curl` over HTTPS to the hub by name, trusting only `root`: the status, or curl's error.
fn curl_status(root: &Path, port: u16, path: &str) -> Result<u16, String> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{DOMAIN}:{port}:127.0.0.1")])
        .arg(format!("https://{DOMAIN}:{port}{path}"))
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One HTTPS connection kept open across requests (HTTP/1.1 keep-alive).
struct KeptConnection {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

/// A TLS connection to the hub by name, verified against `root` alone.
async fn connect_tls(
    root: &Path,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).expect("read root");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("root PEM")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake verified against pebble's root")
}

/// A websocket echo server (a service behind the proxy): text messages come back.
async fn echo_server() -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

impl KeptConnection {
    async fn open(root: &Path, port: u16) -> KeptConnection {
        KeptConnection {
            stream: connect_tls(root, port).await,
        }
    }

    /// The leaf certificate the server presented.
    fn certificate(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("peer certificates")[0]
            .to_vec()
    }

    /// `GET path` on this connection; the status line.
    async fn get(&mut self, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut byte).await.expect("read head");
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("content-length");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("read body");
        head.lines().next().unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn certificate_from_pebble_served_redirected_and_renewed_on_open_connections() {
    let plain = plain_listener();
    let http_port = plain.local_addr().expect("address").port();
    let unused = reserve_port();
    let pebble = Pebble::start(http_port, unused.port);
    let echo = echo_server().await;
    let service =
        format!("[[JupyterHub.services]]\nname = \"echo\"\nurl = \"http://127.0.0.1:{echo}\"\n");
    let mut hub =
        TestHub::start_with_redirect(&service, &pebble.config(DOMAIN, http_port), &[], plain).await;
    let port = hub.public_port();
    let log = log_lines(
        &hub,
        "ACME certificate obtained",
        1,
        Duration::from_secs(60),
    )
    .await;
    // Pebble really fetched the challenge from the plain-HTTP listener (no ALWAYS_VALID).
    assert!(log.contains("answering an ACME HTTP-01 challenge"), "{log}");
    let root = pebble.issuing_root();
    assert_eq!(curl_status(&root, port, "/hub/api/"), Ok(200));
    // Admins see the expiry (on the internal port: the harness's client speaks no TLS).
    hub.url = hub.internal_url();
    let (status, info) = call(&hub, "GET", "/info", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(info["letsencrypt"]["not_after"].is_string(), "{info}");
    assert!(info["letsencrypt"]["last_error"].is_null(), "{info}");

    // Plain HTTP: challenges are answered (unknown ones 404), everything else redirected.
    let client = browser();
    let base = format!("http://127.0.0.1:{http_port}");
    let unknown = client
        .get(format!("{base}/.well-known/acme-challenge/nope"))
        .send()
        .await
        .expect("challenge");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let redirected = client
        .get(format!("{base}/hub/login?next=%2Fhub%2F"))
        .header("host", DOMAIN)
        .send()
        .await
        .expect("redirect");
    assert_eq!(redirected.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://{DOMAIN}:{port}/hub/login?next=%2Fhub%2F").as_str()
    );

    // Renewal: a keep-alive connection and a websocket opened on the first certificate keep
    // working after the swap, and new handshakes get the new one.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut kept = KeptConnection::open(&root, port).await;
    let first = kept.certificate();
    assert_eq!(kept.get("/hub/api/").await, "HTTP/1.1 200 OK");
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://{DOMAIN}:{port}/services/echo/ws"),
        connect_tls(&root, port).await,
    )
    .await
    .expect("websocket through the proxy over TLS");
    ws.send(Message::text("before")).await.expect("send");
    let echoed = ws.next().await.expect("echo").expect("echo");
    assert_eq!(echoed.to_text().expect("text"), "before");
    let log = log_lines(
        &hub,
        "ACME certificate obtained",
        2,
        Duration::from_secs(VALIDITY_SECS + 30),
    )
    .await;
    assert!(!log.contains("could not obtain a certificate"), "{log}");
    assert_eq!(kept.get("/hub/api/").await, "HTTP/1.1 200 OK");
    ws.send(Message::text("after"))
        .await
        .expect("send after renewal");
    let echoed = ws.next().await.expect("echo").expect("echo");
    assert_eq!(echoed.to_text().expect("text"), "after");
    let fresh = KeptConnection::open(&root, port).await;
    assert_ne!(
        fresh.certificate(),
        first,
        "the renewed certificate is served"
    );
    assert_eq!(curl_status(&root, port, "/hub/api/"), Ok(200));

    // Kept in the state directory, beside the cookie secret, and reused by the next start:
    // HTTPS works at once, before any order.
    let stored = hub.dir.path().join("letsencrypt");
    assert!(stored.join("cert.pem").exists() && stored.join("key.pem").exists());
    hub.restart().await;
    log_lines(
        &hub,
        "using the stored ACME certificate",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(curl_status(&root, port, "/hub/api/"), Ok(200));

    // A stored key that is not the certificate's is not served: a new order replaces both.
    std::fs::copy(pebble.dir.path().join("key.pem"), stored.join("key.pem")).expect("copy key");
    let obtained = hub
        .log()
        .lines()
        .filter(|l| l.contains("ACME certificate obtained"))
        .count();
    hub.restart().await;
    log_lines(
        &hub,
        "the key does not match the certificate",
        1,
        Duration::from_secs(5),
    )
    .await;
    log_lines(
        &hub,
        "ACME certificate obtained",
        obtained + 1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(curl_status(&root, port, "/hub/api/"), Ok(200));
}

#[tokio::test]
async fn a_refused_order_is_logged_shown_to_admins_and_no_certificate_is_served() {
    let plain = plain_listener();
    let http_port = plain.local_addr().expect("address").port();
    let unused = reserve_port();
    let pebble = Pebble::start(http_port, unused.port);
    let mut hub =
        TestHub::start_with_redirect("", &pebble.config(BLOCKED, http_port), &[], plain).await;
    let log = log_lines(
        &hub,
        "could not obtain a certificate",
        1,
        Duration::from_secs(60),
    )
    .await;
    // The CA's own problem type and explanation are in the log line.
    assert!(log.contains("rejectedIdentifier"), "{log}");
    // No silent default certificate: the handshake itself fails.
    let root = pebble.issuing_root();
    let refused = curl_status(&root, hub.public_port(), "/hub/api/");
    assert!(
        refused.is_err(),
        "HTTPS answered without a certificate: {refused:?}"
    );

    // The admin panel and the API say so (on the internal port, which is plain HTTP).
    hub.url = hub.internal_url();
    let token = hub.admin_token();
    let (status, info) = call(&hub, "GET", "/info", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    let report = &info["letsencrypt"];
    assert_eq!(report["domains"], serde_json::json!([BLOCKED]));
    assert!(report["not_after"].is_null(), "{info}");
    let error = report["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("rejectedIdentifier"), "{info}");
    let (client, response) = login(&hub, "admin", "admin-password").await;
    assert!(response.status().is_redirection(), "{response:?}");
    let page = client
        .get(format!("{}/hub/admin", hub.url))
        .send()
        .await
        .expect("admin page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("id=\"letsencrypt-error\""), "{html}");
    assert!(html.contains("rejectedIdentifier"), "{html}");
    assert!(
        html.contains("No certificate has been issued yet"),
        "{html}"
    );
}

#[test]
fn config_refuses_letsencrypt_with_ssl_files_and_without_domains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        let path = dir.path().join("jupyterhub.toml");
        std::fs::write(&path, config_text(8000, 8081, dir.path(), "", extra)).expect("write");
        let out = Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("check-config");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check("[LetsEncrypt]\ndomains = []\n");
    assert!(!ok && out.contains("LetsEncrypt.domains"), "{out}");
    let (ok, out) = check("[LetsEncrypt]\ndomains = [\"*.example.org\"]\n");
    assert!(!ok && out.contains("LetsEncrypt.domains"), "{out}");
    let (ok, out) = check(
        "[LetsEncrypt]\ndomains = [\"localhost\"]\nstaging = true\ndirectory_url = \"https://x/\"\n",
    );
    assert!(!ok && out.contains("staging or directory_url"), "{out}");
    let (ok, out) = check("[LetsEncrypt]\ndomains = [\"localhost\"]\nemails = \"a@b\"\n");
    assert!(!ok && out.contains("emails"), "{out}");
    // ssl_cert/ssl_key and ACME exclude each other.
    let path = dir.path().join("jupyterhub.toml");
    std::fs::write(
        &path,
        config_text(
            8000,
            8081,
            dir.path(),
            "ssl_cert = \"/c.pem\"\nssl_key = \"/k.pem\"",
            "[LetsEncrypt]\ndomains = [\"localhost\"]\n",
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("ssl_cert"), "{text}");

    // The dry check: `localhost` resolves; a name under `.invalid` never does (RFC 6761).
    let (ok, out) = check("[LetsEncrypt]\ndomains = [\"localhost\"]\nhttp_port = 8080\n");
    assert!(ok, "{out}");
    assert!(out.contains("localhost: resolves to"), "{out}");
    assert!(
        out.contains("HTTP port") && out.contains("HTTPS port"),
        "{out}"
    );
    let (ok, out) = check("[LetsEncrypt]\ndomains = [\"nowhere.invalid\"]\nhttp_port = 8080\n");
    assert!(
        !ok && out.contains("nowhere.invalid: does not resolve"),
        "{out}"
    );
}

#[tokio::test]
async fn a_failed_validation_reports_the_cas_reason() {
    // Pebble validates HTTP-01 on a port where nothing listens, not the hub's.
    let nobody = reserve_port();
    let plain = plain_listener();
    let http_port = plain.local_addr().expect("address").port();
    let pebble = Pebble::start(nobody.port, nobody.port);
    let mut hub =
        TestHub::start_with_redirect("", &pebble.config(DOMAIN, http_port), &[], plain).await;
    let log = log_lines(
        &hub,
        "could not obtain a certificate",
        1,
        Duration::from_secs(60),
    )
    .await;
    // The failed challenge's problem: what the CA fetched and why it failed.
    assert!(log.contains("acme:error:connection"), "{log}");
    assert!(
        log.contains(&format!(
            "http://{DOMAIN}:{}/.well-known/acme-challenge/",
            nobody.port
        )),
        "{log}"
    );
    assert!(log.contains("connection refused"), "{log}");
    hub.url = hub.internal_url();
    let (_, info) = call(&hub, "GET", "/info", &hub.admin_token(), None).await;
    let error = info["letsencrypt"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("acme:error:connection"), "{info}");
}

#[tokio::test]
async fn tls_alpn_01_validates_on_the_https_port_alone() {
    // HTTP-01 could not work: nothing listens where pebble would fetch it.
    let nobody = reserve_port();
    let public = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the public listener");
    let port = public.local_addr().expect("address").port();
    let pebble = Pebble::start(nobody.port, port);
    let config = pebble.config(DOMAIN, nobody.port).replace(
        "[LetsEncrypt]\n",
        "[LetsEncrypt]\nchallenge = \"tls-alpn-01\"\n",
    );
    let hub = TestHub::start_with_listeners("", &config, &[], Some(public), None).await;
    let log = log_lines(
        &hub,
        "ACME certificate obtained",
        1,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        log.contains("answering an ACME TLS-ALPN-01 challenge"),
        "{log}"
    );
    assert!(!log.contains("HTTP-01"), "{log}");
    let root = pebble.issuing_root();
    assert_eq!(curl_status(&root, port, "/hub/api/"), Ok(200));
}
