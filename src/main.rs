//! `fabric`: the command-line edge of Fabric.
//!
//! Parses arguments, opens a [`Fabric`] and prints what it returns. Exit
//! codes: 0 when a call's outcome is `ok`, 1 for any other outcome of a call
//! that ran, 2 for usage errors, invalid arguments and unknown tools.

mod audit_cmd;
mod bench_cmd;
mod docs_cmd;
mod guard_cmd;
mod new_cmd;
mod otel;
mod policy_cmd;
mod serve_cmd;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fabric_host::{Call, CallError, Caller, Fabric, HostConfig, Options, Outcome};
use serde_json::{json, Value};

/// Exit code for a usage error: bad flags, bad JSON, unknown tool, invalid arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code for a call that ran and did not end `ok`.
const EXIT_NOT_OK: u8 = 1;
/// How long the CLI waits, after its call has ended, for threads still
/// blocked in the host before it exits anyway.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serverless tool execution for AI agents: every tool call a fresh, sandboxed WebAssembly component.
#[derive(Parser)]
#[command(name = "fabric", version)]
struct Cli {
    /// Directory of tool components (NAME.wasm).
    #[arg(
        long,
        global = true,
        env = "FABRIC_TOOLS",
        default_value = "build/tools"
    )]
    tools: PathBuf,
    /// Directory of tool policies (NAME.toml). It must exist; an empty one
    /// gives every tool the default policy.
    #[arg(
        long,
        global = true,
        env = "FABRIC_POLICIES",
        default_value = "policies"
    )]
    policies: PathBuf,
    /// State directory: compiled-code cache and the audit log.
    #[arg(long, global = true, env = "FABRIC_DATA", default_value = ".fabric")]
    data: PathBuf,
    /// Key that signs audit checkpoints, kept apart from --data; created on
    /// first use, with its verifier key beside it (FILE.pub).
    /// [default: ~/.config/fabric/audit.key]
    #[arg(long, global = true, env = "FABRIC_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
    /// Host configuration (TOML): instance slots, calls admitted at once,
    /// largest component, the maxima policies may grant. [default: built-in]
    #[arg(long, global = true, env = "FABRIC_HOST_CONFIG")]
    host_config: Option<PathBuf>,
    /// Export call spans to this OTLP/HTTP collector (e.g.
    /// http://localhost:4318). OTEL_EXPORTER_OTLP_ENDPOINT does the same;
    /// OTEL_SERVICE_NAME and OTEL_TRACES_SAMPLER are honoured. [default: no export]
    #[arg(long, global = true, value_name = "URL")]
    otlp: Option<String>,
    /// Log lines on stderr: text, or JSON lines carrying each call's
    /// trace_id. Filter with FABRIC_LOG or RUST_LOG (e.g. info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: otel::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Measure the default guard (its rules and its learned detector) on labelled outputs: JSON
    /// lines of {"text": …, "injected": bool}.
    /// Several files (a development part and a validation part) are reported side by side.
    Eval {
        /// The labelled sets (e.g. tests/data/guard/dev.jsonl tests/data/guard/validation.jsonl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also list the injected cases missed and the benign cases caught
        /// (line number, `source` when the case has one, and rules hit). A
        /// file whose name starts with `validation` is held out: only its
        /// figures are shown, unless --show-validation-errors.
        #[arg(long)]
        show_errors: bool,
        /// List the errors of held-out (validation) files too: looking at
        /// them while tuning makes their figures flatter the rules.
        #[arg(long)]
        show_validation_errors: bool,
        /// Print the figures as JSON, one object per file and line: file,
        /// injected, benign, detected, false_positives, detection_rate,
        /// false_positive_rate, rules.
        #[arg(long)]
        json: bool,
        /// Let the learned detector reject whatever its window's length, as
        /// a policy's `[guard.actions] "model.injection" = "reject"` does (by
        /// default a window of fewer than 24 words only flags, and flags do
        /// not count as detections).
        #[arg(long)]
        model_rejects: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// List the tools with their descriptions and JSON Schemas.
    Tools {
        /// Print the list as JSON (name, description, input_schema, output_schema).
        #[arg(long)]
        json: bool,
    },
    /// Run one tool call through the whole pipeline and print its output.
    Call {
        /// The tool, NAME.FUNCTION (e.g. text.echo).
        tool: String,
        /// The arguments as a JSON object, or - to read them from stdin. Default: {}.
        args: Option<String>,
        /// Print the whole result object as JSON instead of just the output.
        #[arg(long)]
        json: bool,
        /// Make the call this many times (a load generator): each result is
        /// printed as one JSON line as it completes; exit 0 only if all are
        /// ok, 2 (and no more calls) if the arguments or the tool are refused.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        repeat: u64,
        /// With --repeat: how many calls run at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
    },
    /// Verify, export, tail or show the audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The output guard.
    #[command(subcommand)]
    Guard(GuardCommand),
    /// Serve the tools over HTTP (REST at /v1, MCP at /mcp) to agents.
    Serve(serve_cmd::ServeArgs),
    /// Manage the callers file: who may call which tools, with which token.
    #[command(subcommand)]
    Caller(serve_cmd::CallerCommand),
    /// Measure what a call of one tool costs: a fresh instance per call
    /// through the whole pipeline, beside a reused instance and a process per
    /// call; percentiles, phases, memory, an optional SVG plot.
    Bench(bench_cmd::BenchArgs),
    /// Compile every tool component now, into the compiled-code cache under
    /// --data that `call` and `serve` share, so that no first call waits for
    /// a compiler. Lists each component; exit 1 if any fails, with why.
    Precompile,
    /// Scaffold a new tool (WIT world, source, policy) that builds with
    /// `scripts/build-tools NAME` and runs with no edits.
    New(new_cmd::NewArgs),
    /// Tool descriptions: embed WIT doc comments into a component.
    #[command(subcommand)]
    Docs(docs_cmd::DocsCommand),
    /// Check tool policies without running anything.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_pipe();
    }
    otel::init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let exporter = otel::exporter(cli.otlp.as_deref())?;
    let code = run_with(cli, exporter.as_ref().map(|(_, t)| t.clone()));
    if let Some((queue, _)) = exporter {
        // Sends the spans still queued.
        queue.shutdown();
    }
    code
}

