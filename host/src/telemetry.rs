//! Traces: W3C trace context in, OpenTelemetry spans out.
//!
//! Every call has a trace id and a span id, whether or not anything is
//! exported: they continue the caller's `traceparent` (or start a trace),
//! go into the call's audit record and its result, and into its log lines.
//! When an exporter is configured ([`Telemetry::new`] with a tracer), each
//! call also becomes spans, following the OpenTelemetry semantic conventions
//! for generative AI:
//!
//! ```text
//!  POST /v1/tools/{tool}/invoke | tools/call NAME     SERVER   server.rs
//!   └ execute_tool NAME                                 INTERNAL call.rs
//!      ├ validate ├ instantiate ├ run ├ guard ├ audit
//! ```
//!
//! (admission, queueing, linking and settling budgets are attributes of
//! `execute_tool`: `fabric.admit_us`, `fabric.queue_us`, `fabric.link_us`,
//! `fabric.settle_us`).
//!
//! The stage spans are built when the call ends, from the times the pipeline
//! measured anyway, so tracing adds nothing to a stage's own work. Spans
//! carry names, ids, outcomes and costs; never arguments, outputs, error
//! text from the tool, or `[env] pass` values.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

/// The caller's (or the enclosing server span's) W3C trace context: the
/// parent of a call's `execute_tool` span.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceContext(SpanContext);

impl TraceContext {
    /// Parses `traceparent` (and `tracestate`) as the W3C Trace Context
    /// specification (level 1, section 3.2) says; `None` for a missing or malformed header, which
    /// the specification says to ignore (a new trace starts).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let tp = traceparent.trim();
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let mut parts = tp.splitn(5, '-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        // Version 00 has exactly four fields; a later version may add more
        // after a dash, and is read as 00. Version ff is invalid.
        if version.len() != 2 || !hex(version) || version == "ff" {
            return None;
        }
        if (version == "00" && rest.is_some())
            || trace.len() != 32
            || parent.len() != 16
            || flags.len() != 2
            || !(hex(trace) && hex(parent) && hex(flags))
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(parent).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1;
        // A tracestate that does not parse is dropped, not the trace.
        let state = tracestate.and_then(trace_state).unwrap_or_default();
        Some(TraceContext(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(sampled),
            true,
            state,
        )))
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }

    /// The parent span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        self.0.span_id().to_string()
    }

    /// Whether the caller sampled its span.
    pub fn sampled(&self) -> bool {
        self.0.is_sampled()
    }

    /// The `traceparent` value naming this context.
    pub fn traceparent(&self) -> String {
        traceparent(&self.0)
    }

    fn context(&self) -> Context {
        Context::new().with_remote_span_context(self.0.clone())
    }
}

/// Most `tracestate` list members (W3C Trace Context: 32).
const MAX_STATE_MEMBERS: usize = 32;
/// Longest `tracestate` read at all: 32 members of the longest key and value.
const MAX_STATE_BYTES: usize = 32 * (256 + 1 + 256 + 1);

/// Parses a `tracestate` list as W3C Trace Context says: members separated
/// by commas with optional spaces or tabs around them, empty members
/// skipped, at most 32 members, keys unique. `None` (the header is dropped,
/// not the trace) for anything else.
fn trace_state(text: &str) -> Option<TraceState> {
    if text.len() > MAX_STATE_BYTES {
        return None;
    }
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in text.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if members.len() == MAX_STATE_MEMBERS || members.iter().any(|(k, _)| *k == key) {
            return None;
        }
        members.push((key, value));
    }
    TraceState::from_key_value(members).ok()
}

/// A `traceparent` header value for a span context.
fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The ids a call is known by in traces, its audit record and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The call's `execute_tool` span.
    pub span_id: [u8; 8],
    /// Whether the span is sampled (exported).
    pub sampled: bool,
}

impl TraceIds {
    /// The trace id, 32 lower-case hex digits.
    pub fn trace_hex(&self) -> String {
        TraceId::from_bytes(self.trace_id).to_string()
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_hex(&self) -> String {
        SpanId::from_bytes(self.span_id).to_string()
    }

    /// A `traceparent` header value naming the call's span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_hex(),
            self.span_hex(),
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Where spans go: nowhere (the default), or an OpenTelemetry tracer whose
/// provider batches them to an exporter off the call path.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracer>,
}

impl Telemetry {
    /// Spans through `tracer` (its provider's sampler, processor and
    /// exporter decide what is kept and where it goes).
    pub fn new(tracer: SdkTracer) -> Telemetry {
        Telemetry {
            tracer: Some(tracer),
        }
    }

