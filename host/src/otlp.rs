//! The OTLP/HTTP span exporter: spans written straight to protobuf bytes
//! when they end ([`write_span`]), batched by the [`crate::spans`] queue,
//! wrapped in an `ExportTraceServiceRequest` (as the OTLP specification's
//! `opentelemetry/proto/collector/trace/v1` defines it) and posted to a
//! collector's `/v1/traces` over one kept-alive HTTP/1.1 connection.
//!
//! Why not `opentelemetry-otlp`: it converts every span into the generated
//! message structs first (a copy of every name, key and value, and a hash
//! map to group spans by scope), then encodes those. Measured with
//! `cargo bench --bench serve -- spans`, that conversion and its blocking
//! HTTP client made exporting a call's seven spans cost four times what
//! building them did. Writing the bytes from the spans directly is a few
//! dozen lines of protobuf's wire format, checked field by field against the
//! generated messages in this module's tests.
//!
//! The exporter runs on the span queue's own thread ([`crate::spans`]), never
//! on a call's path; it owns a single-threaded tokio runtime for its
//! connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;

/// The instrumentation scope every span is exported under.
const SCOPE: &str = "fabric";

/// Where and how to send spans.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's traces URL (`http://localhost:4318/v1/traces`).
    pub endpoint: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// How long one export may take, connecting included.
    pub timeout: Duration,
}

/// Why an exporter could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not a plain `http://host[:port]/path` URL.
    #[error(
        "{0}: not an http:// URL of an OTLP collector (such as http://localhost:4318/v1/traces)"
    )]
    Endpoint(String),
    /// A header name or value cannot be sent.
    #[error("OTLP header {0:?} is not a valid HTTP header")]
    Header(String),
    /// The exporter's runtime could not start.
    #[error("cannot start the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The most of a collector's answer read (an `ExportTraceServiceResponse`
/// is a few bytes; an error page a few KiB).
const MAX_ANSWER: usize = 64 << 10;

/// Sends batches of spans to an OTLP/HTTP collector as protobuf.
#[derive(Debug)]
pub struct OtlpExporter {
    uri: Uri,
    authority: (String, u16),
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// The encoded `Resource` message every batch carries, and its schema.
    resource: Vec<u8>,
    resource_schema: String,
    runtime: tokio::runtime::Runtime,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
    /// Whether the last export failed.
    failing: AtomicBool,
}

impl OtlpExporter {
    /// An exporter for `config` (nothing is connected until the first batch).
    pub fn new(config: &OtlpConfig) -> Result<OtlpExporter, OtlpError> {
        let bad = || OtlpError::Endpoint(config.endpoint.clone());
        let uri: Uri = config.endpoint.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        // `user:password@` would go out in the Host header: refused.
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let header = || OtlpError::Header(name.clone());
            headers.push((
                HeaderName::try_from(name.as_str()).map_err(|_| header())?,
                HeaderValue::try_from(value.as_str()).map_err(|_| header())?,
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(OtlpExporter {
            uri,
            authority: (host, port),
            headers,
            timeout: config.timeout,
            resource: Vec::new(),
            resource_schema: String::new(),
            runtime,
            connection: Mutex::new(None),
            failing: AtomicBool::new(false),
        })
    }

    /// Posts one encoded request, on the kept connection or a new one.
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let body = Bytes::from(body);
        let kept = self.connection.lock().ok().and_then(|mut slot| slot.take());
        let response = match kept {
            Some(mut sender) => {
                // The connection's task runs only while an export does: let
                // it see a close that came in since the last one.
                tokio::task::yield_now().await;
                let sent = match sender.ready().await {
                    Ok(()) => sender.send_request(self.request(body.clone())?).await.ok(),
                    Err(_) => None,
                };
                // None: a kept connection the collector closed while no
                // export ran; the batch goes again on a new one.
                sent.map(|response| (response, sender))
            }
            None => None,
        };
        let (response, sender) = match response {
            Some(sent) => sent,
            None => {
                let mut sender = self.connect().await?;
                let response = sender
                    .send_request(self.request(body)?)
                    .await
                    .map_err(|e| format!("sending to {}: {e}", self.uri))?;
                (response, sender)
            }
        };
        let status = response.status();
        // A collector's answer is small; a larger one is not read whole.
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading {}'s answer: {e}", self.uri))?
            .to_bytes();
        // A connection that failed is dropped above, never kept.
        if let Ok(mut slot) = self.connection.lock() {
            *slot = Some(sender);
        }
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(format!("{} answered {status}: {text}", self.uri))
        }
    }

