//! Network fixtures: an address that never completes a TCP handshake, and a port where nothing
//! listens, held for the whole test.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd as _;
use std::time::Duration;

/// A TCP address that never completes a handshake (a black hole, without a network
/// namespace): a listener with backlog 0 whose accept queue is already full, so the kernel
/// drops further SYNs and a client's connect hangs until its timeout.
pub struct Blackhole {
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds `ip:port` (IPv4 or IPv6) and fills its queue.
    pub fn bind(ip: IpAddr, port: u16) -> Self {
        let addr = SocketAddr::new(ip, port);
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        if ip.is_ipv6() {
            socket.set_only_v6(true).unwrap();
        }
        socket.bind(&addr.into()).unwrap();
        // socket2 passes the backlog through; 0 keeps the accept queue at its minimum.
        socket.listen(0).unwrap();
        // SAFETY: the descriptor is ours and is moved into the listener.
        let listener = unsafe { TcpListener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(socket)) };
        let mut fillers = Vec::new();
        for _ in 0..4 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => return Self { _listener: listener, _fillers: fillers },
            }
        }
        panic!("could not fill the listen queue of {addr}");
    }
}

/// A TCP port on 127.0.0.1 where nothing listens: a socket bound to it but not listening, so
/// that connections are refused at once and no other program of the machine can take the port
/// for as long as the test holds it (a port found by binding and releasing could be taken by
/// another test in between). [`DeadPort::listen`] brings it to life; a Postern listener can
/// also bind it while it is held (both sockets set `SO_REUSEADDR`, and Linux lets a second
/// socket bind a port whose only other socket is not listening): how tests give instances that
/// name each other's ports their ports before they start.
pub struct DeadPort {
    socket: socket2::Socket,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        Self { socket, port }
    }

    /// Starts listening on the port (the destination "comes back").
    pub fn listen(self) -> TcpListener {
        self.socket.listen(128).unwrap();
        self.socket.into()
    }
}
