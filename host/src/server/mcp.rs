//! MCP over Streamable HTTP at `/mcp`, two revisions on one endpoint.
//!
//! The revision is chosen per request, as the 2026-07-28 versioning text
//! says a dual-era server does: `initialize` opens a 2025-11-25 session
//! (`Mcp-Session-Id`, later requests must carry it); a request whose
//! `params._meta` names `io.modelcontextprotocol/protocolVersion` (or whose
//! `MCP-Protocol-Version` header names 2026-07-28) is served statelessly,
//! with its `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers
//! checked against the body (`-32020` HeaderMismatch, HTTP 400).
//!
//! Every response is one JSON object (no SSE streams); `GET /mcp` is 405
//! (no server-initiated stream is offered). Batches are refused: neither
//! revision allows them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use opentelemetry::KeyValue;

use super::{
    answered, end_span, json_body, read_body, session_header, session_id, trace_context, Shared,
    Unanswered,
};
use crate::admit::Caller;
use crate::call::{Call, CallResult, Outcome};
use crate::listing::ToolInfo;
use crate::sandbox::Halt;
use crate::telemetry::{self, TraceContext};

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Handshake revisions served, newest first.
pub const LEGACY: [&str; 2] = ["2025-11-25", "2025-06-18"];
/// Tools per `tools/list` page.
const PAGE: usize = 100;
/// Sessions kept at once; beyond it, the caller holding the most loses the
/// one it used least recently.
const MAX_SESSIONS: usize = 10_000;
/// Sessions one caller keeps at once; beyond it, the caller loses its own
/// least recently used one, so that a caller opening sessions in a loop
/// ends only its own, never another caller's.
const MAX_SESSIONS_PER_CALLER: usize = 1_000;
/// A session unused this long is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(3600);

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SESSION: &str = "fabric.dev/session";
const META_RESULT: &str = "fabric.dev/result";

/// Open 2025-11-25 sessions: id → the caller that opened it.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

struct Session {
    /// The caller's name (`None`: `--no-auth`); another caller's token
    /// cannot use the session.
    caller: Option<String>,
    /// Recorded in audit records instead of the id, which is a secret.
    audit_name: String,
    used: Instant,
}

