//! The append-only log: sled storage, group commit, a JSONL mirror for live
//! readers, and signed checkpoints.
//!
//! One writer thread owns the store. Calls hand it [`Entry`]s; it seals each
//! into the chain, writes the whole batch that queued up meanwhile, flushes
//! (fsync) once for the batch — group commit — and only then answers every
//! caller in it. So a call's result is never returned before its record is on
//! disk, and concurrent calls share the cost of the flush.
//!
//! sled locks its directory for one process. So that an auditor can verify
//! while a server or another call holds it, each batch is also appended to
//! `log.jsonl` (the export format) and synced before the answer; readers that
//! find the store locked read that file instead ([`read_records`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::checkpoint::{Checkpoint, SigningKey};
use crate::error::{store_err, AuditError};
use crate::record::{digest, Entry, Record, GENESIS};

/// Most records written per flush; more wait for the next one.
const MAX_BATCH: usize = 1024;
/// How long a writer waits for another process to release the store.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Sign a checkpoint after this many new records…
const CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// …or this long after the last one, whichever comes first.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// sled tree of records, keyed by big-endian sequence number.
const RECORDS: &str = "records";
/// sled key of the head (`seq+1` and hash of the last record), for truncation checks.
const HEAD_KEY: &[u8] = b"head";

/// Where a record went: its sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Sequence number.
    pub seq: u64,
    /// Hash, hex.
    pub hash: String,
}

/// How the log is opened.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The audit directory (`DATA/audit`).
    pub dir: PathBuf,
    /// The checkpoint signing key (`None`: checkpoints are not signed or written).
    pub key: Option<PathBuf>,
    /// Flush before answering (group commit). Off only for measurements.
    pub durable: bool,
}

enum Job {
    Append(Box<Entry>, oneshot::Sender<Result<Sealed, String>>),
    Stop,
}

/// The writer's handle.
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates) the log, waiting up to 10 s for another writer to
    /// release the store, and repairs the mirror after a crash.
    pub fn open(options: &AuditOptions) -> Result<AuditLog, AuditError> {
        let key = options
            .key
            .as_deref()
            .map(SigningKey::load_or_create)
            .transpose()?;
        let writer = Writer::open(options, key)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fabric-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| store_err(&options.dir, e))?;
        Ok(AuditLog {
            tx,
            thread: Some(thread),
        })
    }

    /// Appends an entry; returns once it is durable (when the log is).
    pub async fn append(&self, entry: Entry) -> Result<Sealed, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Append(Box::new(entry), reply))
            .map_err(|_| AuditError::Closed)?;
        match answer.await {
            Ok(Ok(sealed)) => Ok(sealed),
            Ok(Err(message)) => Err(AuditError::Store {
                path: PathBuf::from("(audit writer)"),
                message,
            }),
            Err(_) => Err(AuditError::Closed),
        }
    }
}

