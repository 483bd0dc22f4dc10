//! `GET /openapi.json`: OpenAPI 3.1 of what the server does. The component
//! schemas are generated (schemars) from the very types the handlers
//! serialize and parse; each tool the caller may call gets a path of its own
//! with its input schema as the request and its output schema in the result.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::rest::{ErrorResponse, Health, InvokeRequest};
use super::Shared;
use crate::admit::Caller;
use crate::call::CallResult;
use crate::listing::ToolInfo;

/// Statuses an invocation can answer with besides 200, and what they mean.
const INVOKE_ERRORS: [(&str, &str, bool); 10] = [
    ("400", "bad JSON or invalid_arguments", true),
    ("401", "unauthorized: no or unknown bearer token", true),
    (
        "403",
        "forbidden: the tool is outside the caller's scope",
        true,
    ),
    ("404", "unknown_tool", true),
    ("408", "the body was not received in time", false),
    ("413", "the body is larger than --max-body", false),
    ("415", "the body is not application/json", false),
    ("429", "budget_exceeded (Retry-After)", true),
    ("503", "overloaded or circuit_open (Retry-After)", true),
    ("500", "Fabric could not record the call", false),
];

/// `GET /openapi.json`.
pub(crate) async fn document(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let caller = state.caller(&headers);
    let tools = match caller {
        Caller::Unauthenticated(_) => Vec::new(),
        _ => state.fabric.tools(&caller),
    };
    Json(build(&tools)).into_response()
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The document for a caller who may call `tools`.
pub fn build(tools: &[ToolInfo]) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let call_result = schema_of::<CallResult>(&mut generator);
    let error = schema_of::<ErrorResponse>(&mut generator);
    let invoke = schema_of::<InvokeRequest>(&mut generator);
    let health = schema_of::<Health>(&mut generator);
    let listing = schema_of::<Vec<ToolInfo>>(&mut generator);
    let schemas = generator.take_definitions(true);

    let json_body = |schema: Value| json!({"content": {"application/json": {"schema": schema}}});
    let respond = |description: &str, schema: Value| {
        let mut r = json_body(schema);
        r["description"] = json!(description);
        r
    };
    let invoke_responses = |ok: Value| {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            respond("the call ran; `outcome` says how it ended", ok),
        );
        for (status, why, result) in INVOKE_ERRORS {
            let schema = if result {
                json!({"anyOf": [call_result, error]})
            } else {
                error.clone()
            };
            let mut r = respond(why, schema);
            if matches!(status, "429" | "503") {
                r["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}});
            }
            responses.insert(status.into(), r);
        }
        Value::Object(responses)
    };
    let session_header = json!({
        "name": "Fabric-Session", "in": "header", "required": false,
        "description": "groups calls into an agent session (budgets, audit, traces)",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]+$", "maxLength": super::MAX_SESSION},
    });

    let mut paths = Map::new();
    paths.insert(
        "/v1/tools".into(),
        json!({"get": {
            "operationId": "listTools",
            "summary": "The caller's tools, with descriptions and JSON Schemas",
            "responses": {
                "200": respond("the tools", listing),
                "401": respond("unauthorized", error.clone()),
            },
        }}),
    );
    paths.insert(
        "/v1/tools/{tool}/invoke".into(),
        json!({"post": {
            "operationId": "invokeTool",
            "summary": "Run one call through the whole pipeline",
            "parameters": [
                {"name": "tool", "in": "path", "required": true, "schema": {"type": "string"}},
                session_header,
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": invoke}}},
            "responses": invoke_responses(call_result.clone()),
        }}),
    );
    for tool in tools.iter().filter(|t| t.available) {
        let mut input = tool.input_schema.clone();
        let mut output = tool.output_schema.clone();
        for schema in [&mut input, &mut output] {
            if let Some(o) = schema.as_object_mut() {
                o.remove("$schema");
            }
        }
        let request = json!({
            "type": "object",
            "properties": {"arguments": input},
            "required": ["arguments"],
            "additionalProperties": false,
        });
        let ok = json!({"allOf": [call_result, {
            "type": "object",
            "properties": {"output": {"anyOf": [output, {"type": "null"}]}},
        }]});
        let mut operation = json!({
            "operationId": format!("invoke:{}", tool.name),
            "summary": format!("Call {}", tool.name),
            "parameters": [session_header],
            "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
            "responses": invoke_responses(ok),
        });
        if let Some(d) = &tool.description {
            operation["description"] = json!(d);
        }
        paths.insert(
            format!("/v1/tools/{}/invoke", tool.name),
            json!({"post": operation}),
        );
    }
    paths.insert(
        "/healthz".into(),
        json!({"get": {
            "operationId": "health",
            "security": [],
            "responses": {"200": respond("alive", health.clone())},
        }}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {
            "operationId": "ready",
            "security": [],
            "responses": {
                "200": respond("tools loaded, not draining", health.clone()),
                "503": respond("no tools loaded, or draining", health),
            },
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {
            "operationId": "metrics",
            "security": [],
            "responses": {"200": {
                "description": "Prometheus text exposition (version 0.0.4): calls by tool, caller and outcome, latencies, load",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }},
        }}),
    );
    paths.insert("/openapi.json".into(), json!({"get": {
        "operationId": "openapi",
        "security": [],
        "responses": {"200": {"description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}));

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Fabric",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tool calls for AI agents, each in a fresh WebAssembly sandbox. \
                            MCP (Streamable HTTP) is served at /mcp.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}