impl Sessions {
    fn open(&self, caller: &Caller) -> String {
        let id = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let audit_name = format!("mcp-{}", &blake3::hash(id.as_bytes()).to_hex()[..16]);
        let caller = caller.name().map(str::to_string);
        let mut open = self.lock();
        open.retain(|_, s| s.used.elapsed() < SESSION_IDLE);
        let mut held: HashMap<Option<&str>, usize> = HashMap::new();
        for s in open.values() {
            *held.entry(s.caller.as_deref()).or_default() += 1;
        }
        let evict_from = if held.get(&caller.as_deref()) >= Some(&MAX_SESSIONS_PER_CALLER) {
            Some(caller.clone())
        } else if open.len() >= MAX_SESSIONS {
            held.iter()
                .max_by_key(|(_, n)| **n)
                .map(|(who, _)| who.map(str::to_string))
        } else {
            None
        };
        if let Some(from) = evict_from {
            let oldest = open
                .iter()
                .filter(|(_, s)| s.caller == from)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        open.insert(
            id.clone(),
            Session {
                caller,
                audit_name,
                used: Instant::now(),
            },
        );
        id
    }

    /// The session's audit name, if `id` is open for this caller.
    fn touch(&self, id: &str, caller: &Caller) -> Option<String> {
        let mut open = self.lock();
        let session = open.get_mut(id)?;
        if session.caller.as_deref() != caller.name() || session.used.elapsed() >= SESSION_IDLE {
            return None;
        }
        session.used = Instant::now();
        Some(session.audit_name.clone())
    }

    fn close(&self, id: &str, caller: &Caller) -> bool {
        let mut open = self.lock();
        match open.get(id) {
            Some(s) if s.caller.as_deref() == caller.name() => open.remove(id).is_some(),
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A JSON-RPC error response with this HTTP status.
fn rpc_error(status: StatusCode, id: &Value, code: i64, message: impl Into<String>) -> Response {
    rpc_error_data(status, id, code, message, None)
}

fn rpc_error_data(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    let mut error = json!({"code": code, "message": message.into()});
    if let Some(data) = data {
        error["data"] = data;
    }
    let mut body = json!({"jsonrpc": "2.0", "error": error});
    if !id.is_null() {
        body["id"] = id.clone();
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A call Fabric could not answer, as JSON-RPC `-32603` (HTTP 200, as the
/// other errors of a request are, so that every client reads its message).
fn internal_error(id: &Value, e: Unanswered) -> Response {
    rpc_error(StatusCode::OK, id, INTERNAL_ERROR, e.message)
}

fn rpc_result(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// The 403 for a browser origin that is not allowed, as a JSON-RPC error.
pub(crate) fn forbidden(message: String) -> Response {
    rpc_error(
        StatusCode::FORBIDDEN,
        &Value::Null,
        INVALID_REQUEST,
        message,
    )
}

/// `GET /mcp`: no server-initiated stream is offered.
pub(crate) async fn get() -> Response {
    not_allowed("this server offers no server-initiated stream; POST JSON-RPC messages")
}

/// Any other method on `/mcp`.
pub(crate) async fn other_method() -> Response {
    not_allowed("POST JSON-RPC messages to /mcp (DELETE ends a session)")
}

/// A 405 on `/mcp` saying which methods it takes.
fn not_allowed(message: &str) -> Response {
    let mut response = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &Value::Null,
        INVALID_REQUEST,
        message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    response
}

/// `DELETE /mcp`: ends the 2025-11-25 session named by `Mcp-Session-Id`.
pub(crate) async fn delete(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let caller = state.caller(&headers);
    if let Caller::Unauthenticated(why) = &caller {
        return unauthorized(&Value::Null, why);
    }
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "send the Mcp-Session-Id header of the session to end",
        );
    };
    if state.sessions.close(id, &caller) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        session_not_found(&Value::Null)
    }
}

fn unauthorized(id: &Value, why: &str) -> Response {
    rpc_error(
        StatusCode::UNAUTHORIZED,
        id,
        INVALID_REQUEST,
        format!("unauthorized: {why}; send Authorization: Bearer TOKEN with a caller's token"),
    )
}

fn session_not_found(id: &Value) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        INVALID_REQUEST,
        "no such session (it ended or never existed); send initialize to start a new one",
    )
}

/// What one request needs besides its message.
struct Request<'a> {
    state: &'a Shared,
    headers: &'a HeaderMap,
    caller: Caller,
    id: Value,
    method: String,
    params: Map<String, Value>,
}

/// `POST /mcp`: one JSON-RPC message.
pub(crate) async fn post(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    if let Err(message) = json_body(&headers) {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            INVALID_REQUEST,
            message,
        );
    }
    let bytes = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(e) => return rpc_error(e.status(), &Value::Null, INVALID_REQUEST, e.message()),
    };
    let message = match serde_json::from_slice::<crate::schema::UniqueKeys>(&bytes) {
        Ok(v) => v.0,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                PARSE_ERROR,
                format!("parse error: the body is not JSON ({e})"),
            )
        }
    };
    let Value::Object(mut message) = message else {
        let why = if message.is_array() {
            "JSON-RPC batches are not supported by MCP 2025-11-25 or 2026-07-28; send one message per request"
        } else {
            "the body must be one JSON-RPC message object"
        };
        return rpc_error(StatusCode::BAD_REQUEST, &Value::Null, INVALID_REQUEST, why);
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "the message must say \"jsonrpc\": \"2.0\"",
        );
    }
    // No id is a notification; an id must be a string or an integer (MCP
    // forbids null: an answer could not name its request).
    let id = match message.remove("id") {
        None => Value::Null,
        Some(id) if id.is_string() || id.is_i64() || id.is_u64() => id,
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "the id must be a string or an integer (leave it out for a notification)",
            )
        }
    };
    let Some(method) = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        if message.contains_key("result") || message.contains_key("error") {
            // A response to a request this server never sends: accepted.
            return StatusCode::ACCEPTED.into_response();
        }
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &id,
            INVALID_REQUEST,
            "the message has no method",
        );
    };
    let params = match message.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &id,
                INVALID_PARAMS,
                "params must be an object",
            )
        }
    };
    let caller = state.caller(&headers);
    let request = Request {
        state: &state,
        headers: &headers,
        caller,
        id,
        method,
        params,
    };
    if let Caller::Unauthenticated(why) = &request.caller {
        let why = why.clone();
        if request.method == "tools/call" {
            // The refusal is a call like any other: audited.
            let tool = request
                .params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let call = Call::new(request.caller.clone(), tool, Value::Null);
            if let Err(e) = state.run(call).await {
                return internal_error(&request.id, e);
            }
        }
        return unauthorized(&request.id, &why);
    }
    let header_version = header_text(&headers, "mcp-protocol-version");
    let meta_version = request
        .params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .cloned();
    if request.method == "initialize" {
        initialize(&request)
    } else if meta_version.is_some() || header_version.as_deref() == Some(MODERN) {
        modern(request, meta_version, header_version).await
    } else {
        legacy(request, header_version).await
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().map(str::to_string).unwrap_or_default())
}

