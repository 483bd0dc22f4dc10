//! `fabric serve`: the REST API and MCP over Streamable HTTP, thin adapters
//! over [`Fabric::call`].
//!
//! Read it as mini-redis's server reads:
//!
//! - [`run`]: the accept loop. A semaphore bounds connections; each
//!   connection is one hyper task watched by a graceful-shutdown handle;
//!   the `shutdown` future passed in ends the loop, then open connections
//!   finish their requests (up to the grace period) and the function returns.
//! - [`rest`]: `/v1/tools`, `/v1/tools/{tool}/invoke`, `/healthz`, `/readyz`.
//! - [`mcp`]: `/mcp`, revisions 2025-11-25 (sessions) and 2026-07-28
//!   (stateless), chosen per request.
//! - [`openapi`]: `/openapi.json`, built from the types the handlers return.
//!
//! Every call runs in a task of its own, so a client that goes away mid-call
//! does not cancel it: the call completes and is audited.

pub mod mcp;
pub mod openapi;
pub mod rest;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::admit::Caller;
use crate::call::{Call, CallError, CallResult, Fabric, Outcome};
use crate::callers::CallerFile;
use crate::telemetry::{Answered, ServerSpan, TraceContext};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Largest request head (request line and headers); more is a 431.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request (hyper's default is 100, which a
/// browser behind a few proxies can pass well under [`MAX_HEAD`] bytes).
const MAX_HEADERS: usize = 1024;
/// How long stopped calls get to be audited and answered after the grace
/// period, before their connections are dropped.
const HALT_GRACE: Duration = Duration::from_secs(5);
/// Longest `Fabric-Session` value.
pub(crate) const MAX_SESSION: usize = 256;

/// How the server authenticates requests.
#[derive(Debug)]
pub enum Auth {
    /// Bearer tokens of the callers in this file.
    Callers(CallerFile),
    /// No authentication: every request is the local operator
    /// (`--no-auth`, loopback only).
    None,
}

/// How `fabric serve` behaves.
#[derive(Debug)]
pub struct ServeOptions {
    /// Who may call.
    pub auth: Auth,
    /// Browser origins allowed to reach `/mcp` (besides requests without an
    /// `Origin` header and origins on the server's own host).
    pub allow_origins: Vec<String>,
    /// Largest request body, bytes; a larger one is a 413.
    pub max_body: u64,
    /// How long open connections may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's head, or its body.
    pub client_timeout: Duration,
    /// How long a tool may go without a call before its compiled code's
    /// pages are given back ([`crate::idle`]); `None`: never.
    pub release_idle: Option<Duration>,
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) fabric: Arc<Fabric>,
    auth: Auth,
    allow_origins: Vec<String>,
    pub(crate) max_body: u64,
    pub(crate) client_timeout: Duration,
    pub(crate) draining: AtomicBool,
    pub(crate) sessions: mcp::Sessions,
    local: SocketAddr,
    /// Calls running in tasks of their own ([`AppState::run`]): shutdown
    /// waits for them too, since a client that left no longer holds a
    /// connection open for them.
    calls: TaskTracker,
}

pub(crate) type Shared = Arc<AppState>;

/// Serves `listener` until `shutdown` completes, then lets open connections
/// finish for up to `options.shutdown_grace` and returns.
pub async fn run(
    fabric: Arc<Fabric>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        fabric,
        auth: options.auth,
        allow_origins: options.allow_origins,
        max_body: options.max_body,
        client_timeout: options.client_timeout,
        draining: AtomicBool::new(false),
        sessions: mcp::Sessions::default(),
        local,
        calls: TaskTracker::new(),
    });
    let app = router(state.clone());
    let releasing = options.release_idle.map(|idle| {
        let fabric = state.fabric.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval((idle / 2).max(Duration::from_secs(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let fabric = fabric.clone();
                let released = tokio::task::spawn_blocking(move || fabric.release_idle(idle)).await;
                if let Ok(bytes @ 1..) = released {
                    tracing::debug!(bytes, "idle tools' code pages given back");
                }
            }
        })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.client_timeout)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }

    // Drain: no new connections, readiness off, open ones finish.
    state.draining.store(true, Ordering::SeqCst);
    if let Some(task) = releasing {
        task.abort();
    }
    drop(listener);
    let connections = graceful.shutdown();
    let calls = state.calls.clone();
    calls.close();
    let drained = async move {
        connections.await;
        calls.wait().await;
    };
    tokio::pin!(drained);
    if tokio::time::timeout(options.shutdown_grace, &mut drained)
        .await
        .is_err()
    {
        // Calls still running end as `timeout` and are audited; their
        // connections get those answers, then close.
        let (running, _) = state.fabric.load();
        tracing::warn!(
            running,
            "calls still running after the {:?} grace period: stopping them",
            options.shutdown_grace
        );
        eprintln!(
            "shutting down: {running} calls still running after the {:?} grace period; stopping them",
            options.shutdown_grace
        );
        state.fabric.halt();
        if tokio::time::timeout(HALT_GRACE, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "calls or connections still open after stopping the calls; closing them"
            );
        }
    }
    Ok(())
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/tools", get(rest::list))
        .route("/v1/tools/{tool}/invoke", post(rest::invoke))
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
        .route("/openapi.json", get(openapi::document))
        .route(
            "/mcp",
            post(mcp::post)
                .get(mcp::get)
                .delete(mcp::delete)
                .fallback(mcp::other_method),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such route: see /openapi.json for the API",
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: see /openapi.json",
    )
}

