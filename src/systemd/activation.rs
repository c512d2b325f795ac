//! Socket activation: listeners handed over by systemd (`LISTEN_FDS`). The hub's are TCP,
//! named by `FileDescriptorName=` (`http` the public port, `hub` the internal API port,
//! `redirect` the plain-HTTP port beside an ACME-certified public one); the
//! privileged helper's is one unix socket (`jupyterhub-helper.socket`).

use std::os::fd::FromRawFd;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket activation: {0}")]
    Io(#[from] std::io::Error),
}

/// Listeners from systemd, by name.
#[derive(Default)]
pub struct Listeners {
    pub public: Option<tokio::net::TcpListener>,
    pub hub: Option<tokio::net::TcpListener>,
    pub redirect: Option<tokio::net::TcpListener>,
}

/// Take the sockets systemd passed, if any. Unnamed sockets count as `http` first, then `hub`.
pub fn listeners() -> Result<Listeners, Error> {
    let mut found = Listeners::default();
    let Ok(fds) = sd_notify::listen_fds_with_names() else {
        return Ok(found);
    };
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to us for our exclusive use (LISTEN_PID was
        // checked by sd-notify) and nothing else in the process has wrapped it.
        #[allow(unsafe_code)]
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        // Required for tokio; systemd hands over blocking sockets.
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        match name.as_str() {
            "hub" => found.hub = Some(listener),
            "redirect" => found.redirect = Some(listener),
            "http" => found.public = Some(listener),
            _ if found.public.is_none() => found.public = Some(listener),
            _ => found.hub = Some(listener),
        }
    }
    Ok(found)
}

/// The unix socket systemd passed, if any (the first passed descriptor).
pub fn unix_listener() -> Result<Option<tokio::net::UnixListener>, Error> {
    let Some(fd) = sd_notify::listen_fds().ok().and_then(|mut fds| fds.next()) else {
        return Ok(None);
    };
    // SAFETY: systemd passed this socket to us alone (LISTEN_PID checked by sd-notify) and
    // nothing else in the process has wrapped it.
    #[allow(unsafe_code)]
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // Required for tokio; systemd hands over blocking sockets.
    std_listener.set_nonblocking(true)?;
    Ok(Some(tokio::net::UnixListener::from_std(std_listener)?))
}
