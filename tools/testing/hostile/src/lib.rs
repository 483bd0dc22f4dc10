//! `hostile`: a test tool that misbehaves towards the host, one function per
//! attack (CPU, host calls that never return, memory, stack, output floods,
//! escapes out of mounts, network destinations, environment, host
//! resources). The containment tests (`tests/containment.rs`) assert how each
//! ends. Not one of the bundled example tools.

sdk_guest::wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "fabric-tests:hostile/hostile",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use std::io::{Read, Write};

struct Hostile;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The preopened directory that holds the absolute guest `path`, and the
/// rest of the path inside it (std has no symlink or set-times on wasip2).
fn in_mount(path: &str) -> Result<(wasi::filesystem::types::Descriptor, String), String> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find_map(|(dir, guest)| {
            let rest = path.strip_prefix(guest.as_str())?.strip_prefix('/')?;
            Some((dir, rest.to_string()))
        })
        .ok_or_else(|| format!("{path} is in no mount"))
}

impl exports::fabric_tests::hostile::api::Guest for Hostile {
    fn spin() {
        let mut x = 1u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    fn sleep(ms: u64) {
        let pollable = wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000);
        pollable.block();
    }

    fn read_socket(addr: String) -> Result<String, String> {
        let mut stream = sdk_guest::net::TcpStream::connect(&addr)?;
        let mut out = Vec::new();
        loop {
            let bytes = stream.read(4096)?;
            if bytes.is_empty() {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&bytes);
        }
    }

    fn hog() -> u64 {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            block[0] = 1;
            block[(1 << 20) - 1] = 1;
            blocks.push(std::hint::black_box(block));
            if blocks.len() == usize::MAX {
                return blocks.len() as u64;
            }
        }
    }

    fn recurse(depth: u64) -> u64 {
        if depth == 0 {
            return 0;
        }
        let pad = std::hint::black_box([depth; 16]);
        1 + Self::recurse(std::hint::black_box(depth - 1)) + pad[3] % 2
    }

    fn flood(n: u64) -> String {
        "x".repeat(n as usize)
    }

    fn spew(n: u64) -> u64 {
        let chunk = vec![b'y'; 64 * 1024];
        let mut written = 0u64;
        let mut out = std::io::stdout();
        let mut errs = std::io::stderr();
        while written < n {
            let len = chunk.len().min((n - written) as usize);
            let a = out.write_all(&chunk[..len]);
            let b = errs.write_all(&chunk[..len]);
            if a.is_err() && b.is_err() {
                break;
            }
            written += len as u64;
        }
        written
    }

    fn read_file(path: String) -> Result<String, String> {
        let mut file = std::fs::File::open(&path).map_err(err)?;
        let mut buf = vec![0u8; 4096];
        let n = file.read(&mut buf).map_err(err)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn write_file(path: String, text: String) -> Result<(), String> {
        std::fs::write(&path, text).map_err(err)
    }

    fn make_dir(path: String) -> Result<(), String> {
        std::fs::create_dir(&path).map_err(err)
    }

    fn remove_file(path: String) -> Result<(), String> {
        std::fs::remove_file(&path).map_err(err)
    }

    fn hard_link(target: String, link: String) -> Result<(), String> {
        std::fs::hard_link(&target, &link).map_err(err)
    }

    fn sym_link(target: String, link: String) -> Result<(), String> {
        let (dir, rest) = in_mount(&link)?;
        dir.symlink_at(&target, &rest).map_err(err)
    }

    fn touch(path: String) -> Result<(), String> {
        use wasi::filesystem::types::{NewTimestamp, PathFlags};
        let (dir, rest) = in_mount(&path)?;
        dir.set_times_at(
            PathFlags::empty(),
            &rest,
            NewTimestamp::Now,
            NewTimestamp::Now,
        )
        .map_err(err)
    }

    fn rename(source: String, destination: String) -> Result<(), String> {
        std::fs::rename(&source, &destination).map_err(err)
    }

    fn fetch(url: String) -> Result<String, String> {
        let r = sdk_guest::http::get(&url, 4096)?;
        Ok(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
    }

    fn connect(addr: String, send: String) -> Result<String, String> {
        let mut stream = sdk_guest::net::TcpStream::connect(&addr)?;
        stream.write_all(send.as_bytes())?;
        let bytes = stream.read(4096)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn send_udp(addr: String) -> Result<(), String> {
        sdk_guest::net::udp_send(&addr, b"hello")
    }

    fn listen(addr: String) -> Result<String, String> {
        Ok(sdk_guest::net::listen(&addr)?.to_string())
    }

    fn lookup(name: String) -> Result<Vec<String>, String> {
        let found = sdk_guest::net::resolve(&name)?;
        Ok(found.into_iter().map(|ip| ip.to_string()).collect())
    }

    fn env(name: String) -> Option<String> {
        std::env::var(&name).ok()
    }

    fn env_names() -> Vec<String> {
        std::env::vars().map(|(k, _)| k).collect()
    }

    fn hold_sockets(n: u64) -> Result<u64, String> {
        use wasi::sockets::network::IpAddressFamily;
        let mut held = Vec::new();
        for i in 0..n {
            match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
                Ok(socket) => held.push(socket),
                Err(e) => return Err(format!("after {i}: {e:?}")),
            }
        }
        Ok(held.len() as u64)
    }

    fn exhaust_resources() -> u64 {
        let mut held = Vec::new();
        loop {
            held.push(wasi::clocks::monotonic_clock::subscribe_duration(
                1_000_000_000,
            ));
            if held.len() == usize::MAX {
                return held.len() as u64;
            }
        }
    }
}

export!(Hostile);
