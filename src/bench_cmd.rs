//! `fabric bench TOOL [ARGS]`: what a call of one tool costs, cold, beside
//! its peers in the same run.
//!
//! Modes, each labelled in every report:
//! - `fresh`: the whole pipeline with a fresh instance per call, as
//!   production runs it (admit, validate, instantiate, run, guard, audit);
//! - `reused`: the same call on one instance (the floor; not isolated);
//! - `process`: `fabric call` as a process per call;
//! - `wasmtime`: `wasmtime run --invoke` per call, when a wasmtime binary is
//!   on PATH or given with `--wasmtime`.
//!
//! Calls are audited, durably, into a scratch log of their own (so a
//! benchmark does not fill the operator's log), unless `--no-audit`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use fabric_host::{Call, Caller, Fabric, Options, Outcome, Phases};
use serde_json::{json, Map, Value};

/// `fabric bench` flags.
#[derive(Args)]
pub struct BenchArgs {
    /// The tool, NAME.FUNCTION (e.g. text.echo).
    tool: String,
    /// The arguments as a JSON object, or - to read them from stdin. Default: {}.
    args: Option<String>,
    /// Measured calls per mode (after the warm-up).
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Fresh-instance calls running at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Calls run first and not measured, per mode.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Times the fresh-instance mode is measured, to show its spread.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Calls of the process-per-call modes (they take milliseconds each).
    #[arg(long, default_value_t = 50)]
    process_calls: usize,
    /// Turn the audit log off, to see what it costs.
    #[arg(long)]
    no_audit: bool,
    /// A wasmtime binary for the `wasmtime run` peer. [default: `wasmtime` on PATH]
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// Print every figure as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write a latency plot (CDF per mode on a log axis, phases as a stacked bar).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Latency figures of one mode, microseconds.
struct Stats {
    calls: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
    calls_per_s: f64,
    /// Sorted samples, for the plot.
    sorted: Vec<f64>,
}

impl Stats {
    fn of(samples: &[Duration], elapsed: Duration) -> Stats {
        let mut sorted: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| quantile(&sorted, q);
        Stats {
            calls: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: sorted.last().copied().unwrap_or(0.0),
            mean: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
            calls_per_s: sorted.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            sorted,
        }
    }