/// A call Fabric could not answer (500 on REST, JSON-RPC `-32603` on MCP).
pub(crate) struct Unanswered {
    /// What went wrong and what to do, for the caller.
    pub(crate) message: String,
}

impl Unanswered {
    /// The REST answer: 500 and an error object.
    pub(crate) fn response(self) -> Response {
        error_response(StatusCode::INTERNAL_SERVER_ERROR, self.message)
    }
}

/// `{"error": {"message": …}}`: the body of an error where no call was formed.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into()}});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl AppState {
    /// The caller a request's headers name.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Caller {
        match &self.auth {
            Auth::None => Caller::Local,
            Auth::Callers(file) => match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
                Some(Err(_)) => Caller::Unauthenticated(
                    "the Authorization header is not ASCII text: a Fabric token is".into(),
                ),
                value => file.caller(value.and_then(Result::ok)),
            },
        }
    }

    /// Runs a call in a task of its own: a client that disconnects does not
    /// cancel it, so it still completes and is audited. `Err` when it could
    /// not be answered (a host fault, or its record could not be written).
    pub(crate) async fn run(&self, call: Call) -> Result<CallResult, Unanswered> {
        let fabric = self.fabric.clone();
        let message = match self
            .calls
            .spawn(async move { fabric.call(call).await })
            .await
        {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err(e @ CallError::HostFault { .. })) => {
                tracing::error!("{e}");
                e.to_string()
            }
            Ok(Err(e @ CallError::Audit(_))) => {
                tracing::error!("{e}");
                format!("{e}; the call was not answered because it could not be recorded")
            }
            Err(e) => format!("the call failed inside Fabric: {e}"),
        };
        Err(Unanswered { message })
    }

    /// The request's `Origin` when it is a foreign one: not this server's
    /// own address and not allowed by `--allow-origin`. `None` when it is
    /// absent (a client that is not a browser) or allowed.
    fn foreign_origin(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN)?;
        let Ok(origin) = origin.to_str() else {
            return Some("(not text)".into());
        };
        if self.allow_origins.iter().any(|o| o == "*" || o == origin) {
            return None;
        }
        // The server's own address, as a browser on this host would send it.
        let port = self.local.port();
        let own = [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
            format!("http://{}", self.local),
        ];
        (!own.iter().any(|o| o == origin)).then(|| origin.to_string())
    }

    /// On a `--no-auth` server, the request's `Host` when it is not this
    /// server's own name (a loopback address or `localhost`, with this
    /// port or none) nor the host of an origin `--allow-origin` allows. A
    /// page that rebinds its name to 127.0.0.1 is same-origin to itself, so
    /// its GETs carry no `Origin`; they still carry its name as `Host`.
    fn foreign_host(&self, headers: &HeaderMap) -> Option<String> {
        if !matches!(self.auth, Auth::None) || self.allow_origins.iter().any(|o| o == "*") {
            return None;
        }
        let host = headers.get(header::HOST)?;
        let Ok(host) = host.to_str() else {
            return Some("(not text)".into());
        };
        let port = self.local.port();
        let own = ["127.0.0.1", "localhost", "[::1]"]
            .into_iter()
            .map(str::to_string)
            .chain(std::iter::once(self.local.ip().to_string()))
            .any(|name| {
                host.eq_ignore_ascii_case(&name)
                    || host.eq_ignore_ascii_case(&format!("{name}:{port}"))
            });
        let allowed = self.allow_origins.iter().any(|o| {
            o.split_once("://")
                .is_some_and(|(_, h)| h.trim_end_matches('/').eq_ignore_ascii_case(host))
        });
        (!own && !allowed).then(|| host.to_string())
    }
}