/// 2025-11-25 `initialize`: opens a session.
fn initialize(request: &Request<'_>) -> Response {
    if request.id.is_null() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            INVALID_REQUEST,
            "initialize is a request: give it an id",
        );
    }
    let asked = request
        .params
        .get("protocolVersion")
        .and_then(Value::as_str);
    let capabilities = request
        .params
        .get("capabilities")
        .is_some_and(Value::is_object);
    let client = request.params.get("clientInfo");
    let named = |key: &str| {
        client
            .and_then(|c| c.get(key))
            .is_some_and(Value::is_string)
    };
    let Some(asked) = asked.filter(|_| capabilities && named("name") && named("version")) else {
        return rpc_error(
            StatusCode::OK,
            &request.id,
            INVALID_PARAMS,
            "initialize needs params.protocolVersion (a string), params.capabilities (an object) \
             and params.clientInfo with a name and a version",
        );
    };
    // Echo a version we serve; otherwise offer the newest handshake revision.
    let version = LEGACY
        .iter()
        .find(|v| **v == asked)
        .copied()
        .unwrap_or(LEGACY[0]);
    let session = request.state.sessions.open(&request.caller);
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    });
    let mut response = rpc_result(&request.id, result);
    if let Ok(value) = HeaderValue::from_str(&session) {
        response.headers_mut().insert("mcp-session-id", value);
    }
    response
}

const INSTRUCTIONS: &str =
    "Fabric runs each tool call in a fresh WebAssembly sandbox. Every result carries \
its audit record under _meta[\"fabric.dev/result\"].";

fn server_info() -> Value {
    json!({"name": "fabric", "version": env!("CARGO_PKG_VERSION")})
}

/// A request of the 2025-11-25 revision: inside a session.
async fn legacy(request: Request<'_>, header_version: Option<String>) -> Response {
    if let Some(v) = header_version.as_deref() {
        if !LEGACY.contains(&v) {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &request.id,
                INVALID_REQUEST,
                format!(
                    "unsupported MCP-Protocol-Version {v:?}; this server speaks {MODERN}, {}",
                    LEGACY.join(", ")
                ),
            );
        }
    }
    let Some(session_id) = request
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &request.id,
            INVALID_REQUEST,
            format!(
                "missing Mcp-Session-Id: send initialize first (2025-11-25), or send \
                 _meta[\"{META_VERSION}\"] = \"{MODERN}\" for the stateless revision"
            ),
        );
    };
    let Some(audit_session) = request.state.sessions.touch(session_id, &request.caller) else {
        return session_not_found(&request.id);
    };
    if request.id.is_null() {
        // notifications/initialized, notifications/cancelled, …
        return StatusCode::ACCEPTED.into_response();
    }
    match request.method.as_str() {
        "ping" => rpc_result(&request.id, json!({})),
        "tools/list" => match list(&request) {
            Ok(result) => rpc_result(&request.id, result),
            Err(message) => rpc_error(StatusCode::OK, &request.id, INVALID_PARAMS, message),
        },
        "tools/call" => call(&request, Some(audit_session), false).await,
        other => rpc_error(
            StatusCode::OK,
            &request.id,
            METHOD_NOT_FOUND,
            format!("method not found: {other:?}; this server offers ping, tools/list, tools/call"),
        ),
    }
}