    /// The POST of `body`, in origin form (`/v1/traces`), as a client sends
    /// to a server that is not a proxy.
    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::post(target)
            .header(http::header::HOST, self.host_header())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let (host, port) = &self.authority;
        let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.uri))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.uri))?;
        // Driven while the runtime runs an export; ends when the sender drops.
        self.runtime.spawn(connection);
        Ok(sender)
    }

    fn host_header(&self) -> String {
        match self.uri.authority() {
            Some(a) => a.as_str().to_string(),
            None => self.authority.0.clone(),
        }
    }

    /// The `ExportTraceServiceRequest` for `spans` (spans as [`write_span`]
    /// wrote them): one resource, one scope (`fabric`, this crate's
    /// version).
    pub fn encode_request(&self, spans: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.resource.len() + spans.len() + 64);
        if spans.is_empty() {
            return out;
        }
        nested(&mut out, 1, |out| {
            nested(out, 1, |out| out.extend_from_slice(&self.resource));
            nested(out, 2, |out| {
                nested(out, 1, |out| {
                    string(out, 1, SCOPE);
                    string(out, 2, env!("CARGO_PKG_VERSION"));
                });
                out.extend_from_slice(spans);
            });
            string(out, 3, &self.resource_schema);
        });
        out
    }

    /// Sends `spans` (as [`write_span`] wrote them) and waits for the
    /// collector's answer (on the span queue's thread). A failure is logged
    /// once when exports start failing and once when they recover, not every
    /// second while a collector is down; the spans are not sent again.
    pub fn export(&self, spans: &[u8]) -> Result<(), String> {
        let body = self.encode_request(spans);
        let sent = if body.is_empty() {
            Ok(())
        } else {
            match self
                .runtime
                .block_on(async { tokio::time::timeout(self.timeout, self.post(body)).await })
            {
                Ok(sent) => sent,
                Err(_) => Err(format!(
                    "{} did not answer within {:?}",
                    self.uri, self.timeout
                )),
            }
        };
        let was_failing = self.failing.swap(sent.is_err(), Ordering::Relaxed);
        match &sent {
            Err(e) if !was_failing => {
                tracing::warn!(error = %e, "spans could not be exported; retrying with the next batch")
            }
            Ok(()) if was_failing => tracing::info!("spans are exported again"),
            _ => {}
        }
        sent
    }

    /// The resource every batch names (service name and version, and what
    /// `OTEL_RESOURCE_ATTRIBUTES` adds).
    pub fn set_resource(&mut self, resource: &Resource) {
        let mut encoded = Vec::new();
        for (k, v) in resource.iter() {
            nested(&mut encoded, 1, |out| {
                string(out, 1, k.as_str());
                nested(out, 2, |out| any_value(out, v));
            });
        }
        self.resource = encoded;
        self.resource_schema = resource.schema_url().unwrap_or_default().to_string();
    }
}

// Protobuf's wire format: a field is a key (its number and wire type) and a
// value; wire type 0 is a varint, 1 eight bytes, 2 a length and that many
// bytes, 5 four bytes. Fields at their default value are left out, as
// proto3 encoders do, except in a oneof, where presence is the value.

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes `varint` writes for `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        key(out, field, LEN);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A message field: `body` writes the message, whose length is then put in
/// front of it (one byte is kept for it; a longer length moves the body up).
fn nested(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        // Room for the longer length: the body moves up.
        let extra = varint_len(len as u64) - 1;
        let end = out.len();
        out.resize(end + extra, 0);
        out.copy_within(at + 1..end, at + 1 + extra);
        let mut prefix = [0u8; 10];
        let mut v = len as u64;
        for b in prefix.iter_mut().take(extra + 1) {
            *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
            v >>= 7;
        }
        out[at..at + extra + 1].copy_from_slice(&prefix[..extra + 1]);
    }
}

/// A `KeyValue` attribute (field 9 of a span) whose value is the `AnyValue`
/// that `value` writes, `value_len` bytes long: the lengths are known, so
/// nothing is written twice or moved.
fn attribute(
    out: &mut Vec<u8>,
    key_text: &str,
    value_len: usize,
    value: impl FnOnce(&mut Vec<u8>),
) {
    let klen = key_text.len();
    let kv_len = 1 + varint_len(klen as u64) + klen + 1 + varint_len(value_len as u64) + value_len;
    out.reserve(kv_len + 6);
    key(out, 9, LEN);
    varint(out, kv_len as u64);
    key(out, 1, LEN);
    varint(out, klen as u64);
    out.extend_from_slice(key_text.as_bytes());
    key(out, 2, LEN);
    varint(out, value_len as u64);
    value(out);
}

/// Nanoseconds since the Unix epoch (0 for a time before it).
pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `Span.flags`: the W3C trace flags, and whether the parent is remote
/// (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`, `..._IS_REMOTE_MASK`).
fn span_flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

