//! Ports for programs that bind by number themselves (a single-user server told `--port`,
//! `systemd-socket-activate -l`). Included by path into the test crates that need one.

/// A port held for a test: bound on 127.0.0.1 with SO_REUSEADDR but not listening. The
/// kernel never hands it out as an ephemeral port while it is held, yet a program binding
/// it with SO_REUSEADDR (Python's `http.server`, systemd) can listen on it. Connections to
/// it are refused while nothing listens, as on a free port.
pub struct ReservedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn reserve_port() -> ReservedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind 127.0.0.1:0");
    let port = socket.local_addr().expect("local address").port();
    ReservedPort {
        port,
        _socket: socket,
    }
}