/// A request of the stateless 2026-07-28 revision.
async fn modern(
    request: Request<'_>,
    meta_version: Option<Value>,
    header_version: Option<String>,
) -> Response {
    let id = &request.id;
    let mismatch =
        |message: String| rpc_error(StatusCode::BAD_REQUEST, id, HEADER_MISMATCH, message);
    let Some(Value::String(version)) = meta_version else {
        return mismatch(format!(
            "Header mismatch: MCP-Protocol-Version says {MODERN} but params._meta[\"{META_VERSION}\"] \
             is missing or not a string"
        ));
    };
    if version != MODERN {
        // Only the per-request revision can be named in `_meta`; the
        // handshake revisions begin with `initialize` instead.
        return rpc_error_data(
            StatusCode::BAD_REQUEST,
            id,
            UNSUPPORTED_VERSION,
            format!(
                "Unsupported protocol version: per-request _meta names {MODERN}; \
                 {} begin with initialize",
                LEGACY.join(" and ")
            ),
            Some(json!({"supported": [MODERN], "requested": version})),
        );
    }
    match header_version.as_deref() {
        Some(v) if v == version => {}
        Some(v) => {
            return mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value {v:?} does not match body value {version:?}"
            ))
        }
        None => return mismatch("Header mismatch: the MCP-Protocol-Version header is missing".into()),
    }
    match header_text(request.headers, "mcp-method") {
        Some(m) if m == request.method => {}
        Some(m) => {
            return mismatch(format!(
                "Header mismatch: Mcp-Method header value {m:?} does not match body value {:?}",
                request.method
            ))
        }
        None => return mismatch("Header mismatch: the Mcp-Method header is missing".into()),
    }
    if request.method == "tools/call" {
        let body_name = request
            .params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match header_text(request.headers, "mcp-name").map(|h| decode_header(&h)) {
            Some(Some(name)) if name == body_name => {}
            Some(Some(name)) => {
                return mismatch(format!(
                    "Header mismatch: Mcp-Name header value {name:?} does not match body value {body_name:?}"
                ))
            }
            Some(None) => {
                return mismatch("Header mismatch: the Mcp-Name header is not valid base64".into())
            }
            None => return mismatch("Header mismatch: the Mcp-Name header is missing".into()),
        }
    }
    if request.id.is_null() {
        return StatusCode::ACCEPTED.into_response();
    }
    // Required of requests (notifications need not say it).
    if !request
        .params
        .get("_meta")
        .and_then(|m| m.get(META_CAPABILITIES))
        .is_some_and(Value::is_object)
    {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_PARAMS,
            format!("params._meta[\"{META_CAPABILITIES}\"] is required (an object) in {MODERN} requests"),
        );
    }

    let complete = |mut result: Value| {
        result["resultType"] = json!("complete");
        let meta = result
            .as_object_mut()
            .map(|o| o.entry("_meta").or_insert_with(|| json!({})));
        if let Some(meta) = meta {
            meta[META_SERVER] = server_info();
        }
        rpc_result(id, result)
    };
    match request.method.as_str() {
        "server/discover" => {
            let mut supported = vec![MODERN];
            supported.extend(LEGACY);
            complete(json!({
                "supportedVersions": supported,
                "capabilities": {"tools": {"listChanged": false}},
                "instructions": INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "public",
            }))
        }
        // Cacheable results: the listing is per caller and changes when the
        // callers file does, so clients re-fetch it.
        "tools/list" => match list(&request) {
            Ok(mut result) => {
                result["ttlMs"] = json!(0);
                result["cacheScope"] = json!("private");
                complete(result)
            }
            Err(message) => rpc_error(StatusCode::OK, id, INVALID_PARAMS, message),
        },
        "tools/call" => call(&request, None, true).await,
        other => rpc_error(
            StatusCode::NOT_FOUND,
            id,
            METHOD_NOT_FOUND,
            format!(
                "method not found: {other:?}; this server offers server/discover, tools/list, tools/call"
            ),
        ),
    }
}

/// A `Mcp-Name` value, decoded from `=?base64?…?=` when so written.
fn decode_header(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        None => Some(value.to_string()),
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
    }
}