/// Refuses, on every route, a request that a browser sent from a page of
/// another origin, or (on a `--no-auth` server) for another host name
/// (403): a page whose name an attacker makes resolve to this host (DNS
/// rebinding) must not reach the tools, above all on a `--no-auth` server,
/// where every request is the local operator. `/mcp` answers with a
/// JSON-RPC error, the other routes with an error object.
async fn same_origin(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let message = if let Some(origin) = state.foreign_origin(request.headers()) {
        format!("origin {origin:?} is not allowed; start the server with --allow-origin {origin}")
    } else if let Some(host) = state.foreign_host(request.headers()) {
        format!(
            "host {host:?} is not this server's address: a --no-auth server answers requests for 127.0.0.1, localhost or [::1] only (DNS rebinding); start it with --allow-origin http://{host} to allow that name"
        )
    } else {
        return cors(&state, request, next).await;
    };
    if request.uri().path() == "/mcp" {
        mcp::forbidden(message)
    } else {
        error_response(StatusCode::FORBIDDEN, message)
    }
}

/// Request headers a browser page may send (CORS preflight answer).
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, accept, mcp-protocol-version, mcp-session-id, mcp-method, mcp-name, last-event-id, fabric-session, traceparent, tracestate";
/// Response headers a browser page may read.
const CORS_EXPOSE_HEADERS: &str = "mcp-session-id, retry-after, www-authenticate";
/// How long a browser may cache a preflight answer, in seconds.
const CORS_MAX_AGE: &str = "600";

/// CORS for the origins `--allow-origin` names: a browser's preflight
/// (`OPTIONS` with `Access-Control-Request-Method`) is answered 204 with the
/// methods and headers the API takes, and every other response to such an
/// origin says it may read it (and the `Mcp-Session-Id` and `Retry-After`
/// headers). Requests without an `Origin`, or from the server's own
/// address, pass untouched.
async fn cors(state: &AppState, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.allow_origins.iter().any(|a| a == "*" || a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == axum::http::Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(CORS_MAX_AGE),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// An `--allow-origin` value as browsers send `Origin`: `*`, or
/// `scheme://host[:port]` with scheme and host in lower case and no path
/// (a trailing `/` is dropped).
pub fn normalise_origin(value: &str) -> Result<String, String> {
    if value == "*" {
        return Ok(value.into());
    }
    let trimmed = value.strip_suffix('/').unwrap_or(value);
    let Some((scheme, host)) = trimmed.split_once("://") else {
        return Err(format!(
            "--allow-origin {value:?} is not an origin: write scheme://host[:port], e.g. https://app.example, or *"
        ));
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let host_ok =
        !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ', '*']) && host.is_ascii();
    if !scheme_ok || !host_ok {
        return Err(format!(
            "--allow-origin {value:?} is not an origin: write scheme://host[:port] with no path, e.g. https://app.example, or *"
        ));
    }
    let (scheme, mut host) = (scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
    // A port after the host (not inside an IPv6 literal's brackets).
    if let Some((name, port)) = host
        .rsplit_once(':')
        .filter(|(n, _)| !n.ends_with(':') && (n.starts_with('[') == n.ends_with(']')))
    {
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!("--allow-origin {value:?} has no valid port (1-65535) after the host")
        })?;
        // Browsers leave a scheme's default port out of Origin.
        if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) {
            host = name.to_string();
        }
    }
    Ok(format!("{scheme}://{host}"))
}

/// The HTTP status of a call that ended with `outcome` (the contract's
/// table), shared by every route that answers with a result object.
pub fn status_of(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::InvalidArguments => StatusCode::BAD_REQUEST,
        Outcome::Unauthorized => StatusCode::UNAUTHORIZED,
        Outcome::Forbidden => StatusCode::FORBIDDEN,
        Outcome::UnknownTool => StatusCode::NOT_FOUND,
        Outcome::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
        Outcome::Overloaded | Outcome::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

/// `Retry-After` seconds for a refusal that passes, from its detail (a
/// budget that never resets by itself gives [`crate::budget::SPENT_RETRY`]).
pub(crate) fn retry_after(result: &CallResult) -> Option<u64> {
    let given = result
        .error
        .as_ref()
        .and_then(|e| e.detail.get("retry_after_s"))
        .and_then(Value::as_u64);
    match result.outcome {
        Outcome::BudgetExceeded => given,
        Outcome::Overloaded | Outcome::CircuitOpen => Some(given.unwrap_or(1)),
        _ => None,
    }
}

/// Adds `WWW-Authenticate` or `Retry-After` as the result's outcome asks.
pub(crate) fn outcome_headers(response: &mut Response, result: &CallResult) {
    if result.outcome == Outcome::Unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = retry_after(result) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    // W3C Trace Context Level 2: the trace the call joined and its span.
    let traceresponse = format!(
        "00-{}-{}-{}",
        result.trace.trace_id,
        result.trace.span_id,
        if result.trace.sampled { "01" } else { "00" }
    );
    if let Ok(v) = HeaderValue::from_str(&traceresponse) {
        response.headers_mut().insert("traceresponse", v);
    }
    response.extensions_mut().insert(answered(result));
}

/// What a call's answer tells its server span: the outcome, and the tool
/// when it resolved (a refusal before lookup or an unknown name is not one).
pub(crate) fn answered(result: &CallResult) -> Answered {
    let resolved = !matches!(
        result.outcome,
        Outcome::UnknownTool | Outcome::Unauthorized | Outcome::Forbidden
    );
    Answered {
        outcome: result.outcome.as_str(),
        tool: resolved.then(|| result.tool.clone()),
    }
}

/// Whether the request says its body is JSON (`application/json`, any
/// parameters) and not compressed; `Err` is the 415's message.
pub(crate) fn json_body(headers: &HeaderMap) -> Result<(), String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err("send the body as JSON with Content-Type: application/json".into());
    }
    // A compressed body would be read as garbage JSON, or a body falsely
    // labelled compressed as JSON: neither is taken (RFC 9110, 15.5.16).
    for field in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(codings) = field.to_str() else {
            return Err("Content-Encoding is not text: send the body uncompressed".into());
        };
        if let Some(coding) = codings
            .split(',')
            .map(str::trim)
            .find(|c| !c.eq_ignore_ascii_case("identity"))
        {
            return Err(format!(
                "Content-Encoding {coding:?} is not supported: send the body uncompressed"
            ));
        }
    }
    Ok(())
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// Over `--max-body`; nothing more was read.
    TooLarge(u64),
    /// The client took longer than the client timeout.
    Slow,
    /// The connection failed.
    Broken(String),
}

