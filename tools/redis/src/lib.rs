//! `redis`: PING and GET against the Redis server the policy names
//! (`REDIS_ADDR`), over a plain TCP socket speaking RESP.

sdk_guest::wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "fabric-tools:redis/redis",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use exports::fabric_tools::redis::api::Guest;
use sdk_guest::net::TcpStream;

/// Largest reply read; a longer value is refused rather than cut.
const MAX_REPLY: usize = 1 << 20;

struct Redis;

/// One RESP reply.
enum Reply {
    Simple(String),
    Bulk(Option<Vec<u8>>),
    Integer(i64),
}

/// A connection with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open() -> Result<Conn, String> {
        let addr = std::env::var("REDIS_ADDR").map_err(|_| {
            "REDIS_ADDR is not set: the tool's policy must set it ([env] vars = { REDIS_ADDR = \"host:port\" })".to_string()
        })?;
        let stream = TcpStream::connect(&addr).map_err(|e| format!("redis at {addr}: {e}"))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends a command as an array of bulk strings.
    fn command(&mut self, parts: &[&[u8]]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out)?;
        self.reply()
    }

    /// Reads until the buffer holds `n` bytes.
    fn fill(&mut self, n: usize) -> Result<(), String> {
        if n > MAX_REPLY + 64 {
            return Err(format!("the reply is longer than {MAX_REPLY} bytes"));
        }
        while self.buf.len() < n {
            let more = self.stream.read(64 * 1024)?;
            if more.is_empty() {
                return Err("the server closed the connection mid-reply".into());
            }
            self.buf.extend_from_slice(&more);
        }
        Ok(())
    }

    /// One line, without its CRLF.
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return String::from_utf8(line).map_err(|_| "a reply line is not UTF-8".into());
            }
            let len = self.buf.len();
            self.fill(len + 1)?;
        }
    }

    fn reply(&mut self) -> Result<Reply, String> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Err(format!("redis error: {rest}")),
            ":" => rest
                .parse()
                .map(Reply::Integer)
                .map_err(|_| format!("bad integer reply {rest:?}")),
            "$" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|_| format!("bad bulk length {rest:?}"))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).map_err(|_| "bad bulk length".to_string())?;
                if len > MAX_REPLY {
                    return Err(format!("the value is {len} bytes, more than {MAX_REPLY}"));
                }
                self.fill(len + 2)?;
                let data: Vec<u8> = self.buf.drain(..len + 2).take(len).collect();
                Ok(Reply::Bulk(Some(data)))
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }
}

impl Guest for Redis {
    fn ping() -> Result<String, String> {
        match Conn::open()?.command(&[b"PING"])? {
            Reply::Simple(s) => Ok(s),
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            _ => Err("unexpected reply to PING".into()),
        }
    }

    fn get(key: String) -> Result<Option<String>, String> {
        match Conn::open()?.command(&[b"GET", key.as_bytes()])? {
            Reply::Bulk(None) => Ok(None),
            Reply::Bulk(Some(b)) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| format!("the value of {key:?} is not UTF-8 text")),
            Reply::Simple(s) => Ok(Some(s)),
            Reply::Integer(n) => Ok(Some(n.to_string())),
        }
    }
}

export!(Redis);