/// `tools/list`: the caller's callable tools, a page at a time.
/// The page of tools, or the message of an invalid-params error.
fn list(request: &Request<'_>) -> Result<Value, &'static str> {
    let tools: Vec<ToolInfo> = request
        .state
        .fabric
        .tools(&request.caller)
        .into_iter()
        .filter(|t| t.available)
        .collect();
    let cursor = match request.params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err("cursor must be a string from a previous nextCursor"),
    };
    let (page, next) = paginate(&tools, cursor, PAGE)
        .ok_or("invalid cursor: pass the nextCursor of a previous tools/list, or none")?;
    let mut result = json!({"tools": page.iter().map(mcp_tool).collect::<Vec<_>>()});
    if let Some(next) = next {
        result["nextCursor"] = json!(next);
    }
    Ok(result)
}

/// The page of `tools` (sorted by name) after `cursor` (the last name of
/// the previous page, base64url) and the cursor of the page after it.
/// `None`: the cursor is not one of ours.
fn paginate<'t>(
    tools: &'t [ToolInfo],
    cursor: Option<&str>,
    size: usize,
) -> Option<(&'t [ToolInfo], Option<String>)> {
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = match cursor {
        None => 0,
        Some(c) => {
            let after = String::from_utf8(b64.decode(c).ok()?).ok()?;
            tools.partition_point(|t| t.name.as_str() <= after.as_str())
        }
    };
    let end = (start + size).min(tools.len());
    let page = &tools[start..end];
    let next = (end < tools.len())
        .then(|| page.last().map(|t| b64.encode(t.name.as_bytes())))
        .flatten();
    Some((page, next))
}

/// One tool as MCP lists it.
fn mcp_tool(tool: &ToolInfo) -> Value {
    let mut entry = json!({
        "name": tool.name,
        "inputSchema": tool.input_schema,
        "outputSchema": object_schema(&tool.output_schema),
        "annotations": {
            "readOnlyHint": !tool.grants.writes,
            "openWorldHint": tool.grants.network,
        },
    });
    if let Some(d) = &tool.description {
        entry["description"] = json!(d);
    }
    entry
}

/// MCP wants object schemas: a non-object output schema is wrapped as
/// `{"result": …}`.
pub fn object_schema(schema: &Value) -> Value {
    if schema.get("type").and_then(Value::as_str) == Some("object") {
        return schema.clone();
    }
    let mut inner = schema.clone();
    let dialect = inner
        .as_object_mut()
        .and_then(|o| o.remove("$schema"))
        .unwrap_or_else(|| json!("https://json-schema.org/draft/2020-12/schema"));
    json!({
        "$schema": dialect,
        "type": "object",
        "properties": {"result": inner},
        "required": ["result"],
        "additionalProperties": false,
    })
}

/// The structured output, wrapped as its schema is.
pub fn structured(schema: &Value, output: Value) -> Value {
    if schema.get("type").and_then(Value::as_str) == Some("object") {
        output
    } else {
        json!({"result": output})
    }
}

