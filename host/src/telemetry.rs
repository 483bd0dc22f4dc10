//! Traces: W3C trace context in, OpenTelemetry spans out.
//!
//! Every call has a trace id and a span id, whether or not anything is
//! exported: they continue the caller's `traceparent` (or start a trace),
//! go into the call's audit record and its result, and into its log lines.
//! When an exporter is configured ([`Telemetry::exporting`]), each sampled
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
//! measured anyway, so tracing adds nothing to a stage's own work; a call's
//! spans (`execute_tool` and its stages) go to the [`SpanQueue`] in one push, the
//! server span in another. Spans carry names, ids,
//! outcomes and costs; never arguments, outputs, error text from the tool, or
//! `[env] pass` values.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry::KeyValue;

use crate::otlp::{nanos, write_span, Attributes, Parent, SpanHead};
use crate::spans::SpanQueue;

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

    /// What a child of this context records of it: the parent span (and
    /// whether it is another process's), and the `tracestate` carried on.
    fn parent(&self) -> (Option<Parent>, Option<Arc<str>>) {
        let state = self.0.trace_state().header();
        (
            Some((self.0.span_id().to_bytes(), self.0.is_remote())),
            (!state.is_empty()).then(|| Arc::from(state)),
        )
    }
}

/// Which traces are recorded: the OpenTelemetry samplers that
/// `OTEL_TRACES_SAMPLER` names.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// Every trace (`always_on`).
    AlwaysOn,
    /// None (`always_off`).
    AlwaysOff,
    /// This share of traces, decided by the trace id (`traceidratio`), as
    /// the Rust and Go SDKs decide it.
    TraceIdRatio(f64),
    /// The parent's decision where there is a parent, else the root's
    /// (`parentbased_*`; the default is `parentbased_always_on`).
    ParentBased(Box<Sampler>),
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    }
}

impl Sampler {
    /// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name
    /// (names in any case; the ratio from 0 to 1, default 1), and a warning
    /// for a setting that cannot be honoured, which is ignored as the
    /// specification asks: an unknown or remote sampler gives the default,
    /// a ratio that is no number from 0 to 1 gives 1.
    pub fn from_env(name: Option<&str>, arg: Option<&str>) -> (Sampler, Option<String>) {
        let mut warning = None;
        let mut ratio = || match arg.map(str::trim).filter(|a| !a.is_empty()) {
            None => 1.0,
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    warning = Some(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a} is not a ratio from 0 to 1: sampling with 1"
                    ));
                    1.0
                }
            },
        };
        let parent_based = |root| Sampler::ParentBased(Box::new(root));
        let name = name.map(|n| n.trim().to_ascii_lowercase());
        let sampler = match name.as_deref().unwrap_or("") {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()),
            "parentbased_always_on" | "" => parent_based(Sampler::AlwaysOn),
            "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
            "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatio(ratio())),
            other => {
                return (
                    Sampler::default(),
                    Some(format!(
                        "OTEL_TRACES_SAMPLER={other} is not supported (always_on, always_off, \
                         traceidratio, or parentbased_ with one of those): sampling with the \
                         default, parentbased_always_on"
                    )),
                )
            }
        };
        (sampler, warning)
    }

    /// Whether a span of `trace_id` under `parent` is recorded.
    fn samples(&self, parent: Option<&TraceContext>, trace_id: &[u8; 16]) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(ratio) => {
                // As the Rust and Go SDKs do: the trace id's last 8 bytes
                // as a number, shifted right by one, below the ratio's share
                // of 2^63.
                let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
                let mut low = [0; 8];
                low.copy_from_slice(&trace_id[8..]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
            Sampler::ParentBased(root) => match parent {
                Some(p) => p.sampled(),
                None => root.samples(None, trace_id),
            },
        }
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

/// Where spans go: nowhere (the default), or a [`SpanQueue`] whose thread
/// batches them to an exporter, for the traces its sampler records.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    export: Option<Arc<Export>>,
}

#[derive(Debug)]
struct Export {
    sampler: Sampler,
    queue: Arc<SpanQueue>,
}

