//! The REST API: list tools, invoke one, health and readiness.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use opentelemetry::KeyValue;

use super::{
    end_span, error_response, json_body, outcome_headers, read_body, session_header, status_of,
    trace_context, Shared,
};
use crate::admit::Caller;
use crate::breaker::CircuitState;
use crate::call::Call;
use crate::telemetry::TraceContext;

/// The body of `POST /v1/tools/{tool}/invoke`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// The arguments object; its keys are the tool's parameter names. Read
    /// as any JSON value, so that arguments that are not an object are the
    /// call's to refuse (`invalid_arguments`, audited, as the CLI's are).
    /// A key given twice in one object is refused (400).
    #[schemars(with = "Map<String, Value>")]
    pub arguments: crate::schema::UniqueKeys,
}

/// An error where no call was formed (bad JSON, wrong content type, body too
/// large, no route).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorMessage,
}

/// The message of an [`ErrorResponse`].
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorMessage {
    /// One line saying what is wrong and what to do.
    pub message: String,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`, `ready` or `draining`.
    pub status: String,
    /// Tools loaded (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<usize>,
    /// What failed to load (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    /// Tools whose circuit breaker is open or half-open (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuits: Option<Vec<CircuitState>>,
    /// Calls running and waiting for a slot (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
}

/// Calls running and queued, in `/readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Load {
    /// Calls running.
    pub in_flight: usize,
    /// Calls waiting for a slot.
    pub queued: usize,
}

/// `GET /v1/tools`: the caller's tools.
pub(crate) async fn list(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let caller = state.caller(&headers);
    if let Caller::Unauthenticated(why) = &caller {
        return error_response(
            StatusCode::UNAUTHORIZED,
            format!("{why}; send Authorization: Bearer TOKEN with a caller's token"),
        );
    }
    Json(state.fabric.tools(&caller)).into_response()
}

/// `POST /v1/tools/{tool}/invoke`, in a SERVER span continuing the
/// caller's `traceparent`.
pub(crate) async fn invoke(
    State(state): State<Shared>,
    tool: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A name that is not UTF-8 once percent-decoded names no tool; the
    // answer is an error object like every other.
    let Ok(Path(tool)) = tool else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the tool name in the path is not UTF-8 once percent-decoded; name a tool from GET /v1/tools",
        );
    };
    let span = state.fabric.telemetry().start_server(
        "POST /v1/tools/{tool}/invoke",
        trace_context(&headers),
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/v1/tools/{tool}/invoke"),
            KeyValue::new("url.scheme", "http"),
        ],
        false,
    );
    let response = invoke_in(state, tool, headers, body, span.context()).await;
    end_span(span, &response);
    response
}

async fn invoke_in(
    state: Shared,
    tool: String,
    headers: HeaderMap,
    body: Body,
    trace: Option<TraceContext>,
) -> Response {
    let caller = state.caller(&headers);
    // A stranger's malformed session header does not spare it the audited
    // 401: the header is judged only for a caller that authenticated.
    let session = match session_header(&headers) {
        Ok(s) => s,
        Err(_) if matches!(caller, Caller::Unauthenticated(_)) => None,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let with_context = |call: Call| {
        let call = match &session {
            Some(s) => call.in_session(s.clone()),
            None => call,
        };
        match &trace {
            Some(t) => call.with_trace(t.clone()),
            None => call,
        }
    };
    // A stranger's body is not read: the refusal is audited without it.
    if let Caller::Unauthenticated(_) = caller {
        return answer(&state, with_context(Call::new(caller, tool, Value::Null))).await;
    }
    if let Err(message) = json_body(&headers) {
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let bytes = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(e) => return error_response(e.status(), e.message()),
    };
    let request: InvokeRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a valid invoke request ({e}); send {{\"arguments\": {{…}}}}"
                ),
            )
        }
    };
    let call = Call::new(caller, tool, request.arguments.0);
    answer(&state, with_context(call)).await
}

/// Runs the call and answers with its result object and status.
async fn answer(state: &Shared, call: Call) -> Response {
    match state.run(call).await {
        Ok(result) => {
            let mut response = (status_of(result.outcome), Json(&result)).into_response();
            outcome_headers(&mut response, &result);
            response
        }
        Err(unanswered) => unanswered.response(),
    }
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        tools: None,
        problems: None,
        circuits: None,
        load: None,
    })
}

/// `GET /readyz`: tools loaded and not draining (503 otherwise).
pub(crate) async fn readyz(State(state): State<Shared>) -> Response {
    let tools = state.fabric.tools(&Caller::Local);
    let available = tools.iter().filter(|t| t.available).count();
    let draining = state.draining.load(Ordering::SeqCst);
    let health = Health {
        status: if draining { "draining" } else { "ready" }.into(),
        tools: Some(available),
        problems: Some(
            state
                .fabric
                .problems()
                .iter()
                .map(|p| p.to_string())
                .collect(),
        ),
        circuits: Some(state.fabric.open_circuits()),
        load: Some({
            let (in_flight, queued) = state.fabric.load();
            Load { in_flight, queued }
        }),
    };
    let status = if draining || available == 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

/// `GET /metrics`: the Prometheus text exposition of every call so far and
/// of the admission state now.
pub(crate) async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.fabric.metrics(),
    )
        .into_response()
}
