//! The drop-in proxy (`jupyterhub proxy`, which serves its public port exactly as the hub
//! does) as a child process of a test, so its memory and descriptors can be read from /proc.
//! Included by path into the test crates that need it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "port.rs"]
mod port;

/// A child process, killed on drop, with the ports it was given.
pub struct Child(
    pub std::process::Child,
    #[expect(dead_code, reason = "held, not read: it keeps the ports reserved")]
    [port::ReservedPort; 2],
);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The drop-in proxy on a free loopback port, everything routed to `target`, once it
/// accepts connections (probed from the loopback address `probe`, so the probe never counts
/// against another address's connection cap).
pub async fn start(target: SocketAddr, flags: &[&str], probe: [u8; 4]) -> (Child, SocketAddr) {
    // Held (bound, not listening) until the child binds them with SO_REUSEADDR, so no other
    // test takes them in between.
    let ports = [port::reserve_port(), port::reserve_port()];
    let (port, api_port) = (ports[0].port, ports[1].port);
    // SLOWLORIS_PROXY_BIN=target/release/jupyterhub measures a release build instead.
    let binary = std::env::var_os("SLOWLORIS_PROXY_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_jupyterhub").into());
    let child = std::process::Command::new(binary)
        .args(["proxy", "--ip", "127.0.0.1", "--api-ip", "127.0.0.1"])
        .args([
            "--port",
            &port.to_string(),
            "--api-port",
            &api_port.to_string(),
        ])
        .args(["--default-target", &format!("http://{target}")])
        .args(flags)
        .env("CONFIGPROXY_AUTH_TOKEN", "drop-in-test-token")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn jupyterhub proxy");
    let child = Child(child, ports);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((probe, 0)))
            .expect("bind the probe");
        if socket.connect(addr).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, addr)
}

/// A /proc/PID/status field in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
