//! `fabric serve` and `fabric caller`: the CLI edge of the server and of the
//! callers file.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fabric_host::budget::{caller_key, session_key, sessions_prefix, CounterStore, SledCounters};
use fabric_host::callers::{
    describe_budget, new_token, validate_name, BudgetSpec, CallerFile, CallerSpec, CallersSpec,
};
use fabric_host::policy::{parse_duration, parse_size_text};
use fabric_host::server::{self, Auth, ServeOptions};
use fabric_host::Fabric;

/// `fabric serve` flags.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Callers file (bearer token hashes and scopes). [default: DATA/callers.toml]
    #[arg(long)]
    callers: Option<PathBuf>,
    /// Run without callers: every request may call every tool. Loopback only.
    #[arg(long)]
    no_auth: bool,
    /// A browser origin allowed to reach this server, REST and MCP alike (repeatable; `*` allows any).
    #[arg(long = "allow-origin", value_name = "ORIGIN", num_args = 1..)]
    allow_origin: Vec<String>,
    /// Largest request body.
    #[arg(long, default_value = "4 MiB")]
    max_body: String,
    /// How long open requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "30s")]
    shutdown_grace: String,
    /// How long a client may take to send a request's headers, or its body.
    #[arg(long, default_value = "10s")]
    client_timeout: String,
    /// How long a tool may go without a call before the pages of its
    /// compiled code are given back (the next call maps them in again);
    /// `0s` keeps them.
    #[arg(long, default_value = "30s")]
    release_idle: String,
}

/// `fabric caller …`.
#[derive(Subcommand)]
pub enum CallerCommand {
    /// Add a caller; prints its new bearer token (the only stdout line).
    Add {
        /// The caller's name, recorded in audit records.
        name: String,
        /// Tool names and globs it may call (e.g. 'text.*').
        #[arg(long, required = true, num_args = 1..)]
        scope: Vec<String>,
        /// Per-caller budget, KEY=VALUE: calls, fuel, wall, output, per_minute.
        #[arg(long, num_args = 1..)]
        budget: Vec<String>,
        /// Per-session budget, KEY=VALUE (same keys).
        #[arg(long, num_args = 1..)]
        session_budget: Vec<String>,
        /// Calls of this caller running at once.
        #[arg(long)]
        max_in_flight: Option<u32>,
        /// Callers file. [default: DATA/callers.toml]
        #[arg(long)]
        callers: Option<PathBuf>,
    },
    /// List the callers: name and scope.
    List {
        /// Callers file. [default: DATA/callers.toml]
        #[arg(long)]
        callers: Option<PathBuf>,
    },
    /// Show one caller (never its token, which is not kept).
    Show {
        /// The caller's name.
        name: String,
        /// Callers file. [default: DATA/callers.toml]
        #[arg(long)]
        callers: Option<PathBuf>,
    },
    /// Forget what a caller has spent (all of it, or one session's).
    Reset {
        /// The caller's name.
        name: String,
        /// Reset only this session's budget.
        #[arg(long)]
        session: Option<String>,
        /// Callers file. [default: DATA/callers.toml]
        #[arg(long)]
        callers: Option<PathBuf>,
    },
    /// Remove a caller; its token stops working at once.
    Remove {
        /// The caller's name.
        name: String,
        /// Callers file. [default: DATA/callers.toml]
        #[arg(long)]
        callers: Option<PathBuf>,
    },
}

fn callers_path(given: Option<PathBuf>, data: &Path) -> PathBuf {
    given.unwrap_or_else(|| data.join("callers.toml"))
}

