//! `fabric audit …`: verify, export, tail and show the audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fabric_host::audit::error::chain;
use fabric_host::audit::log::Stored;
use fabric_host::audit::{
    self, AuditError, AuditLog, AuditOptions, Checkpoint, Record, Source, VerifyingKey,
};

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
        /// The verifier key of the checkpoint signer (default: the --audit-key path with .pub appended).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Verify an export (JSON lines) instead of the log under --data.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Check the chain alone, without any checkpoint: the head stays
        /// unverified (a cut-off tail or a re-hashed history would pass).
        #[arg(long, conflicts_with_all = ["checkpoint", "pubkey"])]
        no_checkpoint: bool,
    },
    /// Continue a log whose records were removed or replaced (the writer
    /// refuses it): keeps what remains, appends a record of outcome
    /// `recovered` saying what was lost, and signs the new head.
    Recover,
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
    /// Only calls at or after: RFC 3339 (2026-11-23T10:00:00Z,
    /// 2026-11-23T12:00:00+02:00) or an age (10m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Only calls before: RFC 3339 or an age.
    #[arg(long)]
    until: Option<String>,
    /// Only the calls of this trace (its 32-hex-digit W3C trace id, as in a
    /// span, a `traceparent` or a result's `trace.trace_id`).
    #[arg(long, value_name = "TRACE_ID")]
    trace: Option<String>,
}

struct Bounds {
    since: Option<u64>,
    until: Option<u64>,
}

impl Filter {
    fn bounds(&self) -> Result<Bounds> {
        if let Some(t) = &self.trace {
            if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("--trace {t:?}: a trace id is 32 hexadecimal digits");
            }
        }
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
            && self.trace.as_ref().is_none_or(|t| {
                r.trace_id
                    .as_ref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(t))
            })
    }
}

/// Microseconds since the epoch from RFC 3339 (`Z` or a `±HH:MM` offset)
/// or an age before now.
fn parse_time(text: &str) -> Result<u64> {
    let at = match parse_rfc3339(text) {
        Some(t) => t,
        None => {
            let age = humantime::parse_duration(text).with_context(|| {
                format!(
                    "{text:?} is neither an RFC 3339 time (2026-11-23T10:00:00Z, \
                     2026-11-23T12:00:00+02:00) nor an age like 10m"
                )
            })?;
            // An age older than the clock can count back is "from the
            // start", as one before the epoch is.
            SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    };
    Ok(at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64))
}

