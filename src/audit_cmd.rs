//! `fabric audit …`: verify, export, tail and show the audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fabric_host::audit::log::Stored;
use fabric_host::audit::{self, Checkpoint, Record, Source, VerifyingKey};

/// The audit subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the chain: prints OK with the count and head, or the first bad record and exits 1.
    Verify {
        /// Skip checks of records before this sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// A signed checkpoint you kept (default: the log's own latest one, if any).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The verifier key of the checkpoint signer (default: AUDIT_KEY.pub).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Verify an export (JSON lines) instead of the log under --data.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print records as JSON lines, with their hashes.
    Export(Filter),
    /// Print the last records; with -f, keep printing new ones.
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Follow the log as calls are recorded.
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        filter: Filter,
    },
    /// Print one record.
    Show {
        /// Its sequence number.
        seq: u64,
    },
}

/// Which records to print.
#[derive(Args, Default)]
pub struct Filter {
    /// Only this tool (NAME.FUNCTION).
    #[arg(long)]
    tool: Option<String>,
    /// Only this caller.
    #[arg(long)]
    caller: Option<String>,
    /// Only this outcome (ok, tool_error, …).
    #[arg(long)]
    outcome: Option<String>,
    /// Only calls at or after: RFC 3339 (2026-11-23T10:00:00Z) or an age (10m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Only calls before: RFC 3339 or an age.
    #[arg(long)]
    until: Option<String>,
}

struct Bounds {
    since: Option<u64>,
    until: Option<u64>,
}

impl Filter {
    fn bounds(&self) -> Result<Bounds> {
        Ok(Bounds {
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
        })
    }

    fn keeps(&self, b: &Bounds, r: &Record) -> bool {
        self.tool.as_ref().is_none_or(|t| *t == r.tool)
            && self
                .caller
                .as_ref()
                .is_none_or(|c| Some(c) == r.caller.as_ref())
            && self.outcome.as_ref().is_none_or(|o| *o == r.outcome)
            && b.since.is_none_or(|s| r.time_unix_us >= s)
            && b.until.is_none_or(|u| r.time_unix_us < u)
    }
}

/// Microseconds since the epoch from RFC 3339 or an age before now.
fn parse_time(text: &str) -> Result<u64> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(t) => t,
        Err(_) => {
            let age = humantime::parse_duration(text).with_context(|| {
                format!("{text:?} is neither an RFC 3339 time nor an age like 10m")
            })?;
            SystemTime::now() - age
        }
    };
    Ok(at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64))
}

/// Runs an audit subcommand against `DATA/audit`.
pub fn run(command: AuditCommand, data: &Path, key: Option<&Path>) -> Result<ExitCode> {
    let dir = data.join("audit");
    match command {
        AuditCommand::Verify {
            from,
            checkpoint,
            pubkey,
            file,
        } => verify(&dir, from, checkpoint, pubkey, file, key),
        AuditCommand::Export(filter) => {
            let bounds = filter.bounds()?;
            let (_, items, _) = audit::read_records(&dir)?;
            for record in readable(items)? {
                if filter.keeps(&bounds, &record) {
                    println!("{}", serde_json::to_string(&record)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail {
            lines,
            follow,
            filter,
        } => {
            let bounds = filter.bounds()?;
            let (_, items, _) = audit::read_records(&dir)?;
            let records = readable(items)?;
            let mut next = records.last().map_or(0, |r| r.seq + 1);
            let kept: Vec<&Record> = records
                .iter()
                .filter(|r| filter.keeps(&bounds, r))
                .collect();
            for r in &kept[kept.len().saturating_sub(lines)..] {
                println!("{}", serde_json::to_string(r)?);
            }
            while follow {
                std::thread::sleep(Duration::from_millis(200));
                let file = std::fs::File::open(dir.join("log.jsonl"))
                    .context("cannot follow log.jsonl")?;
                let from = next;
                for record in readable(audit::read_jsonl(file)?)?
                    .into_iter()
                    .filter(|r| r.seq >= from)
                {
                    next = record.seq + 1;
                    if filter.keeps(&bounds, &record) {
                        println!("{}", serde_json::to_string(&record)?);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { seq } => {
            let (_, items, _) = audit::read_records(&dir)?;
            match readable(items)?.into_iter().find(|r| r.seq == seq) {
                Some(record) => {
                    println!("{}", serde_json::to_string_pretty(&record)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!("no record {seq} in the audit log"),
            }
        }
    }
}

fn readable(items: Vec<Stored>) -> Result<Vec<Record>> {
    items
        .into_iter()
        .map(|(seq, r)| {
            r.map_err(|e| anyhow::anyhow!("record {seq}: {e} (run `fabric audit verify`)"))
        })
        .collect()
}

fn verify(
    dir: &Path,
    from: u64,
    checkpoint: Option<PathBuf>,
    pubkey: Option<PathBuf>,
    file: Option<PathBuf>,
    key: Option<&Path>,
) -> Result<ExitCode> {
    let (source, items, head) = match &file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            ("export", audit::read_jsonl(f)?, None)
        }
        None => {
            let (source, items, head) = audit::read_records(dir)?;
            (
                if source == Source::Store {
                    "store"
                } else {
                    "live mirror"
                },
                items,
                head,
            )
        }
    };
    let pubkey = pubkey.or_else(|| key.map(|k| k.with_extension("pub")));
    let checkpoint_path = checkpoint
        .clone()
        .or_else(|| Some(dir.join("checkpoint")).filter(|p| file.is_none() && p.exists()));
    let checkpoint = match checkpoint_path {
        None => None,
        Some(path) => {
            let Some(pubkey) = pubkey.filter(|p| p.exists()) else {
                if checkpoint.is_some() {
                    bail!("--checkpoint needs the signer's verifier key: pass --pubkey FILE");
                }
                return finish_verify(&items, from, head, None, source);
            };
            let vk = VerifyingKey::parse(
                &std::fs::read_to_string(&pubkey)
                    .with_context(|| format!("cannot read {}", pubkey.display()))?,
            )
            .with_context(|| format!("{}", pubkey.display()))?;
            let note = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match Checkpoint::verify(&note, &vk) {
                Ok(cp) => Some(cp),
                Err(e) => {
                    println!("FAIL: {}: signature invalid ({e})", path.display());
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    finish_verify(&items, from, head, checkpoint, source)
}

fn finish_verify(
    items: &[Stored],
    from: u64,
    head: Option<(u64, [u8; 32])>,
    checkpoint: Option<Checkpoint>,
    source: &str,
) -> Result<ExitCode> {
    match audit::verify(items, from, head, checkpoint) {
        Ok(v) => {
            let head = v
                .head
                .map(|h| format!(", head {} {h}", v.count - 1))
                .unwrap_or_default();
            let cp = checkpoint
                .map(|c| format!(", checkpoint of {} records matches", c.size))
                .unwrap_or_default();
            println!("OK: {} records{head}{cp} ({source})", v.count);
            Ok(ExitCode::SUCCESS)
        }
        Err(finding) => {
            println!(
                "FAIL: first bad record {}: {}: {} ({source})",
                finding.seq, finding.kind, finding.detail
            );
            Ok(ExitCode::from(1))
        }
    }
}
