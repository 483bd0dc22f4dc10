//! The network rules, in one place: the wasi:http connector, the
//! wasi:sockets address check and name lookups all ask [`Gate`], and the
//! address checked is the address dialled.
//!
//! A destination passes when both hold:
//!
//! 1. **The allowlist.** The name the tool wrote matches a `[net] allow`
//!    name rule with its port, or the address matches an IP/CIDR rule with
//!    its port. For sockets, which connect to addresses, the name is the one
//!    whose lookup (in this call, answered only for allowed names) returned
//!    the address.
//! 2. **The private-range rule.** Every address is checked as it is about to
//!    be dialled, after resolution (so a name that resolves to 127.0.0.1, at
//!    once or on a second lookup, does not get through: DNS rebinding). An
//!    address in a [private range](private_range) (the special-purpose
//!    ranges, and this host's own interface addresses) is refused unless
//!    `allow_private = true` or an IP/CIDR rule *inside* that range allows it
//!    (`127.0.0.1/32:6379` names loopback explicitly; `0.0.0.0/0:443` names
//!    no range in particular and does not). IPv6 addresses that embed an IPv4
//!    address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//!    NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`) are
//!    judged by the embedded address too.
//!
//! Every refusal is a [`Denial`] of kind `net` whose reason names the rule
//! that would allow it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::policy::{in_network, NetHost, NetPolicy};
use crate::sandbox::Denial;
use wasmtime_wasi::sockets::SocketAddrUse;

/// A range of addresses refused unless allowed explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateRange {
    /// What the range is: `loopback`, `link-local`, …
    pub what: &'static str,
    /// The range's network address.
    pub net: IpAddr,
    /// Its prefix length.
    pub bits: u8,
}

const fn v4(what: &'static str, a: u8, b: u8, c: u8, d: u8, bits: u8) -> PrivateRange {
    PrivateRange {
        what,
        net: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        bits,
    }
}

const fn v6(what: &'static str, first: u16, bits: u8) -> PrivateRange {
    PrivateRange {
        what,
        net: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0)),
        bits,
    }
}

/// The private ranges, most specific first (the metadata address before
/// the rest of link-local).
pub const PRIVATE_RANGES: &[PrivateRange] = &[
    v4("cloud metadata (link-local)", 169, 254, 169, 254, 32),
    v4(
        "cloud host endpoint (Azure WireServer)",
        168,
        63,
        129,
        16,
        32,
    ),
    v4("broadcast", 255, 255, 255, 255, 32),
    v4("unspecified (\"this host\")", 0, 0, 0, 0, 8),
    v4("loopback", 127, 0, 0, 0, 8),
    v4("link-local", 169, 254, 0, 0, 16),
    v4("private (RFC 1918)", 10, 0, 0, 0, 8),
    v4("private (RFC 1918)", 172, 16, 0, 0, 12),
    v4("private (RFC 1918)", 192, 168, 0, 0, 16),
    v4("shared address space (CGNAT)", 100, 64, 0, 0, 10),
    v4("multicast", 224, 0, 0, 0, 4),
    v4("reserved (future use)", 240, 0, 0, 0, 4),
    v4("IETF protocol assignments", 192, 0, 0, 0, 24),
    v4("documentation (TEST-NET-1)", 192, 0, 2, 0, 24),
    v4("documentation (TEST-NET-2)", 198, 51, 100, 0, 24),
    v4("documentation (TEST-NET-3)", 203, 0, 113, 0, 24),
    v4("benchmarking", 198, 18, 0, 0, 15),
    PrivateRange {
        what: "unspecified",
        net: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        bits: 128,
    },
    PrivateRange {
        what: "loopback",
        net: IpAddr::V6(Ipv6Addr::LOCALHOST),
        bits: 128,
    },
    v6("link-local", 0xfe80, 10),
    v6("site-local (deprecated)", 0xfec0, 10),
    v6("unique local (ULA)", 0xfc00, 7),
    v6("multicast", 0xff00, 8),
    PrivateRange {
        what: "documentation",
        net: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
        bits: 32,
    },
];

