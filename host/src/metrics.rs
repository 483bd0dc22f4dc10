//! Prometheus metrics: what every call cost and how it ended, served as text
//! at `GET /metrics`.
//!
//! Names and units follow Prometheus' conventions (`_total` counters, base
//! units: seconds). Labels are bounded: `tool` is a tool the registry knows
//! (a name that did not resolve counts as `tool=""`), `caller` a caller from
//! the callers file (`local` for the CLI, `""` unauthenticated), `outcome`
//! and `reason` are the contract's outcome names, `rule` a guard rule id.
//! Recording a call is a label lookup (a hash and a read lock) and an
//! atomic add per family touched; the families are built once.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets, seconds: 50 µs to 30 s (a fresh instance is tens of
/// microseconds; a wall-clock limit is seconds).
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Fuel buckets: powers of ten up to the largest default grant and beyond.
const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Audit batch sizes, records: the group commit takes up to 256.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Outcomes that are refusals: the call never ran.
const REFUSALS: &[&str] = &[
    "unauthorized",
    "forbidden",
    "overloaded",
    "budget_exceeded",
    "circuit_open",
];

/// Every metric Fabric keeps, in one registry.
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    duration: HistogramVec,
    fuel: HistogramVec,
    stage: HistogramVec,
    guard_hits: IntCounterVec,
    refusals: IntCounterVec,
    audit_append: Histogram,
    audit_batch: Histogram,
    compile_cache: IntCounterVec,
    in_flight: IntGauge,
    queued: IntGauge,
    anomalies: IntCounterVec,
    circuits: IntGaugeVec,
    spans_started: IntCounter,
    /// Scrapes set the gauges read at scrape time one at a time.
    rendering: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What a finished call contributes.
pub(crate) struct CallSample<'a> {
    pub(crate) tool: &'a str,
    pub(crate) caller: &'a str,
    pub(crate) outcome: &'a str,
    pub(crate) seconds: f64,
    pub(crate) fuel: u64,
    pub(crate) guard_rules: &'a [String],
    pub(crate) stages: &'a [(&'static str, f64)],
}