/// `fabric caller …`.
pub fn caller(command: CallerCommand, data: &Path) -> Result<ExitCode> {
    match command {
        CallerCommand::Add {
            name,
            scope,
            budget,
            session_budget,
            max_in_flight,
            callers,
        } => {
            let path = callers_path(callers, data);
            validate_name(&name).map_err(anyhow::Error::msg)?;
            let mut spec = if path.exists() {
                CallersSpec::read(&path)?
            } else {
                CallersSpec::default()
            };
            if spec.get(&name).is_some() {
                bail!(
                    "{}: a caller named {name:?} exists; remove it first (fabric caller remove {name})",
                    path.display()
                );
            }
            let budgets = |items: &[String], flag: &str| -> Result<BudgetSpec> {
                let mut b = BudgetSpec::default();
                for item in items {
                    b.set(item).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
                }
                Ok(b)
            };
            let (token, token_hash) = new_token();
            spec.callers.push(CallerSpec {
                name,
                token_hash,
                scope,
                max_in_flight,
                budget: budgets(&budget, "budget")?,
                session_budget: budgets(&session_budget, "session-budget")?,
            });
            spec.write(&path)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{token}")?;
            Ok(ExitCode::SUCCESS)
        }
        CallerCommand::List { callers } => {
            let spec = CallersSpec::read(&callers_path(callers, data))?;
            for c in &spec.callers {
                println!("{}\t{}", c.name, c.scope.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        CallerCommand::Show { name, callers } => {
            let path = callers_path(callers, data);
            let spec = CallersSpec::read(&path)?;
            let Some(c) = spec.get(&name) else {
                bail!(
                    "{}: no caller named {name:?} (fabric caller list)",
                    path.display()
                );
            };
            println!("name: {}", c.name);
            println!("scope: {}", c.scope.join(" "));
            println!("token_hash: {}", c.token_hash);
            if let Some(n) = c.max_in_flight {
                println!("max_in_flight: {n}");
            }
            for (label, b) in [("budget", &c.budget), ("session_budget", &c.session_budget)] {
                for (k, v) in describe_budget(b) {
                    println!("{label}.{k}: {v}");
                }
            }
            if !spec.defaults.budget.is_empty() || !spec.defaults.session_budget.is_empty() {
                println!(
                    "(defaults apply where a key is not set: see [defaults] in {})",
                    path.display()
                );
            }
            let store = SledCounters::open(&data.join("budgets"))?;
            let s = store.get(&caller_key(&c.name))?;
            println!("spent.calls: {}", s.calls);
            println!("spent.fuel: {}", s.fuel);
            println!("spent.wall: {:?}", Duration::from_micros(s.wall_us));
            println!("spent.output: {} bytes", s.output);
            println!("spent.this_minute: {}", s.minute_calls);
            Ok(ExitCode::SUCCESS)
        }
        CallerCommand::Reset {
            name,
            session,
            callers,
        } => {
            let path = callers_path(callers, data);
            let spec = CallersSpec::read(&path)?;
            if spec.get(&name).is_none() {
                bail!(
                    "{}: no caller named {name:?} (fabric caller list)",
                    path.display()
                );
            }
            let store = SledCounters::open(&data.join("budgets"))?;
            let n = match &session {
                Some(s) => store.reset(&session_key(&name, s))?,
                None => store.reset(&caller_key(&name))? + store.reset(&sessions_prefix(&name))?,
            };
            match session {
                Some(s) => eprintln!("reset session {s:?} of {name} ({n} counters)"),
                None => eprintln!("reset {name} and its sessions ({n} counters)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        CallerCommand::Remove { name, callers } => {
            let path = callers_path(callers, data);
            let mut spec = CallersSpec::read(&path)?;
            let before = spec.callers.len();
            spec.callers.retain(|c| c.name != name);
            if spec.callers.len() == before {
                bail!(
                    "{}: no caller named {name:?} (fabric caller list)",
                    path.display()
                );
            }
            spec.write(&path)?;
            eprintln!("removed {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fabric serve`: opens Fabric, then serves until SIGTERM or SIGINT.
pub fn serve(
    args: ServeArgs,
    data: &Path,
    open: impl FnOnce() -> Result<Fabric>,
) -> Result<ExitCode> {
    let auth = match (&args.callers, args.no_auth) {
        (Some(_), true) => bail!("--callers and --no-auth exclude each other: choose one"),
        (_, true) => {
            // Every request of a --no-auth server is the local operator:
            // letting every web page's scripts send them is no server.
            if args.allow_origin.iter().any(|o| o == "*") {
                bail!(
                    "--allow-origin '*' is refused with --no-auth: any web page could call the tools as you; name the origins, or add callers"
                );
            }
            if !args.listen.ip().is_loopback() {
                bail!(
                    "--no-auth is refused on {}, which is not a loopback address: \
                     add callers (fabric caller add NAME --scope GLOB) or listen on 127.0.0.1",
                    args.listen
                );
            }
            Auth::None
        }
        (given, false) => {
            let path = callers_path(given.clone(), data);
            if !path.exists() {
                bail!(
                    "no callers file at {}: add a caller (fabric caller add NAME --scope 'GLOB'), \
                     or run with --no-auth on a loopback address",
                    path.display()
                );
            }
            Auth::Callers(CallerFile::open(&path)?)
        }
    };
    let duration = |flag: &str, text: &str| {
        parse_duration(text).with_context(|| {
            format!("--{flag} {text:?} is not a duration: write e.g. \"10s\" or \"500ms\"")
        })
    };
    let options = ServeOptions {
        auth,
        allow_origins: args
            .allow_origin
            .iter()
            .map(|o| fabric_host::server::normalise_origin(o))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        max_body: parse_size_text(&args.max_body)
            .map_err(|e| anyhow::anyhow!("--max-body: {e}"))?,
        shutdown_grace: duration("shutdown-grace", &args.shutdown_grace)?,
        client_timeout: duration("client-timeout", &args.client_timeout)?,
        release_idle: Some(duration("release-idle", &args.release_idle)?).filter(|d| !d.is_zero()),
    };
    if options.client_timeout < Duration::from_millis(10) {
        bail!("--client-timeout must be at least 10ms");
    }
    let fabric = Arc::new(open()?);
    for problem in fabric.problems() {
        eprintln!("warning: {problem}");
    }
    // Calls running at once each hold descriptors (mounts, sockets,
    // connections): a low soft limit would fail them for the host's sake.
    if let Some(limit) = fabric_host::raise_open_file_limit() {
        tracing::debug!(limit, "open-file limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{local}")?;
            out.flush()?;
        }
        server::run(fabric.clone(), listener, options, shutdown_signal()).await?;
        // Calls are answered and audited: close the log (flush, sign the
        // head) and report a failure, once every connection let go of it.
        let mut fabric = fabric;
        for _ in 0..100 {
            match Arc::try_unwrap(fabric) {
                Ok(owned) => {
                    owned
                        .close()
                        .await
                        .context("closing the audit log at shutdown")?;
                    return anyhow::Ok(());
                }
                Err(shared) => fabric = shared,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!("connections still hold the runtime; the audit log closes when they end");
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("shutting down: finishing open requests");
}