/// A span while it runs: what its record will say of where it belongs.
#[derive(Debug)]
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<Parent>,
    trace_state: Option<Arc<str>>,
    start: SystemTime,
    queue: Arc<SpanQueue>,
}

impl Open {
    /// The span's head, ending now.
    fn head(&self, kind: SpanKind) -> SpanHead<'_> {
        SpanHead {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            trace_state: self.trace_state.as_deref().unwrap_or_default(),
            kind,
            start_unix_ns: nanos(self.start),
            end_unix_ns: nanos(SystemTime::now()),
        }
    }
}

/// Room for one call's spans as written (a call's seven take about 1 KiB).
const SPANS_BYTES: usize = 2048;

thread_local! {
    /// Where a thread writes a call's spans before they are queued: kept, so
    /// a traced call allocates nothing for them.
    static WRITING: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `write` on this thread's span buffer, emptied first, and queues what
/// it wrote: `write` returns how many spans that is.
fn write_and_queue(queue: &SpanQueue, write: impl FnOnce(&mut Vec<u8>) -> usize) {
    // Taken out while in use (a thread being torn down gets a fresh one).
    let mut out = WRITING.try_with(std::cell::Cell::take).unwrap_or_default();
    out.clear();
    out.reserve(SPANS_BYTES);
    let n = write(&mut out);
    queue.push(&out, n);
    // A buffer grown by a huge span is not kept.
    if out.capacity() <= 16 * SPANS_BYTES {
        let _ = WRITING.try_with(|kept| kept.set(out));
    }
}

impl Telemetry {
    /// Spans of the traces `sampler` records, pushed onto `queue`.
    pub fn exporting(queue: Arc<SpanQueue>, sampler: Sampler) -> Telemetry {
        Telemetry {
            export: Some(Arc::new(Export { sampler, queue })),
        }
    }

    /// Whether spans are built at all.
    pub fn enabled(&self) -> bool {
        self.export.is_some()
    }

    /// A new span's ids under `parent` (its trace, or a new one), whether
    /// it is sampled, and, when it is, what it will record.
    fn open(&self, parent: Option<&TraceContext>) -> (TraceIds, Option<Open>) {
        let trace_id = match parent {
            Some(p) => p.0.trace_id().to_bytes(),
            None => new_trace_id(),
        };
        let span_id = new_span_id();
        let Some(export) = &self.export else {
            let ids = TraceIds {
                trace_id,
                span_id,
                sampled: false,
            };
            return (ids, None);
        };
        let sampled = export.sampler.samples(parent, &trace_id);
        let ids = TraceIds {
            trace_id,
            span_id,
            sampled,
        };
        if !sampled {
            return (ids, None);
        }
        let (parent, trace_state) = parent.map_or((None, None), TraceContext::parent);
        let open = Open {
            trace_id,
            span_id,
            parent,
            trace_state,
            start: SystemTime::now(),
            queue: export.queue.clone(),
        };
        (ids, Some(open))
    }

    /// Starts a call's `execute_tool` span under `parent` (named for its
    /// tool when it ends, once the tool resolved). Without an exporter, or
    /// unsampled, only ids are made: the parent's trace (or a new one) and a
    /// fresh span id.
    pub(crate) fn start_call(&self, parent: Option<&TraceContext>) -> CallSpan {
        let (ids, span) = self.open(parent);
        CallSpan { ids, span }
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
    #[cfg(any(test, feature = "internals"))]
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
    /// the parent to hand the call; without an exporter that is the caller's.
    /// With `named_for_tool`, the tool's name is added to the span's name
    /// once the tool resolved (`tools/call text.echo`).
    pub fn start_server(
        &self,
        name: impl Into<Cow<'static, str>>,
        parent: Option<TraceContext>,
        attributes: Vec<KeyValue>,
        named_for_tool: bool,
    ) -> ServerSpan {
        if self.export.is_none() {
            return ServerSpan { parent, span: None };
        }
        let (ids, open) = self.open(parent.as_ref());
        let state = parent
            .as_ref()
            .map_or_else(TraceState::default, |p| p.0.trace_state().clone());
        let own = TraceContext(SpanContext::new(
            TraceId::from_bytes(ids.trace_id),
            SpanId::from_bytes(ids.span_id),
            if ids.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            state,
        ));
        ServerSpan {
            parent: Some(own),
            span: open.map(|open| OpenServer {
                open,
                name: name.into(),
                attributes,
                named_for_tool,
            }),
        }
    }
}

/// A random trace id, never all zeros (W3C: an all-zero id is invalid).
/// One draw of the thread's generator: an array of random bytes would take
/// one draw a byte.
fn new_trace_id() -> [u8; 16] {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A random span id, never all zeros.
fn new_span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A front end's server span, ended when the response is known.
#[derive(Debug)]
pub struct ServerSpan {
    parent: Option<TraceContext>,
    span: Option<OpenServer>,
}

/// A recorded server span while it runs.
#[derive(Debug)]
struct OpenServer {
    open: Open,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    /// Whether a resolved tool's name is added to the name.
    named_for_tool: bool,
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
    pub fn end(mut self, status_code: u16, answered: Option<&Answered>) {
        if let Some(span) = self.span.take() {
            span.write(Some(status_code), answered);
        }
    }
}

impl Drop for ServerSpan {
    /// A span dropped before its response (the client went away and the
    /// request's future with it) is still sent, as cancelled: the call it
    /// started runs on, and its span names this one as parent.
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            span.write(None, None);
        }
    }
}

impl OpenServer {
    /// Writes the finished span: its status code (none when the request was
    /// dropped unanswered) and what was answered.
    fn write(self, status_code: Option<u16>, answered: Option<&Answered>) {
        let OpenServer {
            open,
            name,
            attributes,
            named_for_tool,
        } = self;
        let tool = answered.and_then(|a| a.tool.as_deref());
        let outcome = answered.map(|a| a.outcome);
        let status_text;
        let error = match (outcome, status_code) {
            (Some("ok"), _) => None,
            (Some(outcome), _) => Some(outcome),
            (None, Some(code)) if code >= 400 => {
                status_text = code.to_string();
                Some(status_text.as_str())
            }
            (None, Some(_)) => None,
            (None, None) => Some(CANCELLED),
        };
        let named = match tool {
            Some(tool) if named_for_tool => [&*name, " ", tool],
            _ => [&*name, "", ""],
        };
        write_and_queue(&open.queue, |out| {
            write_span(
                out,
                &open.head(SpanKind::Server),
                &named,
                |a| {
                    for kv in &attributes {
                        a.key_value(kv);
                    }
                    match status_code {
                        Some(code) => a.int("http.response.status_code", i64::from(code)),
                        None => a.str("error.type", CANCELLED),
                    }
                    if let Some(tool) = tool {
                        a.str("gen_ai.tool.name", tool);
                    }
                    if let Some(outcome) = outcome {
                        a.str("fabric.outcome", outcome);
                    }
                },
                error,
            );
            1
        });
    }
}

/// The error of a server span whose request was dropped before an answer.
const CANCELLED: &str = "cancelled";

/// The stages that become child spans of `execute_tool`.
const SPAN_STAGES: [&str; 5] = ["validate", "instantiate", "run", "guard", "audit"];

/// One stage of a call, as the pipeline timed it.
pub(crate) type Stage = (&'static str, Instant, Instant);

/// A call's span while it runs.
#[derive(Debug)]
pub(crate) struct CallSpan {
    pub(crate) ids: TraceIds,
    span: Option<Open>,
}

/// What the `execute_tool` span says about a finished call.
pub(crate) struct CallFacts<'a> {
    pub(crate) invocation_id: &'a str,
    pub(crate) tool: &'a str,
    pub(crate) description: Option<&'a str>,
    pub(crate) caller: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) outcome: &'static str,
    pub(crate) fuel_used: u64,
    pub(crate) guard_rules: Vec<String>,
    pub(crate) denials: usize,
    pub(crate) audit_seq: Option<u64>,
    /// Whether the tool resolved (else `tool` is only what was asked for).
    pub(crate) resolved: bool,
}

