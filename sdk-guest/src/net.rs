//! Plain TCP and UDP through `wasi:sockets`, blocking and small.
//!
//! The host checks every destination against the tool's `[net] allow` list
//! (and its private-range rule) when the socket connects or sends; a name is
//! resolved only when a rule names it. A refused destination fails with
//! [`Error`] ("access denied") and is listed under the call's `denials`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use wasi::sockets::tcp::TcpSocket;

/// Why a socket operation failed, as a message fit to hand back to the agent.
pub type Error = String;

fn code(what: &str, e: ErrorCode) -> Error {
    format!("{what}: {e:?}")
}

fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: a.port(),
                address: (o[0], o[1], o[2], o[3]),
            })
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: 0,
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                scope_id: 0,
            })
        }
    }
}

fn from_wasi(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

fn family(addr: &SocketAddr) -> IpAddressFamily {
    if addr.is_ipv4() {
        IpAddressFamily::Ipv4
    } else {
        IpAddressFamily::Ipv6
    }
}

/// Resolves `name` (an IP literal is returned as it is).
pub fn resolve(name: &str) -> Result<Vec<IpAddr>, Error> {
    if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(vec![ip]);
    }
    let network = instance_network();
    let stream = wasi::sockets::ip_name_lookup::resolve_addresses(&network, name)
        .map_err(|e| code(&format!("looking up {name}"), e))?;
    let pollable = stream.subscribe();
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => found.push(from_wasi(ip)),
            Ok(None) => break,
            Err(ErrorCode::WouldBlock) => pollable.block(),
            Err(e) => return Err(code(&format!("looking up {name}"), e)),
        }
    }
    Ok(found)
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(addr: &str) -> Result<(&str, u16), Error> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{addr:?}: bad port {port:?}"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Every address of `host:port`.
pub fn socket_addrs(addr: &str) -> Result<Vec<SocketAddr>, Error> {
    let (host, port) = split_host_port(addr)?;
    Ok(resolve(host)?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// An open TCP connection.
pub struct TcpStream {
    // Field order is drop order: the streams before their socket.
    input: InputStream,
    output: OutputStream,
    _socket: TcpSocket,
}

impl TcpStream {
    /// Connects to `addr` (`host:port`), trying each address of the host in
    /// turn.
    pub fn connect(addr: &str) -> Result<TcpStream, Error> {
        let network = instance_network();
        let mut last = format!("{addr}: no address");
        for target in socket_addrs(addr)? {
            match connect_one(&network, target) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Writes all of `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        for chunk in bytes.chunks(4096) {
            self.output
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error("writing", e))?;
        }
        Ok(())
    }

    /// Reads what arrives next, at most `max` bytes; empty at end of stream.
    pub fn read(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        match self.input.blocking_read(max as u64) {
            Ok(bytes) => Ok(bytes),
            Err(StreamError::Closed) => Ok(Vec::new()),
            Err(e) => Err(stream_error("reading", e)),
        }
    }
}

fn stream_error(what: &str, e: StreamError) -> Error {
    match e {
        StreamError::Closed => format!("{what}: connection closed"),
        StreamError::LastOperationFailed(e) => format!("{what}: {}", e.to_debug_string()),
    }
}

fn connect_one(network: &Network, target: SocketAddr) -> Result<TcpStream, Error> {
    let what = format!("connecting to {target}");
    let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(family(&target))
        .map_err(|e| code(&what, e))?;
    socket
        .start_connect(network, to_wasi(target))
        .map_err(|e| code(&what, e))?;
    let pollable = socket.subscribe();
    let (input, output) = loop {
        match socket.finish_connect() {
            Ok(pair) => break pair,
            Err(ErrorCode::WouldBlock) => pollable.block(),
            Err(e) => return Err(code(&what, e)),
        }
    };
    drop(pollable);
    Ok(TcpStream {
        input,
        output,
        _socket: socket,
    })
}

/// Sends one UDP datagram to `addr` (`host:port`, the first address).
pub fn udp_send(addr: &str, data: &[u8]) -> Result<(), Error> {
    let target = *socket_addrs(addr)?
        .first()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let what = format!("sending to {target}");
    let network = instance_network();
    let socket = wasi::sockets::udp_create_socket::create_udp_socket(family(&target))
        .map_err(|e| code(&what, e))?;
    let any = match target {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    socket
        .start_bind(&network, to_wasi(any))
        .map_err(|e| code(&what, e))?;
    let pollable = socket.subscribe();
    loop {
        match socket.finish_bind() {
            Ok(()) => break,
            Err(ErrorCode::WouldBlock) => pollable.block(),
            Err(e) => return Err(code(&what, e)),
        }
    }
    drop(pollable);
    let (incoming, outgoing) = socket
        .stream(Some(to_wasi(target)))
        .map_err(|e| code(&what, e))?;
    let ready = outgoing.subscribe();
    let result = loop {
        match outgoing.check_send() {
            Ok(0) => ready.block(),
            Ok(_) => {
                break outgoing
                    .send(&[wasi::sockets::udp::OutgoingDatagram {
                        data: data.to_vec(),
                        remote_address: None,
                    }])
                    .map(drop)
                    .map_err(|e| code(&what, e))
            }
            Err(e) => break Err(code(&what, e)),
        }
    };
    drop(ready);
    drop(incoming);
    drop(outgoing);
    result
}

/// Binds a TCP socket to `addr` (`ip:port`) and listens; returns the address
/// it listens on. The host refuses it unless the policy's `[net] listen`
/// names the address.
pub fn listen(addr: &str) -> Result<SocketAddr, Error> {
    let target = *socket_addrs(addr)?
        .first()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let what = format!("listening on {target}");
    let network = instance_network();
    let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(family(&target))
        .map_err(|e| code(&what, e))?;
    socket
        .start_bind(&network, to_wasi(target))
        .map_err(|e| code(&what, e))?;
    let pollable = socket.subscribe();
    loop {
        match socket.finish_bind() {
            Ok(()) => break,
            Err(ErrorCode::WouldBlock) => pollable.block(),
            Err(e) => return Err(code(&what, e)),
        }
    }
    socket.start_listen().map_err(|e| code(&what, e))?;
    loop {
        match socket.finish_listen() {
            Ok(()) => break,
            Err(ErrorCode::WouldBlock) => pollable.block(),
            Err(e) => return Err(code(&what, e)),
        }
    }
    let local = socket.local_address().map_err(|e| code(&what, e))?;
    Ok(match local {
        IpSocketAddress::Ipv4(a) => {
            let (x, y, z, w) = a.address;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(x, y, z, w)), a.port)
        }
        IpSocketAddress::Ipv6(a) => {
            let (b, c, d, e, f, g, h, i) = a.address;
            SocketAddr::new(IpAddr::V6(Ipv6Addr::new(b, c, d, e, f, g, h, i)), a.port)
        }
    })
}