/// Lets a closed stdout (`fabric call … | head -1`) end the process quietly,
/// as it ends other Unix tools, instead of a panic in `println!`. Not for
/// `serve`, which must outlive any one reader.
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default disposition of SIGPIPE (Rust's runtime
    // sets it to ignored) before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Instance slots of the pool a one-shot `fabric call` makes.
const ONE_CALL_INSTANCES: u32 = 4;

fn run_with(cli: Cli, telemetry: Option<fabric_host::Telemetry>) -> Result<ExitCode> {
    let audit_key = cli.audit_key.or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/fabric/audit.key"))
    });
    let host = match &cli.host_config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let policies = cli.policies.clone();
    let mut options = Options::new(cli.tools, cli.policies);
    options.data_dir = Some(cli.data.clone());
    options.audit_key = audit_key.clone();
    options.host = host;
    options.telemetry = telemetry.unwrap_or_default();
    // Only a server has callers with budgets, and it should find a store it
    // cannot open before it takes a call; every other command leaves the
    // store closed unless a budget is asked for.
    options.budgets_on_first_use = !matches!(cli.command, Command::Serve(_));
    match cli.command {
        Command::Audit(command) => audit_cmd::run(command, &cli.data, audit_key.as_deref()),
        Command::Guard(GuardCommand::Eval {
            files,
            show_errors,
            show_validation_errors,
            json,
            model_rejects,
        }) => guard_cmd::eval(
            &files,
            show_errors,
            show_validation_errors,
            json,
            model_rejects,
        ),
        Command::Caller(command) => serve_cmd::caller(command, &cli.data),
        Command::Bench(args) => bench_cmd::bench(args, &options),
        Command::Policy(command) => {
            policy_cmd::run(command, &policies, &options.tools_dir, &options.host.maxima)
        }
        Command::Serve(args) => serve_cmd::serve(args, &cli.data, || open(&options)),
        Command::Precompile => precompile(&open(&options)?),
        Command::New(args) => new_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Docs(command) => docs_cmd::run(command).map(|()| ExitCode::SUCCESS),
        Command::Tools { json } => {
            let fabric = open(&options)?;
            report_problems(&fabric);
            list_tools(&fabric, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            tool,
            args,
            json: _,
            repeat,
            concurrency,
        } if repeat > 1 => {
            let arguments = read_arguments(args.as_deref())?;
            let fabric = open(&options)?;
            load(fabric, tool, arguments, repeat, concurrency.max(1))
        }
        Command::Call {
            tool, args, json, ..
        } => {
            let arguments = read_arguments(args.as_deref())?;
            // One call needs one component's share of the pool, and a
            // Python tool's 14 core instances are that of two slots: a pool
            // of 128 costs a one-shot process about 10 ms to map and unmap.
            // (The pool is kept, not replaced by allocation on demand, so
            // that a component is accepted or refused the same way here
            // and in a server.)
            options.host.instances = options.host.instances.min(ONE_CALL_INSTANCES);
            options.host.max_in_flight = options.host.max_in_flight.min(ONE_CALL_INSTANCES);
            let fabric = open(&options)?;
            // One call needs no worker threads: it runs on this one.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let call = Call::new(Caller::Local, tool, arguments);
            let result = runtime.block_on(fabric.call(call));
            // A guest blocked in the host (a hung network filesystem) must
            // not keep the process from exiting once the call has ended.
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
            let result = match result {
                Ok(result) => result,
                Err(e @ CallError::HostFault { .. }) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EXIT_NOT_OK));
                }
                Err(e) => return Err(e.into()),
            };
            if result.outcome == Outcome::UnknownTool {
                report_problems(&fabric);
                eprintln!("hint: `fabric tools` lists the tools (from --tools DIR)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.outcome == Outcome::Ok {
                match &result.output {
                    Value::String(s) => println!("{s}"),
                    other => println!("{}", serde_json::to_string_pretty(other)?),
                }
            }
            if result.outcome != Outcome::Ok && !json {
                let message = result
                    .error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or_default();
                // One line, whatever the tool wrote (a trap's message
                // quotes the tool's panic, line breaks and all); a tool
                // error's structured detail follows on the same line.
                let detail = result
                    .error
                    .as_ref()
                    .map(|e| &e.detail)
                    .filter(|d| result.outcome == Outcome::ToolError && !d.is_string())
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default();
                let outcome = result.outcome.as_str();
                eprintln!("error: {outcome}: {}{detail}", one_line(message));
            }
            Ok(ExitCode::from(exit_code(result.outcome)))
        }
    }
}

