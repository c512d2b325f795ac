//! The hub as a systemd service, without booting systemd: socket activation through
//! `systemd-socket-activate` (the first request starts the hub and is answered), and
//! `READY=1`/`STATUS=` on a notify socket the test owns.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{BIN, config_text, reserve_port, wait_for_lines};

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn socket_activation_and_readiness_notification() {
    let activate = "/usr/bin/systemd-socket-activate";
    assert!(
        std::path::Path::new(activate).exists(),
        "{activate} is missing: apt-get install systemd"
    );
    let dir = tempfile::tempdir().expect("dir");
    // systemd-socket-activate binds by number (with SO_REUSEADDR): held ports, so no other
    // test can take them first.
    let (public_reserved, internal_reserved) = (reserve_port(), reserve_port());
    let (public, internal) = (public_reserved.port, internal_reserved.port);
    // The config names port 0: the hub must use the sockets it was handed.
    let config = dir.path().join("jupyterhub.toml");
    std::fs::write(&config, config_text(0, 0, dir.path(), "", "")).expect("config");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut child = Command::new(activate)
        .args([
            "-l",
            &format!("127.0.0.1:{public}"),
            "-l",
            &format!("127.0.0.1:{internal}"),
            "--fdname=http:hub",
        ])
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(BIN)
        .arg("-f")
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate");
    let stderr = child.stderr.take().expect("stderr");
    let _guard = Killed(child);
    // It says "Listening on ADDRESS as FD." for each socket, then waits for a connection.
    wait_for_lines(stderr, "Listening on ", 2, Duration::from_secs(30));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let response = client
        .get(format!("http://127.0.0.1:{public}/hub/api/"))
        .send()
        .await
        .expect("an answer on the activated socket");
    assert_eq!(
        response.status(),
        200,
        "the first request started the hub and was answered"
    );
    let r = client
        .get(format!("http://127.0.0.1:{internal}/hub/api/"))
        .send()
        .await
        .expect("internal socket");
    assert_eq!(
        r.status(),
        200,
        "the internal API listens on the socket named `hub`"
    );
    let mut buffer = [0u8; 4096];
    let n = notify.recv(&mut buffer).expect("a notification");
    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    assert!(
        message.contains("STATUS=") && message.contains("users"),
        "{message}"
    );
}