/// A span's parent: its span id, and whether it is remote (another
/// process's).
pub type Parent = ([u8; 8], bool);

/// Where a span belongs and when it ran: what every span says besides its
/// name and attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanHead<'a> {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The parent span, if any.
    pub parent: Option<Parent>,
    /// The W3C `tracestate` carried on, as a header value (`""` for none).
    pub trace_state: &'a str,
    /// What kind of span (`SERVER`, `INTERNAL`).
    pub kind: SpanKind,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// When it ended, in nanoseconds since the Unix epoch.
    pub end_unix_ns: u64,
}

/// A span's attributes as they are written.
pub struct Attributes<'o>(&'o mut Vec<u8>);

impl Attributes<'_> {
    /// A string attribute.
    pub fn str(&mut self, key: &str, value: &str) {
        let len = 1 + varint_len(value.len() as u64) + value.len();
        attribute(self.0, key, len, |out| any_text(out, value));
    }

    /// An integer attribute.
    pub fn int(&mut self, key: &str, value: i64) {
        let len = 1 + varint_len(value as u64);
        attribute(self.0, key, len, |out| any_value(out, &Value::I64(value)));
    }

    /// A string-array attribute.
    pub fn strs(&mut self, key: &str, values: &[&str]) {
        nested(self.0, 9, |out| {
            string(out, 1, key);
            nested(out, 2, |out| {
                nested(out, 5, |out| {
                    for v in values {
                        nested(out, 1, |out| any_text(out, v));
                    }
                })
            });
        });
    }

    /// An attribute as the OpenTelemetry API holds one.
    pub fn key_value(&mut self, kv: &KeyValue) {
        key_value(self.0, 9, kv);
    }
}

/// Writes one finished, sampled span to `out` as an entry of
/// `ScopeSpans.spans`: its name is `name`'s parts joined, its status an
/// error with `error`'s description when there is one.
pub fn write_span(
    out: &mut Vec<u8>,
    head: &SpanHead<'_>,
    name: &[&str],
    attributes: impl FnOnce(&mut Attributes<'_>),
    error: Option<&str>,
) {
    nested(out, 2, |out| {
        bytes(out, 1, &head.trace_id);
        bytes(out, 2, &head.span_id);
        string(out, 3, head.trace_state);
        if let Some((parent, _)) = &head.parent {
            bytes(out, 4, parent);
        }
        let len: usize = name.iter().map(|p| p.len()).sum();
        if len > 0 {
            key(out, 5, LEN);
            varint(out, len as u64);
            for part in name {
                out.extend_from_slice(part.as_bytes());
            }
        }
        let kind = match head.kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        };
        uint(out, 6, kind);
        fixed64(out, 7, head.start_unix_ns);
        fixed64(out, 8, head.end_unix_ns);
        attributes(&mut Attributes(out));
        nested(out, 15, |out| {
            if let Some(description) = error {
                string(out, 2, description);
                uint(out, 3, 2);
            }
        });
        let remote = head.parent.is_some_and(|(_, remote)| remote);
        fixed32(out, 16, span_flags(SAMPLED, remote));
    });
}

/// The W3C trace flag of a sampled span: only sampled spans are written.
const SAMPLED: u8 = 1;

fn key_value(out: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    nested(out, field, |out| {
        string(out, 1, kv.key.as_str());
        nested(out, 2, |out| any_value(out, &kv.value));
    });
}