/// `fabric call --repeat N --concurrency C`: N calls, C at a time, each
/// result printed as a JSON line as soon as it is answered.
fn load(
    fabric: Fabric,
    tool: String,
    arguments: Value,
    repeat: u64,
    concurrency: u64,
) -> Result<ExitCode> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::Arc;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let fabric = Arc::new(fabric);
    let next = Arc::new(AtomicU64::new(0));
    // The exit code: the worst of the calls' (2 for arguments or a tool
    // that no call can succeed with: then the remaining calls are not made).
    let code = Arc::new(AtomicU8::new(0));
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (fabric, next, code) = (fabric.clone(), next.clone(), code.clone());
            let (tool, arguments) = (tool.clone(), arguments.clone());
            workers.push(tokio::spawn(async move {
                while code.load(Ordering::Relaxed) != EXIT_USAGE
                    && next.fetch_add(1, Ordering::Relaxed) < repeat
                {
                    let call = Call::new(Caller::Local, tool.clone(), arguments.clone());
                    let result = fabric.call(call).await?;
                    code.fetch_max(exit_code(result.outcome), Ordering::Relaxed);
                    let line = serde_json::to_string(&result)?;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                anyhow::Ok(())
            }));
        }
        for w in workers {
            w.await.context("a call worker panicked")??;
        }
        anyhow::Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let code = code.load(Ordering::Relaxed);
    let made = next.load(Ordering::Relaxed).min(repeat);
    if code == EXIT_USAGE {
        eprintln!(
            "stopped after {made} of {repeat} calls: the arguments or the tool name are refused, so no call could succeed"
        );
    } else {
        eprintln!(
            "{repeat} calls in {secs:.2} s: {:.0} calls/s (concurrency {concurrency})",
            repeat as f64 / secs
        );
    }
    Ok(ExitCode::from(code))
}

