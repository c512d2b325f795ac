//! LDAP login against Debian's real slapd: a directory made with slapadd in a temporary
//! directory, served by `/usr/sbin/slapd` on a loopback port (StartTLS with a certificate
//! of a CA made for the test), and the hub logging in through it over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestHub, call, login, reserve_port};

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const CRYPT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const BASE: &str = "dc=example,dc=org";

const DIRECTORY: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: cn=reader,dc=example,dc=org
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: reader-password

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
mail: alice@example.org
userPassword: alice-password

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: bob-password

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Singer
userPassword: carol-password

dn: cn=Dave Smith,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave Smith
sn: Smith
userPassword: dave-password

dn: cn=scientists,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: scientists
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=operators,ou=groups,dc=example,dc=org
objectClass: groupOfUniqueNames
cn: operators
uniqueMember: uid=bob,ou=people,dc=example,dc=org

dn: cn=staff,ou=groups,dc=example,dc=org
objectClass: posixGroup
cn: staff
gidNumber: 5000
memberUid: carol
";

/// A slapd serving `DIRECTORY` on 127.0.0.1 (ldap:// with StartTLS, and ldaps://), killed
/// on drop.
struct Slapd {
    port: u16,
    ldaps_port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// The test CA's certificate and a server certificate it signed for 127.0.0.1.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Test LDAP CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .expect("write extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

impl Slapd {
    fn start() -> Slapd {
        for program in [SLAPD, SLAPADD] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the LDAP tests run Debian's OpenLDAP server; install it \
                 with `DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils` \
                 (tests/run.sh does)"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_certificates(d);
        std::fs::create_dir(d.join("db")).expect("db dir");
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n\
             database mdb\nmaxsize 10485760\nsuffix \"{BASE}\"\n\
             rootdn \"cn=admin,{BASE}\"\nrootpw admin-password\ndirectory {d}/db\n\
             # Passwords are only for binding; entries only for bound users, so a lookup\n\
             # needs its search user.\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by users read by * none\n",
            d = d.display()
        );
        let conf = d.join("slapd.conf");
        std::fs::write(&conf, config).expect("write slapd.conf");
        let ldif = d.join("directory.ldif");
        std::fs::write(&ldif, DIRECTORY).expect("write ldif");
        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The reservation keeps the port from other tests until slapd binds it
        // (slapd sets SO_REUSEADDR, as the reservation does).
        let reserved = [reserve_port(), reserve_port()];
        let (port, ldaps_port) = (reserved[0].port, reserved[1].port);
        let urls = format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/");
        let child = Command::new(SLAPD)
            .args(["-d", "0", "-h", &urls, "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("slapd.log")).expect("log file"))
            .spawn()
            .expect("start slapd");
        let mut slapd = Slapd {
            port,
            ldaps_port,
            dir,
            child,
        };
        slapd.wait_answering();
        drop(reserved);
        slapd
    }

    /// Until `ldapwhoami` gets an answer (a bind as the root DN), failing if slapd exits.
    fn wait_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("slapd exited ({status}): {}", self.log());
            }
            let out = Command::new("ldapwhoami")
                .args(["-x", "-H", &self.url(), "-D", &format!("cn=admin,{BASE}")])
                .args(["-w", "admin-password"])
                .output()
                .expect("ldapwhoami (Debian package ldap-utils) runs");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slapd does not answer: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[LDAPAuthenticator]` section for this server: `extra` after the address, port
    /// and StartTLS with the test CA trusted.
    fn section(&self, extra: &str) -> String {
        format!(
            "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {}\n\
             tls_kwargs = {{ ca_certs_file = {:?} }}\n{extra}\n",
            self.port,
            self.ca()
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BIND_TEMPLATE: &str = "bind_dn_template = [\"uid={username},ou=people,dc=example,dc=org\"]\n";

/// A hub logging in through `section`, with auth_state kept and no login back-off.
async fn start_hub(section: &str) -> TestHub {
    hub_with("", section).await
}

/// `hub`, with `authenticator` options in `[Authenticator]`.
async fn hub_with(authenticator: &str, section: &str) -> TestHub {
    TestHub::start_with_env(
        "authenticator_class = \"ldap\"\nlogin_rate_limit = 0",
        &format!("enable_auth_state = true\n{authenticator}\n{section}"),
        &[("JUPYTERHUB_CRYPT_KEY", CRYPT_KEY)],
    )
    .await
}

/// Whether the login form lets `user` in; a login must also give a cookie that works.
async fn logs_in(hub: &TestHub, user: &str, password: &str) -> bool {
    let (client, response) = login(hub, user, password).await;
    let status = response.status();
    let body = response.text().await.expect("body");
    match status {
        StatusCode::FOUND => {
            let home = client
                .get(format!("{}/hub/home", hub.url))
                .send()
                .await
                .expect("home");
            assert_eq!(
                home.status(),
                StatusCode::OK,
                "{user}'s login cookie is accepted"
            );
            true
        }
        StatusCode::FORBIDDEN => {
            assert!(body.contains("Invalid username or password"), "{body}");
            false
        }
        other => panic!("login of {user:?}: {other}: {body}"),
    }
}

#[tokio::test]
async fn bind_dn_template_login() {
    let slapd = Slapd::start();
    let hub = start_hub(&slapd.section(&format!(
        "bind_dn_template = [\"uid={{username}},ou=nobody,{BASE}\", \
         \"uid={{username}},ou=people,{BASE}\"]\nauth_state_attributes = [\"mail\", \"cn\"]\n"
    )))
    .await;
    assert!(
        logs_in(&hub, "alice", "alice-password").await,
        "the second template binds"
    );
    assert!(!logs_in(&hub, "alice", "wrong").await, "wrong password");
    assert!(!logs_in(&hub, "alice", "bob-password").await);
    assert!(
        !logs_in(&hub, "zoe", "alice-password").await,
        "unknown user"
    );
    assert!(
        !logs_in(&hub, "alice", " ").await,
        "a blank password is refused before any bind (an anonymous bind would succeed)"
    );
    assert!(
        hub.log()
            .contains("username:alice Login denied for blank password")
    );
    let (status, alice) = call(&hub, "GET", "/users/alice", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        alice["auth_state"],
        json!({"ldap_groups": [], "user_attributes": {
            "mail": ["alice@example.org"], "cn": ["Alice Liddell"]}}),
        "{alice}"
    );
    let (status, _) = call(&hub, "GET", "/users/zoe", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "refused logins make no user");
    assert!(
        hub.log()
            .contains("Failed to bind user 'zoe' to an LDAP user."),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn injection_attempts_match_nobody() {
    let slapd = Slapd::start();
    // valid_username_regex lets everything through, so only the escaping protects.
    let lookup = format!(
        "lookup_dn = true\nuser_search_base = \"ou=people,{BASE}\"\nuser_attribute = \"uid\"\n\
         lookup_dn_user_dn_attribute = \"uid\"\nlookup_dn_search_user = \"cn=reader,{BASE}\"\n\
         lookup_dn_search_password = \"reader-password\"\nvalid_username_regex = \".*\"\n\
         search_filter = \"(&(objectClass=inetOrgPerson)({{userattr}}={{username}}))\"\n"
    );
    let hub = start_hub(&slapd.section(&lookup)).await;
    assert!(logs_in(&hub, "alice", "alice-password").await);
    for attempt in [
        "*",
        "al*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice)",
        "alice,ou=people",
        "uid=alice",
        "alice\\",
    ] {
        assert!(
            !logs_in(&hub, attempt, "alice-password").await,
            "{attempt:?} must not log in as alice"
        );
    }
    drop(hub);
    // A template: the name is one RDN value, so `,` and `=` cannot reach another entry.
    let hub = start_hub(&slapd.section(&format!(
        "valid_username_regex = \".*\"\nbind_dn_template = \"{{username}},ou=people,{BASE}\"\n"
    )))
    .await;
    for attempt in ["uid=alice", "x,uid=alice", "uid=alice,ou=people"] {
        assert!(
            !logs_in(&hub, attempt, "alice-password").await,
            "{attempt:?} must not bind as alice"
        );
    }
    drop(hub);
    // The default valid_username_regex refuses such names before LDAP is asked.
    let hub = start_hub(&slapd.section(BIND_TEMPLATE)).await;
    assert!(!logs_in(&hub, "al*", "alice-password").await);
    assert!(hub.log().contains("Illegal characters in username"));
}

#[tokio::test]
async fn lookup_dn_with_search_user() {
    let slapd = Slapd::start();
    let lookup = format!(
        "lookup_dn = true\nuser_search_base = \"ou=people,{BASE}\"\nuser_attribute = \"uid\"\n\
         lookup_dn_user_dn_attribute = \"cn\"\n"
    );
    let reader = format!(
        "lookup_dn_search_user = \"cn=reader,{BASE}\"\n\
         lookup_dn_search_password = \"reader-password\"\n"
    );
    // dave's DN (cn=Dave Smith,…) has no uid in it: only a lookup finds it.
    let anonymous = start_hub(&slapd.section(&lookup)).await;
    assert!(
        !logs_in(&anonymous, "dave", "dave-password").await,
        "anonymous may not search this directory"
    );
    assert!(anonymous.log().contains("No response looking up 'dave'"));
    drop(anonymous);
    let bad_reader = start_hub(&slapd.section(&format!(
        "{lookup}lookup_dn_search_user = \"cn=reader,{BASE}\"\n\
         lookup_dn_search_password = \"wrong\"\n"
    )))
    .await;
    assert!(!logs_in(&bad_reader, "dave", "dave-password").await);
    assert!(
        bad_reader
            .log()
            .contains("Failed to bind lookup_dn_search_user")
    );
    drop(bad_reader);
    let hub = start_hub(&slapd.section(&format!("{lookup}{reader}"))).await;
    assert!(logs_in(&hub, "dave", "dave-password").await);
    assert!(!logs_in(&hub, "dave", "alice-password").await);
    assert!(!logs_in(&hub, "nobody", "dave-password").await);
    let (status, _) = call(&hub, "GET", "/users/dave", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::OK, "the login name is the hub's name");
    drop(hub);
    let renamed =
        start_hub(&slapd.section(&format!("{lookup}{reader}use_lookup_dn_username = true\n")))
            .await;
    assert!(logs_in(&renamed, "dave", "dave-password").await);
    let (status, _) = call(
        &renamed,
        "GET",
        "/users/dave%20smith",
        &renamed.admin_token(),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "use_lookup_dn_username: the cn, normalised"
    );
}

#[tokio::test]
async fn allowed_groups_admit_members_only() {
    let slapd = Slapd::start();
    let hub = hub_with(
        "blocked_users = [\"carol\"]",
        &slapd.section(&format!(
            "{BIND_TEMPLATE}allowed_groups = [\"cn=scientists,ou=groups,{BASE}\", \
             \"cn=staff,ou=groups,{BASE}\", \"cn=missing,ou=groups,{BASE}\"]\n"
        )),
    )
    .await;
    assert!(
        logs_in(&hub, "alice", "alice-password").await,
        "groupOfNames member"
    );
    assert!(
        !logs_in(&hub, "bob", "bob-password").await,
        "in no allowed group"
    );
    assert!(!logs_in(&hub, "dave", "dave-password").await, "no such DN");
    assert!(
        !logs_in(&hub, "carol", "carol-password").await,
        "blocked_users wins over a group"
    );
    let (status, alice) = call(&hub, "GET", "/users/alice", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        alice["auth_state"]["ldap_groups"],
        json!([format!("cn=scientists,ou=groups,{BASE}")])
    );
    drop(hub);
    let hub = start_hub(&slapd.section(&format!(
        "{BIND_TEMPLATE}allowed_groups = [\"cn=staff,ou=groups,{BASE}\"]\n"
    )))
    .await;
    assert!(
        logs_in(&hub, "carol", "carol-password").await,
        "posixGroup memberUid"
    );
    assert!(!logs_in(&hub, "alice", "alice-password").await);
    drop(hub);
    // allowed_users still admits beside the groups.
    let hub = hub_with(
        "allowed_users = [\"alice\"]",
        &slapd.section(&format!(
            "{BIND_TEMPLATE}allowed_groups = [\"cn=operators,ou=groups,{BASE}\"]\n"
        )),
    )
    .await;
    assert!(
        logs_in(&hub, "bob", "bob-password").await,
        "groupOfUniqueNames uniqueMember"
    );
    assert!(logs_in(&hub, "alice", "alice-password").await);
    assert!(!logs_in(&hub, "carol", "carol-password").await);
}

#[tokio::test]
async fn search_filter_must_match_the_user() {
    let slapd = Slapd::start();
    let hub = start_hub(&slapd.section(&format!(
        "{BIND_TEMPLATE}user_search_base = \"ou=people,{BASE}\"\nuser_attribute = \"uid\"\n\
         search_filter = \"(&(mail=*)({{userattr}}={{username}}))\"\nattributes = [\"mail\"]\n"
    )))
    .await;
    assert!(logs_in(&hub, "alice", "alice-password").await, "has a mail");
    assert!(
        !logs_in(&hub, "bob", "bob-password").await,
        "binds, but the filter finds no entry"
    );
    assert!(
        hub.log()
            .contains("Login of 'bob' denied. Configured search_filter found 0 users"),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn tls_needs_a_trusted_ca_and_a_down_server_is_said_clearly() {
    let slapd = Slapd::start();
    let trusted = start_hub(&slapd.section(BIND_TEMPLATE)).await;
    assert!(
        logs_in(&trusted, "alice", "alice-password").await,
        "StartTLS with the test CA"
    );
    drop(trusted);
    let ldaps = start_hub(&format!(
        "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {}\n\
         tls_strategy = \"on_connect\"\ntls_kwargs = {{ ca_certs_data = {:?} }}\n{BIND_TEMPLATE}",
        slapd.ldaps_port,
        std::fs::read_to_string(slapd.ca()).expect("read CA"),
    ))
    .await;
    assert!(
        logs_in(&ldaps, "alice", "alice-password").await,
        "ldaps, the CA given as PEM text"
    );
    drop(ldaps);
    let plain = start_hub(&format!(
        "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {}\n\
         tls_strategy = \"insecure\"\n{BIND_TEMPLATE}",
        slapd.port
    ))
    .await;
    assert!(logs_in(&plain, "alice", "alice-password").await, "insecure");
    drop(plain);
    let no_ca = format!(
        "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {}\n{BIND_TEMPLATE}",
        slapd.port
    );
    // No ca_certs_file: the system's roots do not know the test CA.
    let untrusted = start_hub(&no_ca).await;
    let (_, response) = login(&untrusted, "alice", "alice-password").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("cannot reach its directory (LDAP) server"),
        "{body}"
    );
    assert!(
        untrusted.log().contains("LDAP login failed") && untrusted.log().contains("certificate"),
        "{}",
        untrusted.log()
    );
    drop(untrusted);
    let down = reserve_port();
    let hub = start_hub(&format!(
        "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {}\n\
         tls_strategy = \"insecure\"\n{BIND_TEMPLATE}",
        down.port
    ))
    .await;
    let (_, response) = login(&hub, "alice", "alice-password").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("cannot reach its directory (LDAP) server") && body.contains("_xsrf"),
        "the login page again, with the reason: {body}"
    );
    assert!(
        hub.log().contains("LDAP login failed")
            && hub.log().contains(&format!("127.0.0.1:{}", down.port)),
        "{}",
        hub.log()
    );
}

#[test]
fn check_config_reports_ldap_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jupyterhub.toml");
    for (section, needle) in [
        (
            "server_address = \"ldap.example.org\"\n",
            "either lookup_dn or bind_dn_template",
        ),
        (
            "server_address = \"ldap.example.org\"\ntls_strategy = \"tls\"\nbind_dn_template = \"uid={username}\"\n",
            "tls_strategy",
        ),
        (
            "server_address = \"ldap.example.org\"\nbind_dn_template = \"uid={username}\"\n\
             tls_kwargs = { ca_certs_file = \"/nonexistent/ca.pem\" }\n",
            "/nonexistent/ca.pem",
        ),
        (
            "server_address = \"ldap.example.org\"\nbind_dn_template = \"uid={username}\"\n\
             allowed_group = [\"cn=x\"]\n",
            "allowed_group",
        ),
    ] {
        std::fs::write(
            &path,
            format!("[JupyterHub]\nauthenticator_class = \"ldap\"\n[LDAPAuthenticator]\n{section}"),
        )
        .expect("write");
        let out = Command::new(crate::support::BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{section}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("jupyterhub.toml") && err.contains(needle),
            "{section}: {err}"
        );
    }
    std::fs::write(
        &path,
        "[JupyterHub]\nauthenticator_class = \"ldap\"\n[LDAPAuthenticator]\n\
         server_address = \"ldap.example.org\"\nbind_dn_template = \"uid={username},dc=org\"\n",
    )
    .expect("write");
    let out = Command::new(crate::support::BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_login_in_time() {
    // Accepts connections and says nothing, as a hung directory server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let hub = start_hub(&format!(
        "[LDAPAuthenticator]\nserver_address = \"127.0.0.1\"\nserver_port = {port}\n{BIND_TEMPLATE}"
    ))
    .await;
    let started = Instant::now();
    let (_, response) = login(&hub, "alice", "alice-password").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 10 s timeout ends the login"
    );
    assert!(hub.log().contains("timeout"), "{}", hub.log());
}

/// `admin_groups`: members are admins (and may log in beside `allowed_groups`); the flag
/// follows the directory at each login.
#[tokio::test]
async fn admin_groups_make_admins() {
    let slapd = Slapd::start();
    let hub = start_hub(&slapd.section(&format!(
        "{BIND_TEMPLATE}allowed_groups = [\"cn=scientists,ou=groups,{BASE}\"]\n\
         admin_groups = [\"cn=operators,ou=groups,{BASE}\"]\n"
    )))
    .await;
    assert!(
        logs_in(&hub, "alice", "alice-password").await,
        "allowed group"
    );
    assert!(
        logs_in(&hub, "bob", "bob-password").await,
        "admin group admits"
    );
    assert!(
        !logs_in(&hub, "carol", "carol-password").await,
        "in neither"
    );
    let admin = hub.admin_token();
    let (_, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    let (_, bob) = call(&hub, "GET", "/users/bob", &admin, None).await;
    assert_eq!(alice["admin"], false, "{alice}");
    assert_eq!(bob["admin"], true, "{bob}");
    // Made admin by hand, alice loses it at her next login: the directory decides.
    let (status, _) = call(
        &hub,
        "PATCH",
        "/users/alice",
        &admin,
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(logs_in(&hub, "alice", "alice-password").await);
    let (_, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(alice["admin"], false, "{alice}");
}
