//! PAM login against a real system user with a real password (root only: the test creates
//! the account and a PAM service file, as an admin would).

use std::process::Command;

use reqwest::StatusCode;

use crate::support::{TestHub, login};

pub(crate) const USER: &str = "jh-pam-test";
pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) fn prepare() {
    crate::support::require_root("the PAM test creates a system user and a PAM service");
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let out = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", USER])
            .output()
            .expect("useradd");
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    chpasswd
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
        .expect("write");
    assert!(chpasswd.wait().expect("wait").success());
    // What the package installs as /etc/pam.d/jupyterhub.
    std::fs::write(
        "/etc/pam.d/jupyterhub-test",
        "@include common-auth\n@include common-account\n",
    )
    .expect("pam service");
}

#[tokio::test]
async fn pam_checks_real_system_passwords() {
    prepare();
    let hub = TestHub::start(
        "authenticator_class = \"pam\"",
        "[PAMAuthenticator]\nservice = \"jupyterhub-test\"\n",
    )
    .await;
    let (_, response) = login(&hub, USER, "wrong password").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, response) = login(&hub, "no-such-user-here", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (client, response) = login(&hub, USER, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FOUND, "{}", hub.log());
    let home = client
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.expect("html").contains(USER));
}