/// The exit code of a call that ended with `outcome`: 0 `ok`, 2 refused
/// arguments or an unknown tool (as a usage error), 1 any other.
fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Ok => 0,
        Outcome::InvalidArguments | Outcome::UnknownTool => EXIT_USAGE,
        _ => EXIT_NOT_OK,
    }
}

pub(crate) fn open(options: &Options) -> Result<Fabric> {
    use fabric_host::{OpenError, RegistryError};
    Fabric::open(options).map_err(|e| match e {
        OpenError::Registry(e @ RegistryError::Tools { .. }) => anyhow::anyhow!(
            "{e} (build the bundled tools with scripts/build-tools, or pass --tools DIR)"
        ),
        OpenError::Registry(e @ RegistryError::Policies { .. }) => {
            anyhow::anyhow!("{e} (--policies DIR)")
        }
        e => e.into(),
    })
}

/// `fabric precompile`: compiles every component, one line per component.
fn precompile(fabric: &Fabric) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let started = std::time::Instant::now();
    let done = runtime.block_on(fabric.precompile());
    let mut failed = 0;
    for (file, outcome) in &done {
        match outcome {
            Ok(()) => println!("ok      {}", file.display()),
            Err(reason) => {
                failed += 1;
                println!("failed  {}: {reason}", file.display());
            }
        }
    }
    eprintln!(
        "{} components compiled or found in the cache, {failed} failed, in {:.1} s",
        done.len() - failed,
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_OK)
    })
}

/// `text` on one line: line breaks and other control characters escaped
/// as in a Rust string (`\n`).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn report_problems(fabric: &Fabric) {
    for problem in fabric.problems() {
        eprintln!("warning: {problem}");
    }
}

pub(crate) fn read_arguments(args: Option<&str>) -> Result<Value> {
    let text = match args {
        None => return Ok(json!({})),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the arguments from stdin")?;
            text
        }
        Some(text) => text.to_string(),
    };
    serde_json::from_str::<fabric_host::schema::UniqueKeys>(&text)
        .map(|v| v.0)
        .map_err(|e| {
        anyhow::anyhow!("the arguments are not valid JSON ({e}); pass one JSON object, e.g. '{{\"text\": \"hi\"}}'")
    })
}

fn list_tools(fabric: &Fabric, as_json: bool) -> Result<()> {
    let tools = fabric.tools(&Caller::Local);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&tools)?);
        return Ok(());
    }
    for t in tools {
        println!("{}", t.name);
        if let Some(d) = &t.description {
            for line in d.lines() {
                println!("    {line}");
            }
        }
        match &t.reason {
            None => {
                println!("    input:  {}", serde_json::to_string(&t.input_schema)?);
                println!("    output: {}", serde_json::to_string(&t.output_schema)?);
            }
            Some(reason) => println!("    unavailable: {reason}"),
        }
        println!();
    }
    Ok(())
}