/// How long the host's own addresses, once read, are taken as they are
/// (interfaces come and go: DHCP, VPNs, containers).
const OWN_ADDRESSES_FOR: Duration = Duration::from_secs(10);

/// The addresses of this host's network interfaces, read at most every
/// [`OWN_ADDRESSES_FOR`]. A tool allowed a wide network (`0.0.0.0/0:*`)
/// would otherwise reach every service this host runs on its public or
/// test-network address, which no fixed range covers.
fn own_addresses() -> Vec<IpAddr> {
    static CACHE: Mutex<Option<(std::time::Instant, Vec<IpAddr>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    match &*cache {
        Some((read, addrs)) if read.elapsed() < OWN_ADDRESSES_FOR => addrs.clone(),
        _ => {
            let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
                .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
                .unwrap_or_default();
            *cache = Some((std::time::Instant::now(), addrs.clone()));
            addrs
        }
    }
}

/// The IPv4 address an IPv6 address stands for, and how it is written:
/// IPv4-mapped, IPv4-compatible, NAT64 or 6to4.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some((mapped, "IPv4-mapped IPv6"));
    }
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some((last, "IPv4-compatible IPv6"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some((last, "NAT64 IPv6"));
    }
    if s[0] == 0x2002 {
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), "6to4 IPv6"));
    }
    None
}

/// The IPv4 host an IPv6 address is exactly, one address for one: the
/// IPv4-mapped and -compatible forms and the well-known NAT64 prefix
/// (64:ff9b::/96). A 6to4 /48 or a local-use NAT64 /48 stands for a whole
/// network of IPv6 addresses, so an IPv4 rule does not allow them (the
/// private ranges still refuse them, by [`embedded_v4`]).
fn exact_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let (v4, _) = embedded_v4(ip)?;
    let s = ip.segments();
    (s[..5] == [0; 5] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then_some(v4)
}

/// The private range `ip` is in (judging an IPv6 address that embeds an
/// IPv4 one by the IPv4 address), and the form it was written in when that
/// was an embedding: the first of [`private_ranges`].
pub fn private_range(ip: IpAddr) -> Option<(PrivateRange, Option<&'static str>)> {
    private_ranges(ip).into_iter().next()
}

/// Every private range a rule must lie within to allow `ip`: the first fixed
/// range it is in, and, when it is one of this host's own addresses (and
/// not loopback, which is this host by definition), that address alone: a
/// rule for the host's own subnet (`10.0.0.0/8`) does not reach the services
/// of the host itself (10.0.0.5) unless it names it.
pub fn private_ranges(ip: IpAddr) -> Vec<(PrivateRange, Option<&'static str>)> {
    let find = |ip: IpAddr| {
        PRIVATE_RANGES
            .iter()
            .find(|r| in_network(ip, r.net, r.bits))
            .copied()
    };
    let own = |ip: IpAddr| {
        own_addresses().contains(&ip).then(|| PrivateRange {
            what: "this host's own address",
            net: ip,
            bits: if ip.is_ipv4() { 32 } else { 128 },
        })
    };
    let (judged, form) = match ip {
        IpAddr::V6(v6) if find(ip).is_none() && own(ip).is_none() => match embedded_v4(v6) {
            Some((inner, form)) => (IpAddr::V4(inner), Some(form)),
            None => return Vec::new(),
        },
        _ => (ip, None),
    };
    let fixed = find(judged);
    let loopback = fixed.is_some_and(|r| r.what == "loopback");
    fixed
        .into_iter()
        .chain(own(judged).filter(|_| !loopback))
        .map(|r| (r, form))
        .collect()
}

/// `ip` as a rule would write it: `[::1]` for IPv6.
fn show_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// An `allow` rule that names exactly `ip` on `port` (0, outbound, is a
/// name lookup's: any port, written `*`).
fn exact_rule(ip: IpAddr, port: u16) -> String {
    match port {
        0 => rule_for(ip, "*"),
        p => rule_for(ip, &p.to_string()),
    }
}

/// A `listen` rule that names exactly `ip` on `port` (0: a port the
/// system chooses).
fn listen_rule(ip: IpAddr, port: u16) -> String {
    rule_for(ip, &port.to_string())
}