    /// Whether spans are built at all.
    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts a call's `execute_tool` span under `parent` (named for its
    /// tool when it ends, once the tool resolved). Without a tracer, only ids
    /// are made: the parent's trace (or a new one) and a fresh span id.
    pub(crate) fn start_call(&self, parent: Option<&TraceContext>) -> CallSpan {
        let Some(tracer) = &self.tracer else {
            let trace_id = match parent {
                Some(p) => p.0.trace_id().to_bytes(),
                None => nonzero(rand::random),
            };
            return CallSpan {
                ids: TraceIds {
                    trace_id,
                    span_id: nonzero(rand::random),
                    sampled: false,
                },
                span: None,
            };
        };
        let cx = parent.map(TraceContext::context).unwrap_or_default();
        // Named for its tool once the tool resolved: a name the caller made
        // up stays out of span names.
        let span = tracer.build_with_context(
            SpanBuilder::from_name("execute_tool").with_kind(SpanKind::Internal),
            &cx,
        );
        let sc = span.span_context();
        CallSpan {
            ids: TraceIds {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
                sampled: sc.is_sampled(),
            },
            span: Some((span, tracer.clone())),
        }
    }

    /// The ids a call gets, its span started and dropped: what tracing costs
    /// a call, for benchmarks.
    #[cfg(feature = "internals")]
    pub fn ids_only(&self) -> TraceIds {
        self.start_call(None).ids
    }

    /// The span work of one traced REST call of `text.echo` (a server span,
    /// its `execute_tool` span and the stage spans), with made-up times: what
    /// tracing costs a call on the calling thread, for benchmarks.
    #[cfg(feature = "internals")]
    pub fn traced_call_for_bench(&self, parent: Option<TraceContext>) {
        let server = self.start_server(
            "POST /v1/tools/{tool}/invoke",
            parent,
            vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/v1/tools/{tool}/invoke"),
                KeyValue::new("url.scheme", "http"),
            ],
            false,
        );
        let call = self.start_call(server.context().as_ref());
        let t0 = Instant::now();
        let at = |us| t0 + std::time::Duration::from_micros(us);
        let stages = [
            ("admit", at(0), at(2)),
            ("validate", at(2), at(5)),
            ("queue", at(5), at(6)),
            ("link", at(6), at(8)),
            ("instantiate", at(8), at(40)),
            ("run", at(40), at(90)),
            ("guard", at(90), at(95)),
            ("settle", at(95), at(96)),
            ("audit", at(96), at(300)),
        ];
        call.end(
            CallFacts {
                invocation_id: "01JDBENCH0000000000000000",
                tool: "text.echo",
                description: Some("Echoes its input."),
                caller: "bench",
                session: None,
                outcome: "ok",
                fuel_used: 757,
                guard_rules: Vec::new(),
                denials: 0,
                audit_seq: Some(42),
                resolved: true,
            },
            &stages,
        );
        server.end(
            200,
            Some(&Answered {
                outcome: "ok",
                tool: Some("text.echo".into()),
            }),
        );
    }

    /// Starts a front end's SERVER span (`name`, e.g. `POST
    /// /v1/tools/{tool}/invoke`) under the caller's context. Its context is
    /// the parent to hand the call; without a tracer that is the caller's.
    /// With `named_for_tool`, the tool's name is added to the span's name
    /// once the tool resolved (`tools/call text.echo`).
    pub fn start_server(
        &self,
        name: impl Into<Cow<'static, str>>,
        parent: Option<TraceContext>,
        attributes: Vec<KeyValue>,
        named_for_tool: bool,
    ) -> ServerSpan {
        let name = name.into();
        let Some(tracer) = &self.tracer else {
            return ServerSpan {
                parent,
                span: None,
                base: None,
            };
        };
        let base = named_for_tool.then(|| name.to_string());
        let cx = parent
            .as_ref()
            .map(TraceContext::context)
            .unwrap_or_default();
        let span = tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(SpanKind::Server)
                .with_attributes(attributes),
            &cx,
        );
        let own = TraceContext(span.span_context().clone());
        ServerSpan {
            parent: Some(own),
            span: Some(span),
            base,
        }
    }
}