    fn json(&self) -> Value {
        json!({
            "calls": self.calls, "p50_us": self.p50, "p90_us": self.p90, "p99_us": self.p99,
            "p99_9_us": self.p999, "max_us": self.max, "mean_us": self.mean,
            "calls_per_s": self.calls_per_s,
        })
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// One fresh-instance run: latencies, phases, outcomes.
struct FreshRun {
    latencies: Vec<Duration>,
    phases: Vec<Phases>,
    elapsed: Duration,
    /// Outcome name → (count, first error message).
    outcomes: std::collections::BTreeMap<&'static str, (usize, String)>,
}

/// `fabric bench`.
pub fn bench(args: BenchArgs, options: &Options) -> Result<ExitCode> {
    if args.calls == 0 || args.concurrency == 0 || args.repeat == 0 {
        bail!("--calls, --concurrency and --repeat must be at least 1");
    }
    let arguments = crate::read_arguments(args.args.as_deref())?;
    let scratch = Scratch::new()?;
    let mut options = options.clone();
    options.data_dir = (!args.no_audit).then(|| scratch.0.join("data"));
    options.audit_key = (!args.no_audit).then(|| scratch.0.join("key"));
    let fabric = Arc::new(crate::open(&options)?);
    if fabric.tool(&Caller::Local, &args.tool).is_none() {
        bail!(
            "unknown tool {:?} in {}: `fabric tools` lists them",
            args.tool,
            options.tools_dir.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // Arguments the tool refuses would make every one of the thousands of
    // calls below fail alike: one call tells.
    let probe = Call::new(Caller::Local, args.tool.clone(), arguments.clone());
    let probe = runtime.block_on(fabric.call(probe))?;
    if probe.outcome == Outcome::InvalidArguments {
        let message = probe.error.map(|e| e.message).unwrap_or_default();
        bail!(
            "invalid_arguments: {message}; every call would be refused alike, so nothing was measured"
        );
    }
    let timer_ns = timer_overhead_ns();

    let mut runs = Vec::new();
    for _ in 0..args.repeat {
        runs.push(runtime.block_on(fresh(&fabric, &args, &arguments))?);
    }
    let peak_rss = peak_rss_bytes();
    let last = runs.pop().context("at least one run")?;
    let fresh_stats = Stats::of(&last.latencies, last.elapsed);
    let ok = last.outcomes.get("ok").map_or(0, |o| o.0);
    let reused =
        runtime.block_on(fabric.reused_instance(&args.tool, &arguments, args.warmup, args.calls));
    let reused = match reused {
        Ok(samples) => {
            let total = samples.iter().sum();
            Ok(Stats::of(&samples, total))
        }
        Err(why) => Err(why),
    };
    let process = process_per_call(&args, &options, &arguments, &scratch.0)?;
    let wasmtime = wasmtime_per_call(&args, &options, &fabric, &arguments);
    let spread: Vec<f64> = runs
        .iter()
        .map(|r| Stats::of(&r.latencies, r.elapsed).p50)
        .chain([fresh_stats.p50])
        .collect();

    let phase_names = ["admit", "validate", "instantiate", "run", "guard", "audit"];
    let phase =
        |p: &Phases, i: usize| [p.admit, p.validate, p.instantiate, p.run, p.guard, p.audit][i];
    let mut phases = Map::new();
    let mut phase_p50 = Vec::new();
    for (i, name) in phase_names.iter().enumerate() {
        let samples: Vec<Duration> = last.phases.iter().map(|p| phase(p, i)).collect();
        let s = Stats::of(&samples, Duration::from_secs(1));
        phase_p50.push((*name, s.p50));
        phases.insert(
            (*name).into(),
            json!({"p50_us": s.p50, "p99_us": s.p99, "mean_us": s.mean}),
        );
    }

    let mode_json = |m: &std::result::Result<Stats, String>| match m {
        Ok(s) => s.json(),
        Err(why) => json!({"skipped": why}),
    };
    let ratio = |m: &std::result::Result<Stats, String>, f: fn(&Stats) -> f64| {
        m.as_ref().ok().map(|s| f(s) / f(&fresh_stats).max(1e-9))
    };
    let report = json!({
        "tool": args.tool,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "audit": if args.no_audit { "off" } else { "durable" },
        "timer_overhead_ns": timer_ns,
        "peak_rss_bytes": peak_rss,
        "outcomes": last.outcomes.iter().map(|(k, (n, m))| (k.to_string(), json!({"calls": n, "first_error": m}))).collect::<Map<_, _>>(),
        "all_failed": ok == 0,
        "modes": {
            "fresh": fresh_stats.json(),
            "reused": mode_json(&reused),
            "process": mode_json(&process),
            "wasmtime": mode_json(&wasmtime),
        },
        "phases": phases,
        "ratios": {
            "fresh_over_reused_p50": reused.as_ref().ok().map(|r| fresh_stats.p50 / r.p50.max(1e-9)),
            "process_over_fresh_p50": ratio(&process, |s| s.p50),
            "wasmtime_over_fresh_p50": ratio(&wasmtime, |s| s.p50),
        },
        "fresh_p50_us_per_repeat": spread,
    });

    if let Some(path) = &args.svg {
        let mut series = vec![("fresh instance (Fabric)", &fresh_stats.sorted)];
        if let Ok(r) = &reused {
            series.push(("reused instance (not isolated)", &r.sorted));
        }
        if let Ok(p) = &process {
            series.push(("process per call (fabric call)", &p.sorted));
        }
        if let Ok(w) = &wasmtime {
            series.push(("wasmtime run per call", &w.sorted));
        }
        plot(path, &args.tool, &series, &phase_p50)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(
            &args,
            &report,
            &fresh_stats,
            &reused,
            &process,
            &wasmtime,
            &phase_p50,
        );
    }
    if ok == 0 {
        let (outcome, (_, message)) = last
            .outcomes
            .iter()
            .next()
            .map(|(k, v)| (*k, v.clone()))
            .unwrap_or(("none", (0, String::new())));
        eprintln!(
            "error: every call of {} failed ({outcome}: {message}); its figures measure failures, not the tool",
            args.tool
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Warm-up, then `calls` fresh-instance calls, `concurrency` at a time.
async fn fresh(fabric: &Arc<Fabric>, args: &BenchArgs, arguments: &Value) -> Result<FreshRun> {
    let one = |fabric: Arc<Fabric>, tool: String, arguments: Value| async move {
        let started = Instant::now();
        let result = fabric
            .call(Call::new(Caller::Local, tool, arguments))
            .await?;
        anyhow::Ok((started.elapsed(), result))
    };
    for _ in 0..args.warmup {
        one(fabric.clone(), args.tool.clone(), arguments.clone()).await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (fabric, next, tool, arguments) = (
            fabric.clone(),
            next.clone(),
            args.tool.clone(),
            arguments.clone(),
        );
        let calls = args.calls;
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                seen.push(one(fabric.clone(), tool.clone(), arguments.clone()).await?);
            }
            anyhow::Ok(seen)
        }));
    }
    let mut run = FreshRun {
        latencies: Vec::with_capacity(args.calls),
        phases: Vec::with_capacity(args.calls),
        elapsed: Duration::ZERO,
        outcomes: Default::default(),
    };
    for w in workers {
        for (latency, result) in w.await.context("a bench worker panicked")?? {
            run.latencies.push(latency);
            run.phases.push(result.phases);
            let entry = run
                .outcomes
                .entry(result.outcome.as_str())
                .or_insert((0, String::new()));
            entry.0 += 1;
            if entry.1.is_empty() && result.outcome != Outcome::Ok {
                entry.1 = result.error.map(|e| e.message).unwrap_or_default();
            }
        }
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// `fabric call TOOL ARGS` as a process per call.
fn process_per_call(
    args: &BenchArgs,
    options: &Options,
    arguments: &Value,
    scratch: &Path,
) -> Result<std::result::Result<Stats, String>> {
    if args.process_calls == 0 {
        return Ok(Err("--process-calls 0".into()));
    }
    let exe = std::env::current_exe().context("cannot find the fabric binary")?;
    let text = arguments.to_string();
    let run = || {
        let mut cmd = Command::new(&exe);
        cmd.arg("--tools")
            .arg(&options.tools_dir)
            .arg("--policies")
            .arg(&options.policies_dir)
            .arg("--data")
            .arg(scratch.join("process-data"))
            .arg("--audit-key")
            .arg(scratch.join("key"))
            .args(["call", &args.tool, &text])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status()
    };
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 0..args.process_calls + args.process_calls.min(5) {
        let t = Instant::now();
        let status = run().context("cannot run fabric call")?;
        if i >= args.process_calls.min(5) {
            samples.push(t.elapsed());
        }
        if !status.success() {
            return Ok(Err(format!("fabric call exited with {status}")));
        }
    }
    Ok(Ok(Stats::of(&samples, started.elapsed())))
}

/// `wasmtime run --invoke 'FUNC(ARGS)' TOOL.wasm` per call, when there is a
/// wasmtime binary; the arguments are written in WAVE, in parameter order.
fn wasmtime_per_call(
    args: &BenchArgs,
    options: &Options,
    fabric: &Fabric,
    arguments: &Value,
) -> std::result::Result<Stats, String> {
    let binary = match &args.wasmtime {
        Some(path) => path.clone(),
        None => find_on_path("wasmtime").ok_or("no wasmtime binary on PATH (--wasmtime PATH)")?,
    };
    let (component, function) = args
        .tool
        .split_once('.')
        .ok_or("the tool name has no '.'")?;
    let info = fabric
        .tool(&Caller::Local, &args.tool)
        .ok_or("unknown tool")?;
    let invoke = wave_call(function, &info.params, arguments)?;
    let wasm = options.tools_dir.join(format!("{component}.wasm"));
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..args.process_calls {
        let t = Instant::now();
        let status = Command::new(&binary)
            .args(["run", "--invoke", &invoke])
            .arg(&wasm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !status.success() {
            return Err(format!(
                "wasmtime run --invoke {invoke:?} exited with {status}"
            ));
        }
        samples.push(t.elapsed());
    }
    Ok(Stats::of(&samples, started.elapsed()))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `func(arg, …)` in WAVE (the value syntax `wasmtime run --invoke`
/// takes), the arguments in the function's parameter order.
pub fn wave_call(
    function: &str,
    params: &[String],
    arguments: &Value,
) -> std::result::Result<String, String> {
    let values = params
        .iter()
        .map(|n| wave(arguments.get(n).unwrap_or(&Value::Null)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(format!("{function}({})", values.join(", ")))
}

fn wave(value: &Value) -> std::result::Result<String, String> {
    Ok(match value {
        Value::Null => "none".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).map_err(|e| e.to_string())?,
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(wave)
                .collect::<std::result::Result<Vec<_>, _>>()?
                .join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| Ok(format!("{k}: {}", wave(v)?)))
                .collect::<std::result::Result<Vec<_>, String>>()?
                .join(", ")
        ),
    })
}

/// What a pair of `Instant::now()` calls costs, nanoseconds (median of 1000
/// batches of 1000).
fn timer_overhead_ns() -> f64 {
    let mut batches: Vec<f64> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(Instant::now());
            }
            t.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

/// The process's peak resident memory (VmHWM), bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[allow(clippy::too_many_arguments)]
fn print_table(
    args: &BenchArgs,
    report: &Value,
    fresh: &Stats,
    reused: &std::result::Result<Stats, String>,
    process: &std::result::Result<Stats, String>,
    wasmtime: &std::result::Result<Stats, String>,
    phases: &[(&str, f64)],
) {
    println!(
        "{} — {} calls per mode after {} warm-up, concurrency {}, audit {}",
        args.tool,
        args.calls,
        args.warmup,
        args.concurrency,
        if args.no_audit {
            "off"
        } else {
            "durable (scratch log)"
        }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "mode (µs)", "p50", "p90", "p99", "p99.9", "max", "mean", "calls/s"
    );
    let row = |name: &str, m: std::result::Result<&Stats, &String>| match m {
        Ok(s) => println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
            s.p50, s.p90, s.p99, s.p999, s.max, s.mean, s.calls_per_s
        ),
        Err(why) => println!("{name:<34} skipped: {why}"),
    };
    row("fresh instance (Fabric)", Ok(fresh));
    row("reused instance (NOT isolated)", reused.as_ref());
    row("process per call (fabric call)", process.as_ref());
    row("wasmtime run per call", wasmtime.as_ref());
    println!("phases of a fresh call (µs)        p50");
    for (name, p50) in phases {
        println!("  {name:<32} {p50:>9.1}");
    }
    let r = &report["ratios"];
    for (key, label) in [
        ("fresh_over_reused_p50", "fresh / reused instance, p50"),
        ("process_over_fresh_p50", "process per call / fresh, p50"),
        ("wasmtime_over_fresh_p50", "wasmtime run / fresh, p50"),
    ] {
        if let Some(x) = r[key].as_f64() {
            println!("{label:<34} {x:>9.1}x");
        }
    }
    let per_run: Vec<String> = report["fresh_p50_us_per_repeat"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(Value::as_f64)
                .map(|us| format!("{us:.1}"))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "fresh p50 over {} runs (µs): {}; timer overhead {:.0} ns; peak RSS {} MiB",
        args.repeat,
        per_run.join(", "),
        report["timer_overhead_ns"].as_f64().unwrap_or(0.0),
        report["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
    );
}

/// The SVG: latency CDFs per mode (log x axis), and the fresh call's phases
/// (p50) as one stacked bar.
fn plot(
    path: &Path,
    tool: &str,
    series: &[(&str, &Vec<f64>)],
    phases: &[(&str, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(720);
    let lo = series
        .iter()
        .filter_map(|(_, s)| s.first().copied())
        .fold(f64::MAX, f64::min)
        .max(0.1);
    let hi = series
        .iter()
        .filter_map(|(_, s)| s.last().copied())
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{tool}: latency CDF"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction of calls")
        .draw()
        .map_err(|e| fail(&e))?;
    let colors = [BLUE, GREEN, RED, MAGENTA];
    for (i, (name, sorted)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let n = sorted.len().max(1) as f64;
        let step = (sorted.len() / 500).max(1);
        let points = sorted
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(k, v)| (*v, (k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    let total: f64 = phases.iter().map(|p| p.1).sum::<f64>().max(1e-9);
    let mut bar = ChartBuilder::on(&right)
        .caption("fresh call phases (p50)", ("sans-serif", 16))
        .margin(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..total * 1.05)
        .map_err(|e| fail(&e))?;
    bar.configure_mesh()
        .disable_x_mesh()
        .y_desc("µs")
        .draw()
        .map_err(|e| fail(&e))?;
    let palette = [BLUE, GREEN, RED, CYAN, MAGENTA, YELLOW];
    let mut bottom = 0.0;
    for (i, (name, us)) in phases.iter().enumerate() {
        let color = palette[i % palette.len()];
        let top = bottom + us;
        bar.draw_series([Rectangle::new([(0.2, bottom), (0.8, top)], color.filled())])
            .map_err(|e| fail(&e))?
            .label(format!("{name} {us:.1} µs"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        bottom = top;
    }
    bar.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("fabric-bench-{:016x}", rand_id()));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_follows_the_parameter_order() {
        let params = ["text", "n", "tags", "opt"].map(String::from);
        let args = json!({"n": 3, "text": "a \"q\"", "tags": ["x"], "opt": null});
        assert_eq!(
            wave_call("f", &params, &args).unwrap(),
            r#"f("a \"q\"", 3, ["x"], none)"#
        );
    }

    #[test]
    fn quantiles_of_sorted_samples() {
        let s = Stats::of(
            &(1..=100).map(Duration::from_micros).collect::<Vec<_>>(),
            Duration::from_secs(1),
        );
        assert_eq!((s.p50, s.p99, s.max), (51.0, 100.0, 100.0));
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
    }
}