/// A rule for exactly `ip` on `port` as written.
fn rule_for(ip: IpAddr, port: &str) -> String {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    match ip {
        IpAddr::V4(a) => format!("{a}/{bits}:{port}"),
        IpAddr::V6(a) => format!("[{a}/{bits}]:{port}"),
    }
}

impl NetPolicy {
    /// Whether a rule allows the name `name` (lower-case, no trailing dot)
    /// on `port`.
    pub fn allows_name(&self, name: &str, port: u16) -> bool {
        self.allow.iter().any(|rule| {
            rule.port.is_none_or(|p| p == port)
                && matches!(&rule.host, NetHost::Name(n) if n == name)
        })
    }

    /// Whether an IP/CIDR rule allows `ip` (or the IPv4 address it embeds)
    /// on `port`; with `inside`, only a rule whose network lies within that
    /// range counts.
    fn cidr_allows(&self, ip: IpAddr, port: u16, inside: Option<&PrivateRange>) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => exact_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow.iter().any(|rule| {
            let NetHost::Cidr(net, bits) = rule.host else {
                return false;
            };
            let within = inside.is_none_or(|r| {
                let net_v4 = match net {
                    IpAddr::V6(v6) if bits >= 96 => embedded_v4(v6).map(|(a, _)| IpAddr::V4(a)),
                    _ => None,
                };
                let rule_bits = if net_v4.is_some() { bits - 96 } else { bits };
                rule_bits >= r.bits && in_network(net_v4.unwrap_or(net), r.net, r.bits)
            });
            rule.port.is_none_or(|p| p == port)
                && within
                && (in_network(ip, net, bits) || embedded.is_some_and(|e| in_network(e, net, bits)))
        })
    }

    /// Checks one address about to be dialled on `port`, reached through the
    /// name `name` (as the tool wrote it, or as its lookup was answered) or
    /// written as an address (`None`). `Err` is the reason, naming the rule
    /// that would allow it.
    pub fn check_addr(&self, ip: IpAddr, port: u16, name: Option<&str>) -> Result<(), String> {
        for (range, form) in private_ranges(ip) {
            if !self.allow_private && !self.cidr_allows(ip, port, Some(&range)) {
                let written = form
                    .map(|f| format!(", written as {f}"))
                    .unwrap_or_default();
                let via = name
                    .map(|n| format!("{n} resolves to "))
                    .unwrap_or_default();
                return Err(format!(
                    "{via}{} in a private range: {} {}/{}{written}; \
                     allow it with [net] allow = [\"{}\"] or allow_private = true",
                    show_host(ip),
                    range.what,
                    range.net,
                    range.bits,
                    exact_rule(ip, port),
                ));
            }
        }
        let named = name.is_some_and(|n| self.allows_name(n, port));
        if named || self.cidr_allows(ip, port, None) {
            return Ok(());
        }
        let rule = match name {
            Some(n) => format!("{n}:{port}"),
            None => exact_rule(ip, port),
        };
        Err(format!(
            "not in the policy's [net] allow list; allow it with [net] allow = [\"{rule}\"]"
        ))
    }
}

/// Sockets (TCP and UDP, wasi:sockets) one call may create, whatever it
/// closed since: enough for any client's connections, far from the
/// process's descriptor limit, which every call shares.
pub const MAX_SOCKETS: usize = 256;

/// The network state of one call: its policy, its refusals and the names
/// its lookups were answered for. Cheap to clone; every clone shares it.
#[derive(Clone)]
pub struct Gate {
    policy: Arc<NetPolicy>,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// Sockets the call created so far.
    sockets: usize,
    denials: Vec<Denial>,
    /// Address → the allowed name whose lookup returned it.
    names: HashMap<IpAddr, String>,
}

/// Refused and listed as a denial (which says why): the error wasi:http
/// reports to the guest.
fn denied() -> wasmtime_wasi_http::Error {
    wasmtime_wasi_http::Error::HttpRequestDenied
}