/// An id that is not all zeros (W3C: all-zero ids are invalid).
fn nonzero<const N: usize>(random: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let id = random();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// A front end's server span, ended when the response is known.
#[derive(Debug)]
pub struct ServerSpan {
    parent: Option<TraceContext>,
    span: Option<Span>,
    /// The name to which a resolved tool's name is added.
    base: Option<String>,
}

/// What a front end answered, for its span: the call's outcome and the
/// tool, when the tool resolved.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The outcome's name.
    pub outcome: &'static str,
    /// The tool called, when it resolved (never a name the caller made up).
    pub tool: Option<String>,
}

impl ServerSpan {
    /// The context a call made under this span continues.
    pub fn context(&self) -> Option<TraceContext> {
        self.parent.clone()
    }

    /// Ends the span with the response's status code and what was answered
    /// (an error status for every outcome but `ok`).
    pub fn end(self, status_code: u16, answered: Option<&Answered>) {
        let Some(mut span) = self.span else { return };
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status_code),
        ));
        if let Some(tool) = answered.and_then(|a| a.tool.as_deref()) {
            span.set_attribute(KeyValue::new("gen_ai.tool.name", tool.to_string()));
            if let Some(base) = &self.base {
                span.update_name(format!("{base} {tool}"));
            }
        }
        if let Some(outcome) = answered.map(|a| a.outcome) {
            span.set_attribute(KeyValue::new("fabric.outcome", outcome.to_string()));
            if outcome != "ok" {
                span.set_status(Status::error(outcome.to_string()));
            }
        } else if status_code >= 400 {
            span.set_status(Status::error(status_code.to_string()));
        }
        span.end();
    }
}

/// The stages that become child spans of `execute_tool`.
const SPAN_STAGES: [&str; 5] = ["validate", "instantiate", "run", "guard", "audit"];

/// One stage of a call, as the pipeline timed it.
pub(crate) type Stage = (&'static str, Instant, Instant);

/// A call's span while it runs.
#[derive(Debug)]
pub(crate) struct CallSpan {
    pub(crate) ids: TraceIds,
    span: Option<(Span, SdkTracer)>,
}

/// What the `execute_tool` span says about a finished call.
pub(crate) struct CallFacts<'a> {
    pub(crate) invocation_id: &'a str,
    pub(crate) tool: &'a str,
    pub(crate) description: Option<&'a str>,
    pub(crate) caller: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) outcome: &'a str,
    pub(crate) fuel_used: u64,
    pub(crate) guard_rules: Vec<String>,
    pub(crate) denials: usize,
    pub(crate) audit_seq: Option<u64>,
    /// Whether the tool resolved (else `tool` is only what was asked for).
    pub(crate) resolved: bool,
}

impl CallSpan {
    /// Whether the span is being recorded (a tracer, and sampled).
    pub(crate) fn recording(&self) -> bool {
        self.span.as_ref().is_some_and(|(s, _)| s.is_recording())
    }