/// An `AnyValue` holding a string (a oneof: written even when empty).
fn any_text(out: &mut Vec<u8>, s: &str) {
    key(out, 1, LEN);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An `AnyValue` (a oneof: its one field is written even when empty).
fn any_value(out: &mut Vec<u8>, value: &Value) {
    use any_text as text;
    fn boolean(out: &mut Vec<u8>, b: bool) {
        key(out, 2, VARINT);
        out.push(u8::from(b));
    }
    fn int(out: &mut Vec<u8>, i: i64) {
        key(out, 3, VARINT);
        varint(out, i as u64);
    }
    fn double(out: &mut Vec<u8>, f: f64) {
        key(out, 4, FIXED64);
        out.extend_from_slice(&f.to_bits().to_le_bytes());
    }
    fn array<T>(out: &mut Vec<u8>, values: &[T], each: impl Fn(&mut Vec<u8>, &T)) {
        nested(out, 5, |out| {
            for v in values {
                nested(out, 1, |out| each(out, v));
            }
        });
    }
    match value {
        Value::Bool(b) => boolean(out, *b),
        Value::I64(i) => int(out, *i),
        Value::F64(f) => double(out, *f),
        Value::String(s) => text(out, s.as_str()),
        Value::Array(Array::Bool(v)) => array(out, v, |o, b| boolean(o, *b)),
        Value::Array(Array::I64(v)) => array(out, v, |o, i| int(o, *i)),
        Value::Array(Array::F64(v)) => array(out, v, |o, f| double(o, *f)),
        Value::Array(Array::String(v)) => array(out, v, |o, s| text(o, s.as_str())),
        // Kinds of value added to the API later have no encoding here yet.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use prost::Message;
    use std::borrow::Cow;

    fn exporter() -> OtlpExporter {
        let mut e = OtlpExporter::new(&OtlpConfig {
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        e.set_resource(
            &Resource::builder_empty()
                .with_attributes([
                    KeyValue::new("service.name", "fabric"),
                    KeyValue::new("service.version", "0.1.0"),
                ])
                .build(),
        );
        e
    }

    /// The `i`th of four test spans: written by [`write_span`] into `out`,
    /// and as the SDK's `SpanData` for the reference conversion.
    fn span(
        out: &mut Vec<u8>,
        name: &'static str,
        i: u64,
        scope: &InstrumentationScope,
    ) -> SpanData {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789 + i);
        let state = if i == 2 { "" } else { "vendor=v1,other=x" };
        let head = SpanHead {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128.to_be_bytes(),
            span_id: (0x00f0_67aa_0ba9_02b7 + i).to_be_bytes(),
            parent: (i > 0).then_some((99u64.to_be_bytes(), i == 1)),
            trace_state: state,
            kind: if i == 0 {
                SpanKind::Server
            } else {
                SpanKind::Internal
            },
            start_unix_ns: nanos(at),
            end_unix_ns: nanos(at + Duration::from_micros(250 * (i + 1))),
        };
        let long = "x".repeat(300);
        let error = (i >= 2).then_some("tool_error");
        // The name in parts, as a call's span has it.
        let parts: &[&str] = if i == 1 {
            &["execute_tool ", "text.echo"]
        } else {
            &[name]
        };
        let given = [
            KeyValue::new("fabric.share", 0.5),
            KeyValue::new("fabric.ok", i.is_multiple_of(2)),
            KeyValue::new("no", false),
            KeyValue::new("ints", Value::Array(Array::I64(vec![-1, 0, 1 << 40]))),
        ];
        write_span(
            out,
            &head,
            parts,
            |a| {
                a.str("gen_ai.tool.name", "text.echo");
                a.int("fabric.fuel_used", 757);
                for kv in &given {
                    a.key_value(kv);
                }
                a.str("empty", "");
                a.int("zero", 0);
                a.strs("fabric.guard.rules", &["a", "b"]);
                a.str("long", &long);
            },
            error,
        );
        let mut attributes = vec![
            KeyValue::new("gen_ai.tool.name", "text.echo"),
            KeyValue::new("fabric.fuel_used", 757),
        ];
        attributes.extend(given);
        attributes.extend([
            KeyValue::new("empty", ""),
            KeyValue::new("zero", 0),
            KeyValue::new(
                "fabric.guard.rules",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
            KeyValue::new("long", long),
        ]);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(head.trace_id),
                SpanId::from_bytes(head.span_id),
                TraceFlags::SAMPLED,
                false,
                if state.is_empty() {
                    TraceState::NONE
                } else {
                    state.parse().unwrap()
                },
            ),
            parent_span_id: head
                .parent
                .map_or(SpanId::INVALID, |(p, _)| SpanId::from_bytes(p)),
            parent_span_is_remote: head.parent.is_some_and(|(_, remote)| remote),
            span_kind: head.kind.clone(),
            name: Cow::Owned(parts.concat()),
            start_time: at,
            end_time: at + Duration::from_micros(250 * (i + 1)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match error {
                None => Status::Unset,
                Some(e) => Status::error(e),
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn encodes_what_the_reference_transform_makes() {
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let mut written = Vec::new();
        let batch: Vec<SpanData> = [
            "POST /v1/tools/{tool}/invoke",
            "execute_tool text.echo",
            "run",
            "guard",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, name)| span(&mut written, name, i as u64, &scope))
        .collect();
        let e = exporter();
        let ours = ExportTraceServiceRequest::decode(e.encode_request(&written).as_slice())
            .expect("our bytes decode as an ExportTraceServiceRequest");
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "fabric"),
                KeyValue::new("service.version", "0.1.0"),
            ])
            .build();
        let mut reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        // A resource's attributes come out of a hash map: compare them in one
        // order.
        let mut ours = ours;
        for r in [&mut ours, &mut reference] {
            for rs in &mut r.resource_spans {
                if let Some(resource) = &mut rs.resource {
                    resource.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
        }
        assert!(
            ours == reference,
            "ours:\n{ours:?}\nreference:\n{reference:?}"
        );
        assert_eq!(ours.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(ours.resource_spans[0].scope_spans[0].spans.len(), 4);
    }

    #[test]
    fn an_empty_batch_sends_nothing_and_lengths_over_127_are_varints() {
        let e = exporter();
        assert!(e.encode_request(&[]).is_empty());
        let mut out = Vec::new();
        nested(&mut out, 1, |o| o.extend_from_slice(&[7; 300]));
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(out.len(), 303);
        assert!(out[3..].iter().all(|b| *b == 7));
        let mut out = vec![9];
        nested(&mut out, 2, |o| o.extend_from_slice(&[5; 20_000]));
        assert_eq!(&out[..5], &[9, 0x12, 0xa0, 0x9c, 0x01]);
        assert_eq!(out.len(), 20_005);
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut written = Vec::new();
            varint(&mut written, v);
            assert_eq!(varint_len(v), written.len(), "{v}");
        }
    }

    /// Answers each request on a connection 200 and then closes it without
    /// a word, as a collector's idle timeout does; counts the requests.
    fn closing_collector() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body's Content-Length bytes.
                let body_at = loop {
                    let n = stream.read(&mut buf).unwrap();
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&seen[..body_at]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                while seen.len() < body_at + len {
                    let n = stream.read(&mut buf).unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .unwrap();
                tx.send(len).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                drop(stream);
            }
        });
        (addr, rx)
    }

    #[test]
    fn a_kept_connection_the_collector_closed_is_replaced_and_the_batch_sent() {
        let (addr, sent) = closing_collector();
        let mut e = OtlpExporter::new(&OtlpConfig {
            endpoint: format!("http://{addr}/v1/traces"),
            headers: vec![],
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        e.set_resource(&Resource::builder_empty().build());
        for i in 0..3 {
            let mut written = Vec::new();
            let scope = InstrumentationScope::builder(SCOPE).build();
            span(&mut written, "run", i, &scope);
            let result = e.export(&written);
            assert!(result.is_ok(), "export {i}: {result:?}");
            assert!(sent.recv_timeout(Duration::from_secs(5)).unwrap() > 0);
            // Past the collector's close, before the next export.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    #[test]
    fn refuses_endpoints_it_cannot_post_to() {
        for bad in [
            "https://c:4318/v1/traces",
            "c:4318",
            "",
            "http://",
            "http://user:pw@c:4318/v1/traces",
        ] {
            let config = OtlpConfig {
                endpoint: bad.into(),
                headers: vec![],
                timeout: Duration::from_secs(1),
            };
            assert!(OtlpExporter::new(&config).is_err(), "{bad}");
        }
        let config = OtlpConfig {
            endpoint: "http://c:4318/v1/traces".into(),
            headers: vec![("bad header".into(), "v".into())],
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            OtlpExporter::new(&config),
            Err(OtlpError::Header(_))
        ));
    }
}