impl Gate {
    /// A gate for one call under `policy`.
    pub fn new(policy: &NetPolicy) -> Gate {
        Gate {
            policy: Arc::new(policy.clone()),
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a refusal.
    pub fn deny(&self, kind: &'static str, target: String, reason: String) {
        tracing::info!(kind, "capability denied");
        self.lock().denials.push(Denial {
            kind,
            target,
            reason,
        });
    }

    /// Counts a socket the call is about to create; false, and a denial,
    /// past [`MAX_SOCKETS`]. Each socket is a descriptor of this process,
    /// which every call shares.
    pub fn take_socket(&self) -> bool {
        let created = {
            let mut shared = self.lock();
            shared.sockets += 1;
            shared.sockets
        };
        if created > MAX_SOCKETS {
            if created == MAX_SOCKETS + 1 {
                self.deny(
                    "net",
                    "socket".into(),
                    format!("more than {MAX_SOCKETS} sockets in one call: each is a file descriptor the host's other calls need"),
                );
            }
            return false;
        }
        true
    }

    /// The refusals so far, taken.
    pub fn take_denials(&self) -> Vec<Denial> {
        std::mem::take(&mut self.lock().denials)
    }

    /// The policy.
    pub fn policy(&self) -> &NetPolicy {
        &self.policy
    }

    /// Resolves `host` (a name or an IP literal, brackets allowed) for a
    /// connection on `port` and returns the addresses that pass, in the
    /// resolver's order. Every refused address is a denial; none passing is
    /// an error.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = |ip: Option<IpAddr>| match ip {
            Some(ip) if host.parse::<IpAddr>().is_err() => {
                format!("{host}:{port} ({})", SocketAddr::new(ip, port))
            }
            _ => format!("{}:{port}", show_host_str(host)),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return match self.policy.check_addr(ip, port, None) {
                Ok(()) => Ok(vec![SocketAddr::new(ip, port)]),
                Err(reason) => {
                    self.deny("net", target(None), reason);
                    Err(Refused::Denied)
                }
            };
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.policy.allows_name(&name, port) {
            let reason = if crate::policy::is_host_name(&name) {
                format!(
                    "not in the policy's [net] allow list; allow it with [net] allow = [\"{name}:{port}\"]"
                )
            } else {
                "not a host name, nor an IP address written as rules write them (127.0.0.1, [::1]): no rule can allow it".to_string()
            };
            self.deny("net", target(None), reason);
            return Err(Refused::Denied);
        }
        let found = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|_| Refused::NotFound)?;
        let mut passed = Vec::new();
        for addr in found {
            match self.policy.check_addr(addr.ip(), port, Some(&name)) {
                Ok(()) => passed.push(addr),
                Err(reason) => self.deny("net", target(Some(addr.ip())), reason),
            }
        }
        if passed.is_empty() {
            return Err(Refused::Denied);
        }
        Ok(passed)
    }

    /// Answers a wasi:sockets name lookup: only for a name some rule allows
    /// (on any port), returning only the addresses that could pass on some
    /// port it allows; the addresses are remembered as that name's, for the
    /// connection check.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let ports: Vec<Option<u16>> = self
            .policy
            .allow
            .iter()
            .filter(|r| matches!(&r.host, NetHost::Name(n) if *n == name))
            .map(|r| r.port)
            .collect();
        if ports.is_empty() {
            self.deny(
                "net",
                name.clone(),
                format!(
                    "name lookup refused: no [net] allow rule names it; allow it with [net] allow = [\"{name}:PORT\"]"
                ),
            );
            return Err(Refused::Denied);
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let found = tokio::net::lookup_host((name.as_str(), 0))
            .await
            .map_err(|_| Refused::NotFound)?;
        let mut passed = Vec::new();
        for addr in found {
            let ip = addr.ip();
            let port = ports.iter().flatten().next().copied().unwrap_or(0);
            // The private-range rule only: the name itself is allowed.
            match self.policy.check_addr(ip, port, Some(&name)) {
                Ok(()) => {
                    if !passed.contains(&ip) {
                        passed.push(ip);
                    }
                }
                Err(reason) => self.deny("net", format!("{name} ({ip})"), reason),
            }
        }
        if passed.is_empty() {
            return Err(Refused::Denied);
        }
        let mut shared = self.lock();
        for ip in &passed {
            shared.names.insert(*ip, name.clone());
        }
        Ok(passed)
    }