/// A JSON-RPC id as a span attribute: a string as is, a number as its
/// text, at most 128 bytes.
fn request_id(id: &Value) -> String {
    let text = match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut end = text.len().min(128);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// `tools/call`: runs the call in a SERVER span (`tools/call NAME`, as
/// OpenTelemetry's MCP conventions name it) that continues the trace context
/// in `params._meta` (`traceparent`, `tracestate`), or else the HTTP
/// request's, and answers with a `CallToolResult`.
async fn call(request: &Request<'_>, mcp_session: Option<String>, modern: bool) -> Response {
    let parent = request
        .params
        .get("_meta")
        .and_then(telemetry::from_meta)
        .or_else(|| trace_context(request.headers));
    let mut attributes = vec![
        KeyValue::new("mcp.method.name", "tools/call"),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("jsonrpc.request.id", request_id(&request.id)),
    ];
    if let Some(session) = &mcp_session {
        attributes.push(KeyValue::new("mcp.session.id", session.clone()));
    }
    let span =
        request
            .state
            .fabric
            .telemetry()
            .start_server("tools/call", parent, attributes, true);
    let response = call_in(request, mcp_session, modern, span.context()).await;
    end_span(span, &response);
    response
}

async fn call_in(
    request: &Request<'_>,
    mcp_session: Option<String>,
    modern: bool,
    trace: Option<TraceContext>,
) -> Response {
    let id = &request.id;
    let Some(name) = request.params.get("name").and_then(Value::as_str) else {
        return rpc_error(
            StatusCode::OK,
            id,
            INVALID_PARAMS,
            "tools/call needs params.name, the tool's name",
        );
    };
    // Arguments that are not an object break the request's schema: a
    // protocol error (-32602), after the call refuses them as
    // `invalid_arguments` so that the refusal is audited like any call.
    let arguments = match request.params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a) => a.clone(),
    };
    let malformed = !arguments.is_object();
    let meta_session = match request
        .params
        .get("_meta")
        .and_then(|m| m.get(META_SESSION))
    {
        None => None,
        Some(Value::String(s)) => match session_id(s.as_bytes(), "_meta[\"fabric.dev/session\"]") {
            Ok(s) => Some(s),
            Err(message) => return rpc_error(StatusCode::OK, id, INVALID_PARAMS, message),
        },
        Some(_) => {
            return rpc_error(
                StatusCode::OK,
                id,
                INVALID_PARAMS,
                "_meta[\"fabric.dev/session\"] must be a string",
            )
        }
    };
    let header_session = match session_header(request.headers) {
        Ok(s) => s,
        Err(message) => return rpc_error(StatusCode::BAD_REQUEST, id, INVALID_REQUEST, message),
    };
    let mut call = Call::new(request.caller.clone(), name, arguments);
    if let Some(session) = mcp_session.or(meta_session).or(header_session) {
        call = call.in_session(session);
    }
    if let Some(trace) = trace {
        call = call.with_trace(trace);
    }
    // 2026-07-28: "The server MUST treat a client disconnect as
    // cancellation of that request." hyper drops this future when the
    // connection closes; the guard then stops the call, which still ends
    // (as `timeout`, saying so) and is audited in its own task. The
    // 2025-11-25 revision's clients cancel with a notification instead.
    let cancel = modern.then(|| Arc::new(Halt::default()));
    if let Some(cancel) = &cancel {
        call = call.cancelled_by(cancel.clone());
    }
    let mut armed = CancelOnDrop(cancel);
    let result = request.state.run(call).await;
    // Answered: nothing left to cancel.
    armed.0 = None;
    let result = match result {
        Ok(r) => r,
        Err(e) => return internal_error(id, e),
    };
    if result.outcome == Outcome::UnknownTool
        || (malformed && result.outcome == Outcome::InvalidArguments)
    {
        // A protocol error in MCP; the audit proof still travels.
        let what = match result.outcome {
            Outcome::UnknownTool => "Unknown tool",
            _ => "Invalid params",
        };
        let message = result
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let answered = answered(&result);
        let mut response = rpc_error_data(
            StatusCode::OK,
            id,
            INVALID_PARAMS,
            format!("{what}: {message}"),
            Some(json!({META_RESULT: result})),
        );
        response.extensions_mut().insert(answered);
        return response;
    }
    let schema = request
        .state
        .fabric
        .tool(&request.caller, name)
        .map(|t| t.output_schema)
        .unwrap_or(Value::Null);
    let answered = answered(&result);
    let mut body = tool_result(&schema, result);
    if modern {
        body["resultType"] = json!("complete");
        body["_meta"][META_SERVER] = server_info();
    }
    let mut response = rpc_result(id, body);
    response.extensions_mut().insert(answered);
    response
}

/// A `CallToolResult` from a Fabric result.
fn tool_result(schema: &Value, result: CallResult) -> Value {
    let ok = result.outcome == Outcome::Ok;
    let mut body = if ok {
        // Spotlighted when the policy asks for it (the mode is in the result).
        let text = match &result.guard.spotlight {
            Some(marked) => marked.text.clone(),
            None => serde_json::to_string(&result.output).unwrap_or_default(),
        };
        json!({
            "content": [{"type": "text", "text": text}],
            "structuredContent": structured(schema, result.output.clone()),
            "isError": false,
        })
    } else {
        let (message, detail) = result
            .error
            .as_ref()
            .map(|e| (e.message.as_str(), &e.detail))
            .unwrap_or(("", &Value::Null));
        // The tool's own text (its error value, or its panic message) only
        // marked, when the policy asks for it.
        let (message, detail) = match &result.guard.spotlight {
            Some(marked) => (marked.text.as_str(), &Value::Null),
            None => (message, detail),
        };
        let mut content = vec![json!({
            "type": "text",
            "text": format!("{}: {message}", result.outcome.as_str()),
        })];
        if !detail.is_null() {
            content.push(json!({
                "type": "text",
                "text": serde_json::to_string(detail).unwrap_or_default(),
            }));
        }
        json!({"content": content, "isError": true})
    };
    body["_meta"] = json!({META_RESULT: result});
    body
}