/// An RFC 3339 time: what `humantime` reads (UTC: `Z`, or no suffix), or
/// the same followed by a numeric offset `+HH:MM` / `-HH:MM` (local time
/// that far ahead of or behind UTC). A time before the epoch is the epoch.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let utc = |t: &str| humantime::parse_rfc3339_weak(t).ok();
    let bytes = text.as_bytes();
    // `±HH:MM` after the seconds (or their fraction): the character before
    // the sign is a digit, and the date's own `-` are further left.
    let offset = bytes.len().checked_sub(6).filter(|&at| {
        at >= 19
            && matches!(bytes[at], b'+' | b'-')
            && bytes[at - 1].is_ascii_digit()
            && bytes[at + 3] == b':'
            && [1, 2, 4, 5].iter().all(|&i| bytes[at + i].is_ascii_digit())
    });
    let Some(at) = offset else {
        return match text.strip_suffix('z') {
            Some(rest) => utc(&format!("{rest}Z")),
            None => utc(text),
        };
    };
    let number =
        |from: usize| u64::from(bytes[from] - b'0') * 10 + u64::from(bytes[from + 1] - b'0');
    let (hours, minutes) = (number(at + 1), number(at + 4));
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = utc(&format!("{}Z", &text[..at]))?;
    let shift = Duration::from_secs((hours * 60 + minutes) * 60);
    // Local time ahead of UTC (`+`) is that much later than the same
    // reading in UTC: subtract it to get UTC.
    Some(if bytes[at] == b'+' {
        local.checked_sub(shift).unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        local.checked_add(shift)?
    })
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
            no_checkpoint,
        } => verify(
            &dir,
            from,
            CheckpointChoice {
                checkpoint,
                pubkey,
                skip: no_checkpoint,
            },
            file,
            key,
        ),
        AuditCommand::Recover => recover(&dir, key),
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
            if follow {
                // Read the mirror once, then only what is appended to it.
                let mut log = audit::Follower::open(&dir.join("log.jsonl"))?;
                loop {
                    for record in readable(log.read_new().context("cannot follow log.jsonl")?)? {
                        if record.seq < next {
                            continue;
                        }
                        next = record.seq + 1;
                        if filter.keeps(&bounds, &record) {
                            println!("{}", serde_json::to_string(&record)?);
                        }
                    }
                    std::io::stdout().flush()?;
                    std::thread::sleep(Duration::from_millis(200));
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

/// Which checkpoint `verify` checks the log against.
struct CheckpointChoice {
    /// One the auditor kept (default: the log's own).
    checkpoint: Option<PathBuf>,
    /// The signer's verifier key (default: the audit key's `.pub`).
    pubkey: Option<PathBuf>,
    /// `--no-checkpoint`.
    skip: bool,
}

fn verify(
    dir: &Path,
    from: u64,
    choice: CheckpointChoice,
    file: Option<PathBuf>,
    key: Option<&Path>,
) -> Result<ExitCode> {
    // The checkpoint is read before the records. A live writer signs one
    // only once the records it covers are synced to log.jsonl, so records
    // read after it include them all; read the other way round, a
    // checkpoint signed in between covers records that were not read, and
    // the healthy log reads as truncated.
    let note = match (&choice.checkpoint, choice.skip, &file) {
        (_, true, _) => None,
        (Some(path), false, _) => Some((path.clone(), read_note(path)?)),
        (None, false, Some(_)) => None,
        (None, false, None) => {
            let path = dir.join("checkpoint");
            match std::fs::read_to_string(&path) {
                Ok(text) => Some((path, text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
    };
    let mut mirror_ahead = None;
    let (source, items, head) = match &file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            ("export", audit::read_export(f)?, None)
        }
        None => match audit::read_log(dir, true) {
            Ok(log) if log.source == Source::Store => {
                // The mirror is written after the store is synced: more
                // records there mean the store lost some.
                let held = log.items.len() as u64;
                mirror_ahead = log.mirrored.filter(|&m| m > held);
                ("store", log.items, log.head)
            }
            Ok(log) => ("live mirror", log.items, log.head),
            Err(e @ AuditError::Missing { .. }) => return Err(e.into()),
            Err(e) => {
                println!("FAIL: {}", chain(&e));
                return Ok(ExitCode::from(1));
            }
        },
    };
    let Some((path, note)) = note else {
        let why = if choice.skip {
            "--no-checkpoint".to_string()
        } else if file.is_some() {
            "no checkpoint: --file without --checkpoint".to_string()
        } else {
            format!(
                "no checkpoint: {} is absent",
                dir.join("checkpoint").display()
            )
        };
        eprintln!(
            "warning: {why}: the head is UNVERIFIED; a cut-off tail or a history rewritten \
             and re-hashed would pass (check against a checkpoint you kept: --checkpoint FILE)"
        );
        return finish_verify(
            &items,
            from,
            head,
            None,
            &format!("{source}; head unverified: no checkpoint checked"),
            mirror_ahead,
        );
    };
    let pubkey = choice
        .pubkey
        .or_else(|| key.map(audit::public_key_path))
        .filter(|p| p.exists());
    let Some(pubkey) = pubkey else {
        println!(
            "FAIL: {} is present but its verifier key is not: pass --pubkey FILE (the .pub beside the \
             signing key), or --no-checkpoint to check the chain alone, leaving the head unverified",
            path.display()
        );
        return Ok(ExitCode::from(1));
    };
    let vk = VerifyingKey::parse(
        &std::fs::read_to_string(&pubkey)
            .with_context(|| format!("cannot read {}", pubkey.display()))?,
    )
    .with_context(|| format!("{}", pubkey.display()))?;
    match Checkpoint::verify(&note, &vk) {
        Ok(cp) => finish_verify(&items, from, head, Some(cp), source, mirror_ahead),
        Err(e) => {
            println!("FAIL: {}: signature invalid ({e})", path.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn read_note(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `fabric audit recover`.
fn recover(dir: &Path, key: Option<&Path>) -> Result<ExitCode> {
    let options = AuditOptions {
        key: key.map(Path::to_path_buf),
        ..AuditOptions::new(dir)
    };
    match AuditLog::recover(&options)? {
        None => {
            println!("nothing to recover: the records agree with the stored head and checkpoint")
        }
        Some(r) => {
            println!(
                "recovered: {}; record {} ({}) documents it",
                r.divergence.problem, r.record.seq, r.record.hash
            );
            if r.replayed > 0 {
                println!(
                    "put back into the store from log.jsonl: records {}-{}",
                    r.divergence.remain,
                    r.divergence.remain + r.replayed - 1
                );
            }
            if let Some(kept) = &r.kept {
                println!(
                    "lines of log.jsonl the store does not hold were moved to {}",
                    kept.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn finish_verify(
    items: &[Stored],
    from: u64,
    head: Option<(u64, [u8; 32])>,
    checkpoint: Option<Checkpoint>,
    source: &str,
    mirror_ahead: Option<u64>,
) -> Result<ExitCode> {
    match (audit::verify(items, from, head, checkpoint), mirror_ahead) {
        (Ok(v), Some(mirrored)) => {
            println!(
                "FAIL: first bad record {}: truncated: the audit store holds {} records but log.jsonl holds {}: \
                 the store lost records (it is corrupt or was cut) ({source})",
                v.count, v.count, mirrored
            );
            Ok(ExitCode::from(1))
        }
        (Ok(v), None) => {
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
        (Err(finding), _) => {
            println!(
                "FAIL: first bad record {}: {}: {} ({source})",
                finding.seq, finding.kind, finding.detail
            );
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> u64 {
        parse_time(text).unwrap_or_else(|e| panic!("{text}: {e:#}"))
    }

    #[test]
    fn rfc3339_times_with_offsets_are_the_same_instant_in_utc() {
        // 2020-01-01T00:00:00Z.
        let midnight = 1_577_836_800_000_000;
        assert_eq!(us("2020-01-01T00:00:00Z"), midnight);
        assert_eq!(us("2020-01-01T00:00:00z"), midnight);
        assert_eq!(us("2020-01-01T00:00:00"), midnight);
        assert_eq!(us("2020-01-01T02:00:00+02:00"), midnight);
        assert_eq!(us("2020-01-01T00:00:00+02:00"), midnight - 7_200_000_000);
        assert_eq!(us("2019-12-31T18:30:00-05:30"), midnight);
        assert_eq!(us("2020-01-01T00:00:00+00:00"), midnight);
        assert_eq!(us("2020-01-01T00:00:00-00:00"), midnight);
        assert_eq!(us("2020-01-01T05:45:00.250+05:45"), midnight + 250_000);
        assert_eq!(us("2020-01-01 01:00:00+01:00"), midnight);
        // Before the epoch once shifted: the start.
        assert_eq!(us("1970-01-01T00:30:00+01:00"), 0);
        for bad in [
            "2020-01-01T00:00:00+24:00",
            "2020-01-01T00:00:00+02:60",
            "2020-01-01T00:00:00+0200",
            "2020-01-01T00:00:00+02",
            "2020-01-01T00:00:00Z+02:00",
            "2020-13-01T00:00:00+02:00",
            "2020-01-01+02:00",
            "tomorrow",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn ages_count_back_from_now() {
        let hour_ago = us("1h");
        let now = us("0s");
        assert!(now - hour_ago >= 3_600_000_000 && now - hour_ago < 3_610_000_000);
    }
}