    /// Whether a socket may connect or send to `addr`: checked on the
    /// address, with the name whose lookup returned it. A refusal is a
    /// denial.
    pub fn check_socket(&self, addr: SocketAddr, what: &str) -> bool {
        let name = self.lock().names.get(&addr.ip()).cloned();
        match self
            .policy
            .check_addr(addr.ip(), addr.port(), name.as_deref())
        {
            Ok(()) => true,
            Err(reason) => {
                let target = match &name {
                    Some(n) => format!("{n}:{} ({addr})", addr.port()),
                    None => addr.to_string(),
                };
                self.deny("net", target, format!("{what}: {reason}"));
                false
            }
        }
    }
}

impl Gate {
    /// The `socket_addr_check` of wasmtime-wasi: connections and datagrams
    /// are checked on their address; the implicit bind to the any-address
    /// and port 0 is allowed; any other bind, and listening, only on an
    /// address a `[net] listen` rule names.
    pub fn check_socket_use(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpConnect => self.check_socket(addr, "TCP connection"),
            SocketAddrUse::UdpSend => self.check_socket(addr, "UDP datagram"),
            // Only a socket whose listening was allowed accepts.
            SocketAddrUse::TcpAccept => true,
            // Replies only from where the tool may send; dropped silently.
            SocketAddrUse::UdpReceive => {
                let name = self.lock().names.get(&addr.ip()).cloned();
                self.policy
                    .check_addr(addr.ip(), addr.port(), name.as_deref())
                    .is_ok()
            }
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind
                if addr.ip().is_unspecified() && addr.port() == 0 =>
            {
                true
            }
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind | SocketAddrUse::TcpListen => {
                // Listening reports the port the system chose: a rule for
                // port 0 (an ephemeral port) allows it.
                let listening = matches!(usage, SocketAddrUse::TcpListen);
                let allowed = self.policy.listen.iter().any(|rule| {
                    rule.port
                        .is_none_or(|p| p == addr.port() || (listening && p == 0))
                        && matches!(rule.host, NetHost::Cidr(net, bits) if in_network(addr.ip(), net, bits))
                });
                if !allowed {
                    let what = if matches!(usage, SocketAddrUse::TcpListen) {
                        "listening"
                    } else {
                        "binding"
                    };
                    self.deny(
                        "net",
                        addr.to_string(),
                        format!(
                            "{what} refused: inbound sockets need a [net] listen rule; allow it with [net] listen = [\"{}\"]{}",
                            listen_rule(addr.ip(), addr.port()),
                            if listening {
                                format!(" (or \"{}\" for whatever port the system chooses)", listen_rule(addr.ip(), 0))
                            } else {
                                String::new()
                            }
                        ),
                    );
                }
                allowed
            }
        }
    }
}

fn show_host_str(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => show_host(ip),
        Err(_) => host.to_string(),
    }
}

/// Why a destination was not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A rule refused it (the denial is recorded).
    Denied,
    /// The name did not resolve.
    NotFound,
}

/// How long a TCP connection may take to open when the request sets no
/// limit (the call's own timeout still applies).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

type Body = wasmtime_wasi_http::WasiBody;
type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

