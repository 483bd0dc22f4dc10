//! Outgoing HTTP through `wasi:http/outgoing-handler`.
//!
//! Blocking and deliberately small: one request, the whole response read up
//! to a byte limit. The host enforces the tool's `[net] allow` list; a host
//! that is not on it fails with [`Error`] naming the refusal.

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// An HTTP response read into memory.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names and values as received (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// The first `max_body` bytes of the body.
    pub body: Vec<u8>,
    /// True when the body was longer than `max_body` and was cut.
    pub truncated: bool,
}

/// Why a request failed, as a message fit to hand back to the agent.
pub type Error = String;

/// A URL split into the parts a wasi:http request needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Path and query, `/` when the URL has none.
    pub path_and_query: &'a str,
}

/// Splits an absolute `http://` or `https://` URL; the fragment is dropped.
pub fn parse_url(url: &str) -> Result<Url<'_>, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute URL: {url:?} (expected http://host/path)"))?;
    let scheme_ok = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if !scheme_ok {
        return Err(format!(
            "unsupported scheme {scheme:?}: only http and https"
        ));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("bad host in URL {url:?}"));
    }
    let path_and_query = if path.is_empty() { "/" } else { path };
    Ok(Url {
        scheme,
        authority,
        path_and_query,
    })
}

/// Sends a GET request and reads at most `max_body` bytes of the body.
pub fn get(url: &str, max_body: usize) -> Result<Response, Error> {
    let url = parse_url(url)?;
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if url.scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let set = request
        .set_method(&Method::Get)
        .and(request.set_scheme(Some(&scheme)))
        .and(request.set_authority(Some(url.authority)))
        .and(request.set_path_with_query(Some(url.path_and_query)));
    set.map_err(|()| "the request could not be built from this URL".to_string())?;

    let pending =
        outgoing_handler::handle(request, None).map_err(|e| format!("request refused: {e:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("request failed: {code:?}")),
        Some(Err(())) | None => return Err("request failed: no response".to_string()),
    };

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = response
        .consume()
        .map_err(|()| "response body unavailable".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "response body unavailable".to_string())?;
    let mut bytes = Vec::new();
    let mut truncated = false;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                let room = max_body - bytes.len();
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body failed: {}", e.to_debug_string()))
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body: bytes,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let u = parse_url("http://127.0.0.1:8080/a/b?x=1#frag").unwrap();
        assert_eq!(
            u,
            Url {
                scheme: "http",
                authority: "127.0.0.1:8080",
                path_and_query: "/a/b?x=1"
            }
        );
        assert_eq!(
            parse_url("https://example.com").unwrap().path_and_query,
            "/"
        );
        assert_eq!(
            parse_url("https://example.com?q").unwrap().path_and_query,
            "?q"
        );
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("example.com/").is_err());
        assert!(parse_url("http://user@evil/").is_err());
    }
}