/// Halts a call when dropped while still armed: the request's future was
/// dropped before the answer (its client disconnected).
struct CancelOnDrop(Option<Arc<Halt>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.halt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::Grants;

    fn tool(name: &str) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            description: None,
            input_schema: json!({"type": "object"}),
            output_schema: json!({"type": "string"}),
            available: true,
            reason: None,
            grants: Grants::default(),
            params: Vec::new(),
        }
    }

    #[test]
    fn pages_of_a_sorted_list_cover_every_tool_once() {
        // Two pages and a bit; `a-b.f` before `a.f` by name.
        let mut tools: Vec<ToolInfo> = (0..150)
            .map(|i| tool(&format!("a.f{i:03}")))
            .chain((0..60).map(|i| tool(&format!("a-b.f{i:03}"))))
            .collect();
        // As `Fabric::tools` hands them over.
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let (page, next) = paginate(&tools, cursor.as_deref(), PAGE).unwrap();
            seen.extend(page.iter().map(|t| t.name.clone()));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 210);
        seen.dedup();
        assert_eq!(seen.len(), 210);
    }

    #[test]
    fn pages_follow_cursors() {
        let tools: Vec<ToolInfo> = ["a.x", "b.y", "c.z", "d.w", "e.v"].map(tool).to_vec();
        let (page, next) = paginate(&tools, None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let (page, next) = paginate(&tools, next.as_deref(), 2).unwrap();
        assert_eq!(page[0].name, "c.z");
        let (page, next) = paginate(&tools, next.as_deref(), 2).unwrap();
        assert_eq!(page.len(), 1);
        assert!(next.is_none());
        assert!(paginate(&tools, Some("!!not base64"), 2).is_none());
    }

    #[test]
    fn non_object_outputs_are_wrapped() {
        let schema = json!({"$schema": "x", "type": "string"});
        let wrapped = object_schema(&schema);
        assert_eq!(wrapped["type"], "object");
        assert_eq!(wrapped["properties"]["result"], json!({"type": "string"}));
        assert_eq!(wrapped["$schema"], "x");
        assert_eq!(structured(&schema, json!("hi")), json!({"result": "hi"}));
        let object = json!({"type": "object", "properties": {}});
        assert_eq!(object_schema(&object), object);
        assert_eq!(structured(&object, json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn a_caller_opening_sessions_in_a_loop_ends_only_its_own() {
        let sessions = Sessions::default();
        let alice = Caller::named("alice", crate::admit::Scope::all());
        let dave = Caller::named("dave", crate::admit::Scope::new(["types.*"]));
        let kept = sessions.open(&alice);
        let first = sessions.open(&dave);
        for _ in 0..MAX_SESSIONS_PER_CALLER {
            sessions.open(&dave);
        }
        assert!(
            sessions.touch(&kept, &alice).is_some(),
            "alice's session was evicted"
        );
        assert!(
            sessions.touch(&first, &dave).is_none(),
            "dave kept more than its share"
        );
        let dave_holds = sessions
            .lock()
            .values()
            .filter(|s| s.caller.as_deref() == Some("dave"))
            .count();
        assert_eq!(dave_holds, MAX_SESSIONS_PER_CALLER);
        // With every caller under its share, the fullest loses one when the
        // table is full: here, 9 more callers at their share fill it.
        for i in 0..(MAX_SESSIONS / MAX_SESSIONS_PER_CALLER - 1) {
            let other = Caller::named(format!("c{i}"), crate::admit::Scope::all());
            for _ in 0..MAX_SESSIONS_PER_CALLER - usize::from(i == 0) {
                sessions.open(&other);
            }
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        sessions.open(&alice);
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert!(sessions.touch(&kept, &alice).is_some());
    }

    #[test]
    fn mcp_name_sentinel_decodes() {
        assert_eq!(decode_header("text.echo").as_deref(), Some("text.echo"));
        assert_eq!(
            decode_header("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_header("=?base64?***?="), None);
    }
}