impl BodyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Slow => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            BodyError::TooLarge(max) => format!(
                "the request body is larger than {max} bytes, the server's limit (--max-body)"
            ),
            BodyError::Slow => "the request body was not received in time".to_string(),
            BodyError::Broken(e) => format!("the request body could not be read: {e}"),
        }
    }
}

/// The whole body, at most `max_body` bytes, within the client timeout. A
/// declared length over the limit is refused before any of it is read.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, BodyError> {
    let max = state.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge(max));
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    match tokio::time::timeout(state.client_timeout, limited.collect()).await {
        Err(_) => Err(BodyError::Slow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}

/// The `Fabric-Session` header, or the 400 message for a malformed one.
pub(crate) fn session_header(headers: &HeaderMap) -> Result<Option<String>, String> {
    match headers.get("fabric-session") {
        None => Ok(None),
        Some(v) => session_id(v.as_bytes(), "the Fabric-Session header").map(Some),
    }
}

/// A session id as given (`what` names where), checked: 1 to
/// [`MAX_SESSION`] visible ASCII characters. Budgets key counters by it.
pub(crate) fn session_id(bytes: &[u8], what: &str) -> Result<String, String> {
    if bytes.is_empty()
        || bytes.len() > MAX_SESSION
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(format!(
            "{what} must be 1-{MAX_SESSION} visible ASCII characters, no spaces"
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The caller's W3C trace context, when it sent a valid one (a malformed
/// `traceparent` is ignored, as the W3C specification says: a new trace
/// starts).
pub(crate) fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let mut parents = headers.get_all("traceparent").iter();
    let traceparent = parents.next()?.to_str().ok()?;
    if parents.next().is_some() {
        // Two parents: which one is meant cannot be told; a new trace starts.
        return None;
    }
    // Several tracestate headers are one list, joined by commas.
    let tracestate: Vec<&str> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let tracestate = (!tracestate.is_empty()).then(|| tracestate.join(","));
    TraceContext::parse(traceparent, tracestate.as_deref())
}

/// Ends a front end's server span with the response's status and, when a
/// call was made, its outcome (which [`outcome_headers`] left in the
/// response's extensions).
pub(crate) fn end_span(span: ServerSpan, response: &Response) {
    span.end(
        response.status().as_u16(),
        response.extensions().get::<Answered>(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(status_of(Outcome::Ok), StatusCode::OK);
        assert_eq!(status_of(Outcome::ToolError), StatusCode::OK);
        assert_eq!(status_of(Outcome::OutputRejected), StatusCode::OK);
        assert_eq!(status_of(Outcome::Timeout), StatusCode::OK);
        assert_eq!(
            status_of(Outcome::InvalidArguments),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(Outcome::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(Outcome::Forbidden), StatusCode::FORBIDDEN);
        assert_eq!(status_of(Outcome::UnknownTool), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(Outcome::BudgetExceeded),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(Outcome::Overloaded),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(Outcome::CircuitOpen),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