impl CallSpan {
    /// Whether the span is being recorded (an exporter, and sampled).
    pub(crate) fn recording(&self) -> bool {
        self.span.is_some()
    }

    /// Ends the call's span and writes one child span per stage, each with
    /// the times the pipeline measured; all go to the queue in one push.
    pub(crate) fn end(self, facts: CallFacts<'_>, stages: &[Stage]) {
        let Some(open) = self.span else {
            return;
        };
        let name = if facts.resolved {
            ["execute_tool ", facts.tool]
        } else {
            ["execute_tool", ""]
        };
        let mut rules: Vec<&str> = facts.guard_rules.iter().map(String::as_str).collect();
        rules.sort_unstable();
        rules.dedup();
        let error = (facts.outcome != "ok").then_some(facts.outcome);
        let head = open.head(SpanKind::Internal);
        write_and_queue(&open.queue, |out| {
            write_span(
                out,
                &head,
                &name,
                |a: &mut Attributes<'_>| {
                    a.str("gen_ai.operation.name", "execute_tool");
                    a.str("gen_ai.tool.call.id", facts.invocation_id);
                    a.str("gen_ai.tool.type", "extension");
                    a.str("fabric.caller", facts.caller);
                    a.str("fabric.outcome", facts.outcome);
                    a.int("fabric.fuel_used", facts.fuel_used as i64);
                    a.int("fabric.denials", facts.denials as i64);
                    if facts.resolved {
                        a.str("gen_ai.tool.name", facts.tool);
                    }
                    if let Some(d) = facts.description {
                        a.str("gen_ai.tool.description", d);
                    }
                    if let Some(s) = facts.session {
                        a.str("fabric.session", s);
                    }
                    if let Some(seq) = facts.audit_seq {
                        a.int("fabric.audit.seq", seq as i64);
                    }
                    if !rules.is_empty() {
                        a.strs("fabric.guard.rules", &rules);
                    }
                    if let Some(outcome) = error {
                        a.str("error.type", outcome);
                    }
                    // The stages that do the call's work are spans; the short
                    // bookkeeping between them (admission, linking a cached
                    // component, settling budgets) is an attribute in
                    // microseconds, which keeps a call to seven spans.
                    for &(name, from, to) in stages.iter().filter(|s| !SPAN_STAGES.contains(&s.0)) {
                        let micros = to.saturating_duration_since(from).as_micros() as i64;
                        match name {
                            "admit" => a.int("fabric.admit_us", micros),
                            "queue" => a.int("fabric.queue_us", micros),
                            "link" => a.int("fabric.link_us", micros),
                            "settle" => a.int("fabric.settle_us", micros),
                            other => a.int(&format!("fabric.{other}_us"), micros),
                        }
                    }
                },
                error,
            );
            let clock = Clock::now();
            let mut spans = 1;
            for &(name, from, to) in stages.iter().filter(|s| SPAN_STAGES.contains(&s.0)) {
                let stage = SpanHead {
                    trace_id: head.trace_id,
                    span_id: new_span_id(),
                    parent: Some((open.span_id, false)),
                    trace_state: head.trace_state,
                    kind: SpanKind::Internal,
                    start_unix_ns: clock.at(from),
                    end_unix_ns: clock.at(to),
                };
                write_span(out, &stage, &[name], |_| {}, None);
                spans += 1;
            }
            spans
        });
    }
}