/// Sends one outgoing wasi:http request: resolves the host itself, checks
/// every address, and connects only to an address that passed (TLS verified
/// against the host name the tool wrote). HTTP/1.1.
pub async fn send_request(
    gate: Gate,
    mut request: http::Request<Body>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
) -> Result<(http::Response<Body>, IoFuture), wasmtime_wasi_http::Error> {
    use http_body_util::BodyExt;
    use wasmtime_wasi_http::Error;

    let uri = request.uri().clone();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs = match gate.resolve(&host, port).await {
        Ok(addrs) => addrs,
        Err(Refused::Denied) => return Err(denied()),
        Err(Refused::NotFound) => return Err(Error::DestinationNotFound),
    };
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(CONNECT_TIMEOUT);
    let mut last = Error::ConnectionRefused;
    let mut stream = None;
    for addr in addrs {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    let stream = stream.ok_or(last)?;

    let (sender, conn) = if tls {
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let server = match name.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(Error::InvalidDnsNameError)?,
        };
        let stream = tls_connector()
            .connect(server, stream)
            .await
            .map_err(Error::Tls)?;
        handshake(stream).await?
    } else {
        handshake(stream).await?
    };
    let mut sender = sender;
    // The request line carries only the path: scheme and authority are for
    // proxies (the Host header carries the authority).
    // An empty path ("http://h?q=1") is "/" on the request line.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    let mut conn = conn;
    let response = {
        let send = sender.send_request(request);
        tokio::pin!(send);
        tokio::select! {
            biased;
            response = &mut send => response?,
            ended = &mut conn => {
                ended?;
                send.await?
            }
        }
    };
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io: IoFuture = Box::new(async move { conn.await.map_err(Error::from) });
    Ok((response, io))
}

type Conn = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

async fn handshake<S>(
    stream: S,
) -> Result<(hyper::client::conn::http1::SendRequest<Body>, Conn), wasmtime_wasi_http::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    Ok((sender, Box::pin(conn)))
}