    /// Ends the call's span and emits one child span per stage, each with
    /// the times the pipeline measured.
    pub(crate) fn end(self, facts: CallFacts<'_>, stages: &[Stage]) {
        let Some((mut span, tracer)) = self.span else {
            return;
        };
        if !span.is_recording() {
            return;
        }
        if facts.resolved {
            span.update_name(format!("execute_tool {}", facts.tool));
        }
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.call.id", facts.invocation_id.to_string()),
            KeyValue::new("gen_ai.tool.type", "extension"),
            KeyValue::new("fabric.caller", facts.caller.to_string()),
            KeyValue::new("fabric.outcome", facts.outcome.to_string()),
            KeyValue::new("fabric.fuel_used", facts.fuel_used as i64),
            KeyValue::new("fabric.denials", facts.denials as i64),
        ];
        if facts.resolved {
            attributes.push(KeyValue::new("gen_ai.tool.name", facts.tool.to_string()));
        }
        if let Some(d) = facts.description {
            attributes.push(KeyValue::new("gen_ai.tool.description", d.to_string()));
        }
        if let Some(s) = facts.session {
            attributes.push(KeyValue::new("fabric.session", s.to_string()));
        }
        if let Some(seq) = facts.audit_seq {
            attributes.push(KeyValue::new("fabric.audit.seq", seq as i64));
        }
        let mut rules = facts.guard_rules;
        rules.sort_unstable();
        rules.dedup();
        if !rules.is_empty() {
            attributes.push(KeyValue::new(
                "fabric.guard.rules",
                opentelemetry::Value::Array(
                    rules
                        .into_iter()
                        .map(opentelemetry::StringValue::from)
                        .collect::<Vec<_>>()
                        .into(),
                ),
            ));
        }
        if facts.outcome != "ok" {
            attributes.push(KeyValue::new("error.type", facts.outcome.to_string()));
            span.set_status(Status::error(facts.outcome.to_string()));
        }
        span.set_attributes(attributes);
        // The stages that do the call's work are spans; the short
        // bookkeeping between them (admission, linking a cached component,
        // settling budgets) is an attribute in microseconds, which keeps a
        // call to seven spans.
        for &(name, from, to) in stages.iter().filter(|s| !SPAN_STAGES.contains(&s.0)) {
            let key = match name {
                "admit" => Key::from_static_str("fabric.admit_us"),
                "queue" => Key::from_static_str("fabric.queue_us"),
                "link" => Key::from_static_str("fabric.link_us"),
                "settle" => Key::from_static_str("fabric.settle_us"),
                other => Key::from(format!("fabric.{other}_us")),
            };
            span.set_attribute(KeyValue::new(
                key,
                to.saturating_duration_since(from).as_micros() as i64,
            ));
        }
        let cx = Context::new().with_span(span);
        let clock = Clock::now();
        for &(name, from, to) in stages.iter().filter(|s| SPAN_STAGES.contains(&s.0)) {
            let mut stage = tracer.build_with_context(
                SpanBuilder::from_name(name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(clock.at(from)),
                &cx,
            );
            stage.end_with_timestamp(clock.at(to));
        }
        cx.span().end();
    }
}

/// Maps the pipeline's monotonic instants to wall-clock times.
struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    fn at(&self, then: Instant) -> SystemTime {
        self.system - self.instant.saturating_duration_since(then)
            + then.saturating_duration_since(self.instant)
    }
}

/// A trace context carried in a JSON object (MCP's `params._meta`), as
/// OpenTelemetry's MCP conventions place it: `traceparent`, `tracestate`.
pub fn from_meta(meta: &serde_json::Value) -> Option<TraceContext> {
    let traceparent = meta.get("traceparent")?.as_str()?;
    let tracestate = meta.get("tracestate").and_then(|v| v.as_str());
    TraceContext::parse(traceparent, tracestate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_a_valid_traceparent_and_rejects_bad_ones() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContext::parse(tp, Some("rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(cx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.span_id(), "00f067aa0ba902b7");
        assert!(cx.sampled());
        assert_eq!(cx.traceparent(), tp);
        assert_eq!(
            cx.0.trace_flags(),
            opentelemetry::trace::TraceFlags::SAMPLED
        );
        assert_eq!(cx.0.trace_state().header(), "rojo=00f067aa0ba902b7");
        // A later version with more fields is read as 00.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let cx = TraceContext::parse(v1, Some("not a list entry")).unwrap();
        assert!(!cx.sampled());
        assert_eq!(cx.0.trace_state().header(), "");
        // List rules: spaces around members, empty members; duplicates and
        // more than 32 members drop the header.
        let state = |t: &str| trace_state(t).map(|s| s.header());
        assert_eq!(state("a=1 ,\tb=2,,").as_deref(), Some("a=1,b=2"));
        assert_eq!(state("a=1,a=2"), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&many.join(",")), None);
        assert!(state(&many[..32].join(",")).is_some());
        assert_eq!(state(&"x".repeat(20_000)), None);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(TraceContext::parse(bad, None).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_a_tracer_a_call_continues_the_callers_trace() {
        let parent = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        let span = Telemetry::default().start_call(parent.as_ref());
        assert_eq!(span.ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span.ids.span_hex(), "00f067aa0ba902b7");
        let fresh = Telemetry::default().start_call(None);
        assert_ne!(fresh.ids.trace_id, [0; 16]);
        assert_ne!(fresh.ids.trace_id, span.ids.trace_id);
    }

    #[test]
    fn stage_times_map_to_wall_clock_in_order() {
        let clock = Clock::now();
        let earlier = clock.instant - Duration::from_millis(5);
        assert!(clock.at(earlier) < clock.system);
        assert_eq!(
            clock.system.duration_since(clock.at(earlier)).unwrap(),
            Duration::from_millis(5)
        );
    }
}