/// Maps the pipeline's monotonic instants to wall-clock times.
struct Clock {
    instant: Instant,
    /// The wall clock at `instant`, in nanoseconds since the Unix epoch.
    unix_ns: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_ns: nanos(SystemTime::now()),
        }
    }

    /// `then` on the wall clock, in nanoseconds since the Unix epoch.
    fn at(&self, then: Instant) -> u64 {
        if then <= self.instant {
            let ago = (self.instant - then).as_nanos() as u64;
            self.unix_ns.saturating_sub(ago)
        } else {
            self.unix_ns + (then - self.instant).as_nanos() as u64
        }
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
    fn without_an_exporter_a_call_continues_the_callers_trace() {
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
    fn samplers_are_named_as_the_specification_names_them_and_decide_alike() {
        let from = |n: Option<&str>, a: Option<&str>| Sampler::from_env(n, a);
        assert_eq!(from(None, None), (Sampler::default(), None));
        assert_eq!(from(Some("Always_Off"), None), (Sampler::AlwaysOff, None));
        assert_eq!(
            from(Some("parentbased_traceidratio"), Some("0.25")),
            (
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatio(0.25))),
                None
            )
        );
        assert_eq!(
            from(Some("traceidratio"), None),
            (Sampler::TraceIdRatio(1.0), None)
        );
        // What cannot be honoured is ignored, with a warning: a bad ratio
        // keeps the sampler (at 1), an unknown sampler gives the default.
        for bad in ["2", "half"] {
            let (sampler, warning) = from(Some("traceidratio"), Some(bad));
            assert_eq!(sampler, Sampler::TraceIdRatio(1.0));
            assert!(warning.is_some_and(|w| w.contains(bad)));
        }
        let (sampler, warning) = from(Some("jaeger_remote"), None);
        assert_eq!(sampler, Sampler::default());
        assert!(warning.is_some_and(|w| w.contains("jaeger_remote")));

        // The last 8 bytes, shifted right by one, below the ratio's share of
        // 2^63: the decision the Rust and Go SDKs make.
        let id = |low: u64| {
            let mut id = [0xab; 16];
            id[8..].copy_from_slice(&low.to_be_bytes());
            id
        };
        let quarter = Sampler::TraceIdRatio(0.25);
        assert!(quarter.samples(None, &id(0)));
        assert!(quarter.samples(None, &id((1u64 << 62) - 2)));
        assert!(!quarter.samples(None, &id(1u64 << 62)));
        assert!(!quarter.samples(None, &id(u64::MAX)));
        let sampled: usize = (0..10_000u64)
            .filter(|i| quarter.samples(None, &id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
            .count();
        assert!((2_000..3_000).contains(&sampled), "{sampled} of 10 000");

        // Parent-based: the parent's flag, whatever the root would say.
        let parent = |flags: &str| {
            TraceContext::parse(
                &format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"),
                None,
            )
            .unwrap()
        };
        let never = Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        assert!(never.samples(Some(&parent("01")), &id(0)));
        assert!(!never.samples(None, &id(0)));
        assert!(!Sampler::default().samples(Some(&parent("00")), &id(0)));
        assert!(Sampler::default().samples(None, &id(0)));
    }

    #[test]
    fn a_sampled_call_writes_seven_spans_and_an_unsampled_one_none() {
        let queue = Arc::new(SpanQueue::start(None, crate::spans::BatchConfig::default()).unwrap());
        let telemetry = Telemetry::exporting(queue.clone(), Sampler::default());
        telemetry.traced_call_for_bench(Some(
            TraceContext::parse(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            )
            .unwrap(),
        ));
        queue.force_flush();
        assert_eq!(queue.exported(), 7, "server, execute_tool and five stages");
        telemetry.traced_call_for_bench(TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            None,
        ));
        queue.force_flush();
        assert_eq!(queue.exported(), 7, "the caller did not sample: nothing");
        // A server span dropped unanswered (the client went away) is still
        // sent: the call it started names it as parent.
        let server = telemetry.start_server("POST /v1/tools/{tool}/invoke", None, vec![], false);
        assert!(server.context().is_some_and(|c| c.sampled()));
        drop(server);
        queue.force_flush();
        assert_eq!(queue.exported(), 8);
    }

    #[test]
    fn stage_times_map_to_wall_clock_in_order() {
        let clock = Clock::now();
        let earlier = clock.instant - Duration::from_millis(5);
        let later = clock.instant + Duration::from_millis(2);
        assert_eq!(clock.unix_ns - clock.at(earlier), 5_000_000);
        assert_eq!(clock.at(later) - clock.unix_ns, 2_000_000);
        assert_eq!(clock.at(clock.instant), clock.unix_ns);
        let now = nanos(SystemTime::now());
        assert!(
            now.abs_diff(clock.unix_ns) < 60_000_000_000,
            "the wall clock"
        );
    }
}