impl Drop for AuditLog {
    /// Drains the queue, signs a final checkpoint and releases the store.
    fn drop(&mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    mirror: File,
    durable: bool,
    key: Option<SigningKey>,
    next_seq: u64,
    head: [u8; 32],
    signed_size: u64,
    signed_at: Instant,
}

/// Opens the sled store, waiting up to `wait` for another process's lock.
fn open_db(dir: &Path, wait: Duration) -> Result<sled::Db, AuditError> {
    let started = Instant::now();
    loop {
        match sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(None)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if is_lock_error(&e) && started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                return Err(store_err(
                    dir,
                    "another Fabric process holds the store; stop it or wait",
                ))
            }
            Err(e) => return Err(store_err(dir, e)),
        }
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

impl Writer {
    fn open(options: &AuditOptions, key: Option<SigningKey>) -> Result<Writer, AuditError> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        let db = open_db(&dir, LOCK_WAIT)?;
        let records = db.open_tree(RECORDS).map_err(|e| store_err(&dir, e))?;
        let (next_seq, head) = match records.last().map_err(|e| store_err(&dir, e))? {
            None => (0, GENESIS),
            Some((_, value)) => {
                let last: Record = serde_json::from_slice(&value)
                    .map_err(|e| store_err(&dir, format!("last record unreadable: {e}")))?;
                (
                    last.seq + 1,
                    digest("hash", &last.hash).map_err(|e| store_err(&dir, e))?,
                )
            }
        };
        let mirror_path = dir.join("log.jsonl");
        let mirror = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&mirror_path)
            .map_err(|e| store_err(&mirror_path, e))?;
        let mut writer = Writer {
            dir,
            db,
            records,
            mirror,
            durable: options.durable,
            key,
            next_seq,
            head,
            signed_size: 0,
            signed_at: Instant::now(),
        };
        writer
            .repair_mirror()
            .map_err(|e| store_err(&mirror_path, e))?;
        writer.write_head().map_err(|e| store_err(&writer.dir, e))?;
        Ok(writer)
    }

    /// Makes `log.jsonl` hold exactly the stored records: drops a torn last
    /// line and appends what a crash kept from reaching it.
    fn repair_mirror(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join("log.jsonl");
        let mut good_len = 0u64;
        let mut last_seq: Option<u64> = None;
        let mut consistent = true;
        let mut reader = BufReader::new(File::open(&path)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            match serde_json::from_slice::<Record>(&line) {
                Ok(r) if r.seq == last_seq.map_or(0, |s| s + 1) && r.seq < self.next_seq => {
                    last_seq = Some(r.seq);
                    good_len += n as u64;
                }
                _ => {
                    consistent = false;
                    break;
                }
            }
        }
        if !consistent {
            // Not a prefix of the store: rebuild it from the store.
            good_len = 0;
            last_seq = None;
        }
        self.mirror.set_len(good_len)?;
        self.mirror.seek(SeekFrom::End(0))?;
        let from = last_seq.map_or(0, |s| s + 1);
        for item in self.records.range(from.to_be_bytes()..) {
            let (_, value) = item?;
            self.mirror.write_all(&value)?;
            self.mirror.write_all(b"\n")?;
        }
        self.mirror.sync_data()?;
        Ok(())
    }

    fn write_head(&self) -> sled::Result<()> {
        self.db
            .insert(HEAD_KEY, encode_head(self.next_seq, &self.head))?;
        self.db.flush()?;
        Ok(())
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut failed: Option<String> = None;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|j| matches!(j, Job::Stop));
            let mut replies = Vec::new();
            let mut sealed = Vec::new();
            for job in batch {
                if let Job::Append(entry, reply) = job {
                    let record = Record::seal(*entry, self.next_seq, self.head);
                    self.next_seq += 1;
                    self.head = digest("hash", &record.hash).unwrap_or(GENESIS);
                    replies.push((
                        reply,
                        Sealed {
                            seq: record.seq,
                            hash: record.hash.clone(),
                        },
                    ));
                    sealed.push(record);
                }
            }
            let result = match &failed {
                Some(message) => Err(message.clone()),
                None => self.commit(&sealed).map_err(|e| format!("{e:#}")),
            };
            if let Err(message) = &result {
                tracing::error!("audit log write failed: {message}");
                failed = Some(message.clone());
            }
            for (reply, s) in replies {
                let _ = reply.send(result.clone().map(|()| s));
            }
            if failed.is_none() && self.checkpoint_due() {
                self.sign_checkpoint();
            }
            if stop {
                break;
            }
        }
        if failed.is_none() {
            self.sign_checkpoint();
        }
    }

    /// Writes a batch to the store and the mirror, durably when configured.
    fn commit(&mut self, batch: &[Record]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        let mut tx = sled::Batch::default();
        for record in batch {
            let json = serde_json::to_vec(record)?;
            tx.insert(&record.seq.to_be_bytes(), json.as_slice());
            lines.extend_from_slice(&json);
            lines.push(b'\n');
        }
        self.records.apply_batch(tx)?;
        self.db
            .insert(HEAD_KEY, encode_head(self.next_seq, &self.head))?;
        if self.durable {
            self.db.flush()?;
        }
        self.mirror.write_all(&lines)?;
        if self.durable {
            self.mirror.sync_data()?;
        }
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        self.key.is_some()
            && self.next_seq > self.signed_size
            && (self.next_seq - self.signed_size >= CHECKPOINT_EVERY_RECORDS
                || self.signed_at.elapsed() >= CHECKPOINT_EVERY)
    }

    /// Signs the head and writes it to `DATA/audit/checkpoint`.
    fn sign_checkpoint(&mut self) {
        let Some(key) = &self.key else { return };
        if self.next_seq == self.signed_size && self.signed_size != 0 {
            return;
        }
        let note = Checkpoint {
            size: self.next_seq,
            hash: self.head,
        }
        .sign(key);
        let path = self.dir.join("checkpoint");
        let tmp = self.dir.join("checkpoint.tmp");
        let written =
            std::fs::write(&tmp, note.as_bytes()).and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.signed_size = self.next_seq;
                self.signed_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot write the audit checkpoint: {e}")
            }
        }
    }
}

/// The stored head: record count (big-endian u64), then the last hash.
fn encode_head(count: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut value = count.to_be_bytes().to_vec();
    value.extend_from_slice(hash);
    value
}

fn decode_head(value: &[u8]) -> Option<(u64, [u8; 32])> {
    let count = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some((count, value.get(8..40)?.try_into().ok()?))
}

/// Where [`read_records`] read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The sled store (no writer was running).
    Store,
    /// `log.jsonl` (a writer holds the store).
    Mirror,
}

/// One stored item: a record, or the raw text of one that does not parse,
/// with the sequence number it is stored under (for the store: its key).
pub type Stored = (u64, Result<Record, String>);

/// Reads every record of the log in `dir` (`DATA/audit`) in storage order,
/// and the head the store recorded (`(count, hash)`), if known.
pub fn read_records(
    dir: &Path,
) -> Result<(Source, Vec<Stored>, Option<(u64, [u8; 32])>), AuditError> {
    if !dir.join("db").exists() {
        return Err(store_err(
            dir,
            "no audit log here (run a call first, or pass --data DIR)",
        ));
    }
    match open_db(dir, Duration::ZERO) {
        Ok(db) => {
            let tree = db.open_tree(RECORDS).map_err(|e| store_err(dir, e))?;
            let mut out = Vec::new();
            for item in tree.iter() {
                let (key, value) = item.map_err(|e| store_err(dir, e))?;
                let seq = key
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                out.push((
                    seq,
                    serde_json::from_slice(&value).map_err(|e| format!("unreadable record: {e}")),
                ));
            }
            let head = db
                .get(HEAD_KEY)
                .map_err(|e| store_err(dir, e))?
                .and_then(|v| decode_head(&v));
            Ok((Source::Store, out, head))
        }
        Err(_) => {
            let path = dir.join("log.jsonl");
            let file = File::open(&path).map_err(|e| store_err(&path, e))?;
            Ok((
                Source::Mirror,
                read_jsonl(file).map_err(|e| store_err(&path, e))?,
                None,
            ))
        }
    }
}

/// Reads an export (JSON lines); a torn last line (no newline) is ignored.
/// Items are numbered by position.
pub fn read_jsonl(file: File) -> std::io::Result<Vec<Stored>> {
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            return Ok(out);
        }
        let parsed =
            serde_json::from_slice::<Record>(&line).map_err(|e| format!("unreadable record: {e}"));
        out.push((out.len() as u64, parsed));
    }
}
