//! Free loopback addresses for listeners a test's server binds itself.

use std::net::SocketAddr;

/// A free TCP address on 127.0.0.1 (bound and released; a race with other tests is possible).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().port()
}