impl Metrics {
    /// Builds the families, all empty.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let calls = counter(
            "fabric_tool_calls_total",
            "Tool calls, by tool, caller and outcome.",
            &["tool", "caller", "outcome"],
        );
        let duration = histogram(
            "fabric_tool_call_duration_seconds",
            "Duration of tool calls, admission to durable audit record, by tool.",
            &["tool"],
            SECONDS,
        );
        let fuel = histogram(
            "fabric_tool_call_fuel",
            "Fuel (WebAssembly instructions, roughly) used by tool calls, by tool.",
            &["tool"],
            FUEL,
        );
        let stage = histogram(
            "fabric_tool_call_stage_duration_seconds",
            "Time tool calls spent in each pipeline stage.",
            &["stage"],
            SECONDS,
        );
        let guard_hits = counter(
            "fabric_guard_hits_total",
            "Guard rule hits on tool outputs, by rule id.",
            &["rule"],
        );
        let refusals = counter(
            "fabric_refusals_total",
            "Calls refused before they ran, by reason (the outcome).",
            &["reason"],
        );
        let audit_append = histogram(
            "fabric_audit_append_duration_seconds",
            "Time from handing a record to the audit log to its being durable.",
            &[],
            SECONDS,
        )
        .with_label_values::<&str>(&[]);
        let audit_batch = histogram(
            "fabric_audit_batch_records",
            "Records per audit group commit (one fsync each).",
            &[],
            BATCH,
        )
        .with_label_values::<&str>(&[]);
        let compile_cache = counter(
            "fabric_compile_cache_lookups_total",
            "Compiled-code cache lookups when loading components, by result (hit, miss).",
            &["result"],
        );
        let in_flight = gauge("fabric_calls_in_flight", "Calls running now.");
        let queued = gauge("fabric_queue_depth", "Calls waiting for a slot.");
        let anomalies = counter(
            "fabric_budget_anomalies_total",
            "Budget anomaly alerts raised, by caller.",
            &["caller"],
        );
        let circuits = IntGaugeVec::new(
            Opts::new(
                "fabric_circuit_state",
                "Circuit breaker state of tools whose circuit is not closed: 1 half-open, 2 open.",
            ),
            &["tool"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(circuits.clone()))
            .expect("unique");
        let spans_started = IntCounter::new(
            "fabric_trace_sampled_calls_total",
            "Calls whose spans were sampled for export.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(spans_started.clone()))
            .expect("unique");
        Metrics {
            registry,
            calls,
            duration,
            fuel,
            stage,
            guard_hits,
            refusals,
            audit_append,
            audit_batch,
            compile_cache,
            in_flight,
            queued,
            anomalies,
            circuits,
            spans_started,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// Counts one finished call.
    pub(crate) fn record_call(&self, call: &CallSample<'_>) {
        self.calls
            .with_label_values(&[call.tool, call.caller, call.outcome])
            .inc();
        if REFUSALS.contains(&call.outcome) {
            self.refusals.with_label_values(&[call.outcome]).inc();
            return;
        }
        self.duration
            .with_label_values(&[call.tool])
            .observe(call.seconds);
        if call.fuel > 0 {
            self.fuel
                .with_label_values(&[call.tool])
                .observe(call.fuel as f64);
        }
        for rule in call.guard_rules {
            self.guard_hits.with_label_values(&[rule.as_str()]).inc();
        }
        for (name, seconds) in call.stages {
            self.stage.with_label_values(&[name]).observe(*seconds);
        }
    }

    /// Counts a call as [`Metrics::record_call`] does, for benchmarks.
    #[cfg(feature = "internals")]
    pub fn record_for_bench(
        &self,
        tool: &str,
        caller: &str,
        outcome: &str,
        seconds: f64,
        fuel: u64,
    ) {
        let stages = [
            ("admit", 1e-6),
            ("validate", 1e-6),
            ("queue", 1e-6),
            ("instantiate", 2e-5),
            ("run", 3e-5),
            ("guard", 1e-6),
            ("settle", 1e-6),
            ("audit", 5e-4),
        ];
        self.record_call(&CallSample {
            tool,
            caller,
            outcome,
            seconds,
            fuel,
            guard_rules: &[],
            stages: &stages,
        });
    }

    /// Counts a sampled call span.
    pub(crate) fn span_started(&self) {
        self.spans_started.inc();
    }

    /// One audit append, from hand-over to durable.
    pub(crate) fn audit_appended(&self, seconds: f64) {
        self.audit_append.observe(seconds);
    }

    /// One audit group commit of `records`.
    pub fn audit_batch(&self, records: usize) {
        self.audit_batch.observe(records as f64);
    }

    /// The Prometheus text exposition (format 0.0.4), with what is read
    /// now: calls in flight and queued, anomalies raised, open circuits,
    /// compiled-code cache lookups.
    pub fn render(
        &self,
        load: (usize, usize),
        anomalies: &[(String, u64)],
        circuits: &[(String, i64)],
        cache_lookups: (u64, u64),
    ) -> String {
        // A poisoned lock only means another scrape panicked; go on.
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.in_flight.set(load.0 as i64);
        self.queued.set(load.1 as i64);
        for (caller, n) in anomalies {
            let c = self.anomalies.with_label_values(&[caller.as_str()]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        for (result, n) in [("hit", cache_lookups.0), ("miss", cache_lookups.1)] {
            let c = self.compile_cache.with_label_values(&[result]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.circuits.reset();
        for (tool, state) in circuits {
            self.circuits
                .with_label_values(&[tool.as_str()])
                .set(*state);
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family that did
        // would be a bug in the registrations above.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_counted_with_its_labels_and_costs() {
        let m = Metrics::new();
        let rules = vec!["injection.ignore".to_string()];
        m.record_call(&CallSample {
            tool: "text.echo",
            caller: "ci",
            outcome: "ok",
            seconds: 0.0007,
            fuel: 12_000,
            guard_rules: &rules,
            stages: &[("run", 0.00003)],
        });
        m.record_call(&CallSample {
            tool: "",
            caller: "",
            outcome: "unauthorized",
            seconds: 0.0001,
            fuel: 0,
            guard_rules: &[],
            stages: &[],
        });
        m.audit_batch(3);
        let text = m.render(
            (2, 1),
            &[("ci".into(), 4)],
            &[("slow.run".into(), 2)],
            (1, 0),
        );
        for line in [
            "fabric_tool_calls_total{caller=\"ci\",outcome=\"ok\",tool=\"text.echo\"} 1",
            "fabric_tool_calls_total{caller=\"\",outcome=\"unauthorized\",tool=\"\"} 1",
            "fabric_refusals_total{reason=\"unauthorized\"} 1",
            "fabric_tool_call_duration_seconds_count{tool=\"text.echo\"} 1",
            "fabric_tool_call_duration_seconds_bucket{tool=\"text.echo\",le=\"0.001\"} 1",
            "fabric_tool_call_fuel_sum{tool=\"text.echo\"} 12000",
            "fabric_guard_hits_total{rule=\"injection.ignore\"} 1",
            "fabric_audit_batch_records_count 1",
            "fabric_compile_cache_lookups_total{result=\"hit\"} 1",
            "fabric_calls_in_flight 2",
            "fabric_queue_depth 1",
            "fabric_budget_anomalies_total{caller=\"ci\"} 4",
            "fabric_circuit_state{tool=\"slow.run\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // A refusal has no latency sample of its own.
        assert!(!text.contains("fabric_tool_call_duration_seconds_count{tool=\"\"}"));
    }
}