/// The TLS client configuration, built once: the webpki roots.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn net(text: &str) -> NetPolicy {
        crate::policy::Policy::parse(text, Path::new("."))
            .expect("policy")
            .net
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn every_private_range_and_its_embedded_forms() {
        for (addr, what) in [
            ("127.0.0.1", "loopback"),
            ("127.3.4.5", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("10.9.8.7", "RFC 1918"),
            ("172.31.0.1", "RFC 1918"),
            ("192.168.1.1", "RFC 1918"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "ULA"),
            ("fc12::1", "ULA"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "RFC 1918"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("64:ff9b:1::c0a8:101", "RFC 1918"),
            ("::127.0.0.1", "loopback"),
            ("2002:7f00:1::1", "loopback"),
            ("192.0.0.8", "IETF"),
            ("192.0.2.2", "TEST-NET-1"),
            ("198.51.100.7", "TEST-NET-2"),
            ("203.0.113.9", "TEST-NET-3"),
            ("198.19.255.1", "benchmarking"),
            ("2001:db8::1", "documentation"),
            ("::ffff:192.0.2.2", "TEST-NET-1"),
        ] {
            let (range, _) = private_range(ip(addr)).unwrap_or_else(|| panic!("{addr} is private"));
            assert!(range.what.contains(what), "{addr}: {range:?}");
        }
        for addr in [
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "::ffff:93.184.215.14",
            "64:ff9b::5db8:d70e",
        ] {
            assert_eq!(private_range(ip(addr)), None, "{addr} is public");
        }
    }

    #[test]
    fn this_hosts_own_addresses_are_refused_even_under_a_catch_all_rule() {
        let p = net("[net]\nallow = [\"0.0.0.0/0:*\", \"[::/0]:*\"]");
        for own in if_addrs::get_if_addrs().expect("interfaces") {
            let addr = own.ip();
            let err = p
                .check_addr(addr, 8080, None)
                .expect_err("own address refused");
            assert!(err.contains("private range"), "{addr}: {err}");
            if let IpAddr::V4(v4) = addr {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert!(p.check_addr(mapped, 8080, None).is_err(), "{mapped}");
            }
        }
        assert!(p.check_addr(ip("93.184.215.14"), 443, None).is_ok());
        // A rule for an own address's subnet does not reach the address;
        // one naming it does; loopback's rules stay loopback's.
        for own in if_addrs::get_if_addrs().expect("interfaces") {
            let addr = own.ip();
            let Some((range, _)) = private_range(addr) else {
                continue;
            };
            if range.what == "loopback" || range.what == "this host's own address" {
                continue;
            }
            let show = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}"),
            };
            let (open, close) = if addr.is_ipv4() { ("", "") } else { ("", "]") };
            let subnet = net(&format!(
                "[net]\nallow = [\"{open}{}/{}{close}:*\"]",
                show(range.net),
                range.bits
            ));
            let err = subnet
                .check_addr(addr, 8080, None)
                .expect_err("own address");
            assert!(err.contains("this host's own address"), "{addr}: {err}");
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            let exact = net(&format!(
                "[net]\nallow = [\"{}/{bits}{close}:*\"]",
                show(addr)
            ));
            assert!(exact.check_addr(addr, 8080, None).is_ok(), "{addr}");
        }
        let p = net("[net]\nallow = [\"127.0.0.0/8:8080\"]");
        assert!(p.check_addr(ip("127.0.0.1"), 8080, None).is_ok());
    }

    #[test]
    fn an_ipv4_rule_allows_only_the_ipv6_forms_that_are_that_address() {
        let p = net("[net]\nallow = [\"93.184.215.14/32:443\"]");
        for allowed in ["::ffff:93.184.215.14", "64:ff9b::5db8:d70e"] {
            assert!(p.check_addr(ip(allowed), 443, None).is_ok(), "{allowed}");
        }
        for refused in [
            "2002:5db8:d70e:1234::99",
            "64:ff9b:1:1234:5678:9abc:5db8:d70e",
        ] {
            assert!(p.check_addr(ip(refused), 443, None).is_err(), "{refused}");
        }
        // A lookup under a rule of any port suggests a rule of any port.
        let err = p
            .check_addr(ip("127.0.0.1"), 0, Some("localhost"))
            .expect_err("loopback");
        assert!(err.contains("127.0.0.1/32:*"), "{err}");
        let err = p
            .check_addr(ip("168.63.129.16"), 80, None)
            .expect_err("wireserver");
        assert!(err.contains("Azure"), "{err}");
    }

    #[test]
    fn private_addresses_need_allow_private_or_a_rule_inside_their_range() {
        let p = net("[net]\nallow = [\"localhost:8080\", \"0.0.0.0/0:443\", \"example.com:443\"]");
        let err = p
            .check_addr(ip("127.0.0.1"), 8080, Some("localhost"))
            .expect_err("loopback refused");
        assert!(
            err.contains("loopback") && err.contains("allow_private = true"),
            "{err}"
        );
        assert!(err.contains("127.0.0.1/32:8080"), "{err}");
        // A catch-all CIDR names no private range.
        assert!(p.check_addr(ip("10.0.0.1"), 443, None).is_err());
        assert!(p.check_addr(ip("93.184.215.14"), 443, None).is_ok());
        assert!(p
            .check_addr(ip("93.184.215.14"), 443, Some("example.com"))
            .is_ok());
        // The name is allowed on 443 only.
        let err = p
            .check_addr(ip("93.184.215.14"), 80, Some("example.com"))
            .expect_err("port 80");
        assert!(err.contains("example.com:80"), "{err}");

        let p = net("[net]\nallow = [\"localhost:8080\"]\nallow_private = true");
        assert!(p
            .check_addr(ip("127.0.0.1"), 8080, Some("localhost"))
            .is_ok());
        assert!(p.check_addr(ip("127.0.0.1"), 8080, None).is_err());

        let p = net("[net]\nallow = [\"127.0.0.1/32:6379\", \"10.1.2.0/24:*\"]");
        assert!(p.check_addr(ip("127.0.0.1"), 6379, None).is_ok());
        assert!(p.check_addr(ip("::ffff:127.0.0.1"), 6379, None).is_ok());
        assert!(p.check_addr(ip("127.0.0.1"), 6380, None).is_err());
        assert!(p.check_addr(ip("10.1.2.200"), 5432, None).is_ok());
        assert!(p.check_addr(ip("10.1.3.1"), 5432, None).is_err());
        let err = p
            .check_addr(ip("169.254.169.254"), 80, None)
            .expect_err("metadata");
        assert!(err.contains("cloud metadata"), "{err}");
        let err = p
            .check_addr(ip("::ffff:169.254.169.254"), 80, None)
            .expect_err("mapped metadata");
        assert!(err.contains("IPv4-mapped"), "{err}");
    }
}
