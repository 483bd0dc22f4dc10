//! The append-only log: sled storage, group commit, a JSONL mirror for live
//! readers, and signed checkpoints.
//!
//! One writer thread owns the store. Calls hand it [`Entry`]s through a
//! bounded queue ([`AuditOptions::queue`]: when it is full, [`AuditLog::append`]
//! waits); it seals each into the chain, writes the whole batch that queued
//! up meanwhile, flushes (fsync) once for the batch — group commit — and only
//! then answers every caller in it. So a call's result is never returned
//! before its record is on disk, and concurrent calls share the cost of the
//! flush. It signs a checkpoint every 1000 records, and at the latest
//! [`AuditOptions::checkpoint_every`] after the oldest unsigned record,
//! whether or not more calls arrive; [`AuditLog::close`] drains the queue and
//! signs the head.
//!
//! sled locks its directory for one process. So that an auditor can verify
//! while a server or another call holds it, each batch is also appended to
//! `log.jsonl` (the export format) and synced before the answer; readers that
//! find the store locked by a live writer read that file instead
//! ([`read_records`]); any other failure to read the store is corruption.
//!
//! Opening reads the mirror whole only when it cannot vouch for it
//! otherwise: the store keeps a stamp of it (its length and modification
//! time when a writer last wrote it), and a mirror that still matches it and
//! ends with the stored record it names is taken as is ([`mirror_intact`]).
//! A one-shot process such as `fabric call` opens the log once per call.
//! That trusts the mirror on its length and time only: whoever can write it
//! can edit an earlier line, keep its length and restore its time, and
//! opening will not heal it. The open-time repair only keeps the mirror in
//! step with the store after crashes and stray writes; the integrity check
//! is the hash chain (`fabric audit verify`, [`crate::verify`]).
//!
//! On opening, the writer refuses to continue a log whose stored head or
//! last signed checkpoint is ahead of (or disagrees with) its records:
//! records were removed or replaced. [`AuditLog::recover`] continues from
//! what remains and records the loss as a record of its own.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::checkpoint::{Checkpoint, CheckpointError, SigningKey};
use crate::error::{chain, AuditError, Divergence};
use crate::fsutil;
use crate::record::{Entry, Record, GENESIS};

/// Most records written per flush; more wait for the next one.
const MAX_BATCH: usize = 1024;
/// How long a writer waits for another process to release the store.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Sign a checkpoint after this many new records…
const CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// …or this long after the oldest unsigned record (the default of
/// [`AuditOptions::checkpoint_every`]), whichever comes first.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// Default of [`AuditOptions::queue`].
pub const QUEUE: usize = 4096;

/// sled tree of records, keyed by big-endian sequence number.
const RECORDS: &str = "records";
/// sled key of the head (`seq+1` and hash of the last record), for truncation checks.
const HEAD_KEY: &[u8] = b"head";
/// The mirror's file name in the audit directory.
const MIRROR: &str = "log.jsonl";
/// sled key of the mirror's [`Stamp`]: what the writer last left in it.
const MIRROR_KEY: &[u8] = b"mirror";
/// The latest checkpoint's file name in the audit directory.
const CHECKPOINT: &str = "checkpoint";

/// Where a record went: its sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Sequence number.
    pub seq: u64,
    /// Hash, hex.
    pub hash: String,
}

/// How the log is opened. [`AuditOptions::new`] gives the defaults.
#[derive(Clone)]
pub struct AuditOptions {
    /// The audit directory (`DATA/audit`).
    pub dir: PathBuf,
    /// The checkpoint signing key (`None`: checkpoints are not signed or written).
    pub key: Option<PathBuf>,
    /// Flush before answering (group commit). Off only for measurements.
    pub durable: bool,
    /// Most entries waiting for the writer; further appends wait for room.
    pub queue: usize,
    /// Longest time a record stays unsigned by a checkpoint, busy or idle.
    pub checkpoint_every: Duration,
    /// Told the number of records of each group commit, after it is
    /// written (for metrics). Runs on the writer thread: keep it cheap.
    pub on_batch: Option<BatchHook>,
}

/// A callback given each group commit's size.
pub type BatchHook = Arc<dyn Fn(usize) + Send + Sync>;

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("dir", &self.dir)
            .field("key", &self.key)
            .field("durable", &self.durable)
            .field("queue", &self.queue)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("on_batch", &self.on_batch.is_some())
            .finish()
    }
}

impl AuditOptions {
    /// Durable, unsigned, with the default queue and checkpoint interval.
    pub fn new(dir: impl Into<PathBuf>) -> AuditOptions {
        AuditOptions {
            dir: dir.into(),
            key: None,
            durable: true,
            queue: QUEUE,
            checkpoint_every: CHECKPOINT_EVERY,
            on_batch: None,
        }
    }
}

/// What [`AuditLog::recover`] found and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// How the records disagreed with the stored head or checkpoint.
    pub divergence: Divergence,
    /// The record that documents the recovery.
    pub record: Sealed,
    /// Records the store had lost that were put back from `log.jsonl`
    /// (they chain from the store's last record).
    pub replayed: u64,
    /// Where the lines of `log.jsonl` that the store does not hold and that
    /// could not be put back were moved (they are never deleted).
    pub kept: Option<PathBuf>,
}

type Reply = oneshot::Sender<Result<Sealed, Arc<AuditError>>>;

enum Job {
    Append(Box<Entry>, Reply, OwnedSemaphorePermit),
    Close(oneshot::Sender<Result<(), AuditError>>),
    Stop,
}

/// The writer's handle.
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates) the log, waiting up to 10 s for another writer to
    /// release the store, and repairs the mirror after a crash. Fails with
    /// [`AuditError::Diverged`] when records were removed or replaced.
    pub fn open(options: &AuditOptions) -> Result<AuditLog, AuditError> {
        let key = options
            .key
            .as_deref()
            .map(SigningKey::load_or_create)
            .transpose()?;
        let (writer, _) = Writer::open(options, key, false)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fabric-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::io("start the writer thread for", &options.dir))?;
        Ok(AuditLog {
            tx,
            room: Arc::new(Semaphore::new(options.queue.max(1))),
            thread: Some(thread),
        })
    }

    /// Appends an entry; returns once it is durable (when the log is). Waits
    /// while the queue is full.
    pub async fn append(&self, entry: Entry) -> Result<Sealed, AuditError> {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuditError::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Append(Box::new(entry), reply, permit))
            .map_err(|_| AuditError::Closed)?;
        match answer.await {
            Ok(Ok(sealed)) => Ok(sealed),
            Ok(Err(source)) => Err(AuditError::Failed { source }),
            Err(_) => Err(AuditError::Closed),
        }
    }

    /// Writes every queued entry, signs the head and releases the store.
    /// Dropping the log does the same, but cannot report a failure.
    pub async fn close(mut self) -> Result<(), AuditError> {
        let thread = self.thread.take();
        let (reply, answer) = oneshot::channel();
        let result = match self.tx.send(Job::Close(reply)) {
            Ok(()) => answer.await.unwrap_or(Err(AuditError::Closed)),
            Err(_) => Err(AuditError::Closed),
        };
        if let Some(thread) = thread {
            // The writer has answered: it is returning.
            let _ = thread.join();
        }
        result
    }

    /// Opens a log that [`AuditLog::open`] refuses (records were removed or
    /// replaced), appends a record of outcome `recovered` that states what
    /// the stored head and checkpoint said and how many records remain, and
    /// signs the new head. `Ok(None)`: nothing needed recovering.
    pub fn recover(options: &AuditOptions) -> Result<Option<Recovery>, AuditError> {
        let key = options
            .key
            .as_deref()
            .map(SigningKey::load_or_create)
            .transpose()?;
        let (mut writer, divergence) = Writer::open(options, key, true)?;
        let Some(divergence) = divergence else {
            return Ok(None);
        };
        let (replayed, kept) = (writer.replayed, writer.kept.clone());
        let mut problem = divergence.problem.clone();
        if replayed > 0 {
            problem.push_str(&format!(
                "; records {}-{} were put back from {MIRROR}, where they chain from the store's last record",
                divergence.remain,
                divergence.remain + replayed - 1
            ));
        }
        if let Some(kept) = &kept {
            problem.push_str(&format!(
                "; the lines of {MIRROR} the store does not hold were moved to {}",
                kept.display()
            ));
        }
        let mut arguments = serde_json::json!({
            "records_remaining": divergence.remain,
            "stored_head": divergence.head,
            "checkpoint": divergence.checkpoint,
        });
        if replayed > 0 {
            arguments["records_replayed"] = replayed.into();
        }
        if let Some(kept) = &kept {
            arguments["mirror_lines_kept_in"] = kept.display().to_string().into();
        }
        let arguments = arguments.to_string();
        let entry = Entry {
            time_unix_us: now_unix_us(),
            invocation_id: format!("{:032x}", rand::random::<u128>()),
            tool: RECOVER_TOOL.into(),
            arguments_digest: *blake3::hash(arguments.as_bytes()).as_bytes(),
            outcome: "recovered".into(),
            error: Some(problem),
            arguments: Some(arguments),
            ..Entry::default()
        };
        let record = writer.write(vec![entry])?.remove(0);
        writer.sign_checkpoint()?;
        Ok(Some(Recovery {
            divergence,
            record,
            replayed,
            kept,
        }))
    }
}

/// The `tool` of the record [`AuditLog::recover`] appends.
pub const RECOVER_TOOL: &str = "audit.recover";

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Drop for AuditLog {
    /// Drains the queue, signs a final checkpoint and releases the store
    /// (unless [`AuditLog::close`] did).
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Job::Stop);
            let _ = thread.join();
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
    checkpoint_every: Duration,
    next_seq: u64,
    head: [u8; 32],
    /// Size of the last checkpoint written (or found valid on opening).
    signed: Option<u64>,
    /// When the oldest record not yet covered by a checkpoint was written.
    unsigned_since: Option<Instant>,
    on_batch: Option<BatchHook>,
    /// What this writer last left in the mirror (`None`: unknown, so the
    /// next opening reads the mirror whole).
    stamp: Option<Stamp>,
    /// Opened by [`AuditLog::recover`]: lines cut from the mirror are moved
    /// to a file of their own, not deleted.
    recovering: bool,
    /// Records put back into the store from the mirror on opening.
    replayed: u64,
    /// Where lines cut from the mirror while recovering went.
    kept: Option<PathBuf>,
    /// Whether opening vouched for the mirror by its stamp, not reading it whole.
    #[cfg(test)]
    opened_fast: bool,
}

/// sled's page cache: records are written once and read rarely (on
/// opening, by export), so a small cache serves; sled's default (1 GiB)
/// let a long-running server's memory grow with its log.
const CACHE_BYTES: u64 = 16 << 20;

/// Opens the sled store, waiting up to `wait` for another process's lock.
fn open_db(dir: &Path, wait: Duration) -> Result<sled::Db, AuditError> {
    let path = dir.join("db");
    let started = Instant::now();
    loop {
        match sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                if started.elapsed() >= wait {
                    return Err(AuditError::Locked { path });
                }
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(source @ sled::Error::Io(_)) => {
                return Err(AuditError::Store {
                    action: "open",
                    path,
                    source,
                })
            }
            Err(source) => {
                return Err(AuditError::Corrupt {
                    path,
                    what: "sled cannot open it".into(),
                    source: Box::new(source),
                })
            }
        }
    }
}

/// Whether sled failed because another live process holds its file lock
/// (an advisory lock the kernel releases when its holder dies).
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || (e.kind() == std::io::ErrorKind::Other
            && e.to_string().starts_with("could not acquire lock"))
}

/// A corrupt stored record.
fn corrupt_record(
    path: &Path,
    seq: u64,
    source: impl std::error::Error + Send + Sync + 'static,
) -> AuditError {
    AuditError::Corrupt {
        path: path.to_path_buf(),
        what: format!("record {seq} does not parse"),
        source: Box::new(source),
    }
}

/// The stored head (record count, hash of the last record), if the store
/// has one.
fn stored_head(db: &sled::Db, db_path: &Path) -> Result<Option<(u64, [u8; 32])>, AuditError> {
    Ok(db
        .get(HEAD_KEY)
        .map_err(AuditError::store("read", db_path))?
        .and_then(|v| decode_head(&v)))
}

/// The last checkpoint in `dir`, verified with `key`'s public half; `None`
/// when there is none.
fn last_checkpoint(
    dir: &Path,
    key: &SigningKey,
) -> Result<Option<Result<Checkpoint, CheckpointError>>, AuditError> {
    let path = dir.join(CHECKPOINT);
    if !path.exists() {
        return Ok(None);
    }
    let note = std::fs::read_to_string(&path).map_err(AuditError::io("read", &path))?;
    Ok(Some(Checkpoint::verify(&note, &key.verifying_key())))
}

/// A point a replayed chain must reach: what it is, the record count there,
/// and the hash of the last record.
type Anchor = (&'static str, u64, [u8; 32]);

/// Records put back into the store per batch by `audit recover`.
const REPLAY_BATCH: usize = 4096;

/// Calls `each` with every record of the mirror at `path` from line `skip`
/// on (0-based), in order, until it returns false or a line does not parse.
fn mirror_tail(
    path: &Path,
    skip: u64,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(), AuditError> {
    let io_err = |action| AuditError::io(action, path);
    let mut reader = BufReader::new(File::open(path).map_err(io_err("open"))?);
    let mut line = Vec::new();
    let mut position = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_err("read"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        position += 1;
        if position <= skip {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(&line[..n - 1]) else {
            return Ok(());
        };
        if !each(record) {
            return Ok(());
        }
    }
}

/// The hash of stored record `seq`, if there is one.
fn stored_hash(tree: &sled::Tree, path: &Path, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
    let Some(value) = tree
        .get(seq.to_be_bytes())
        .map_err(AuditError::store("read", path))?
    else {
        return Ok(None);
    };
    let record: Record =
        serde_json::from_slice(&value).map_err(|e| corrupt_record(path, seq, e))?;
    record
        .hash_bytes()
        .map(Some)
        .map_err(|e| corrupt_record(path, seq, e))
}

impl Writer {
    /// Opens the store and the mirror. Unless `force`, fails when the records
    /// disagree with the stored head or the last checkpoint; with `force`,
    /// returns the disagreement instead.
    fn open(
        options: &AuditOptions,
        key: Option<SigningKey>,
        force: bool,
    ) -> Result<(Writer, Option<Divergence>), AuditError> {
        let dir = options.dir.clone();
        fsutil::private_dir(&dir).map_err(AuditError::io("create", &dir))?;
        let db = open_db(&dir, LOCK_WAIT)?;
        let db_path = dir.join("db");
        fsutil::restrict_tree(&db_path).map_err(AuditError::io("restrict access to", &db_path))?;
        let records = db
            .open_tree(RECORDS)
            .map_err(AuditError::store("open", &db_path))?;
        let (next_seq, head) = match records
            .last()
            .map_err(AuditError::store("read", &db_path))?
        {
            None => (0, GENESIS),
            Some((key, value)) => {
                let seq = key.as_ref().try_into().map_or(u64::MAX, u64::from_be_bytes);
                let last: Record =
                    serde_json::from_slice(&value).map_err(|e| corrupt_record(&db_path, seq, e))?;
                let hash = last
                    .hash_bytes()
                    .map_err(|e| corrupt_record(&db_path, seq, e))?;
                (last.seq + 1, hash)
            }
        };
        let mirror_path = dir.join(MIRROR);
        // The common case reads only the mirror's last line; anything else
        // takes the full count and repair below.
        let intact = mirror_intact(&db, &records, &dir);
        let mirrored = match intact {
            Some(stamp) => stamp.count,
            None => mirror_count(&dir)?,
        };
        let (mut divergence, signed) =
            check_head(&dir, &db, &records, key.as_ref(), next_seq, head)?;
        if mirrored > next_seq {
            let lost = format!(
                "log.jsonl holds {mirrored} records but the store only {next_seq}: the store lost records (it is corrupt or was cut)"
            );
            match &mut divergence {
                Some(d) => d.problem = format!("{}; {lost}", d.problem),
                None => {
                    let stored = db.get(HEAD_KEY).ok().flatten();
                    divergence = Some(Divergence {
                        remain: next_seq,
                        head: stored.and_then(|v| decode_head(&v)).map(|(n, _)| n),
                        checkpoint: signed,
                        problem: lost,
                    })
                }
            }
        }
        if let (Some(divergence), false) = (&divergence, force) {
            return Err(AuditError::Diverged {
                path: dir,
                divergence: divergence.clone(),
            });
        }
        let mirror =
            fsutil::open_append(&mirror_path).map_err(AuditError::io("open", &mirror_path))?;
        let mut writer = Writer {
            dir,
            db,
            records,
            mirror,
            durable: options.durable,
            key,
            checkpoint_every: options.checkpoint_every,
            next_seq,
            head,
            signed,
            unsigned_since: (signed != Some(next_seq)).then(Instant::now),
            on_batch: options.on_batch.clone(),
            stamp: None,
            recovering: force,
            replayed: 0,
            kept: None,
            #[cfg(test)]
            opened_fast: intact.is_some(),
        };
        // Only when recovering (the writer refuses otherwise): records the
        // store lost, which the mirror (written after the store is synced)
        // still holds, go back into the store, not away with the repair.
        if force && mirrored > writer.next_seq {
            writer.replay_mirror()?;
        }
        match intact {
            Some(stamp) => writer.rewrite_mirror(stamp.len, stamp.count)?,
            None => writer.repair_mirror()?,
        }
        // Also makes the mirror's new stamp durable.
        writer.write_head()?;
        Ok((writer, divergence))
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("db")
    }

    fn mirror_path(&self) -> PathBuf {
        self.dir.join(MIRROR)
    }

    /// Makes `log.jsonl` hold exactly the stored records: keeps the longest
    /// prefix whose lines are byte for byte the stored records (content, not
    /// only sequence numbers), and rewrites the rest from the store. Reads
    /// the whole mirror and every record: [`Writer::open`] takes this path
    /// only when [`mirror_intact`] cannot vouch for the mirror.
    fn repair_mirror(&mut self) -> Result<(), AuditError> {
        let path = self.mirror_path();
        let db_path = self.db_path();
        let io_err = |action| AuditError::io(action, &path);
        let mut good_len = 0u64;
        let mut from = 0u64;
        let mut reader = BufReader::new(File::open(&path).map_err(io_err("open"))?);
        let mut stored = self.records.iter();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(io_err("read"))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let Some(item) = stored.next() else { break };
            let (key, value) = item.map_err(AuditError::store("read", &db_path))?;
            if key.as_ref() != from.to_be_bytes() || value.as_ref() != &line[..n - 1] {
                break;
            }
            good_len += n as u64;
            from += 1;
        }
        self.rewrite_mirror(good_len, from)
    }

    /// Puts back into the store the records `log.jsonl` holds past the
    /// store's last one, in order, as long as each parses and chains from
    /// the one before it (the first from the store's head): records the
    /// store lost (sled dropped them, or the store was deleted) while the
    /// mirror kept them. Record hashes carry no key, so a chain alone proves
    /// nothing: the records are put back only if the chain reaches the
    /// stored head and the last signed checkpoint, where they lie past the
    /// store's end, with the hashes those name; otherwise none is, and the
    /// repair keeps the lines aside ([`Writer::rewrite_mirror`]). Written in
    /// batches of [`REPLAY_BATCH`] records.
    fn replay_mirror(&mut self) -> Result<(), AuditError> {
        let path = self.mirror_path();
        let db_path = self.db_path();
        let first = self.next_seq;
        // Pass 1: the chain's hashes, checked against the anchors.
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        let mut head = self.head;
        mirror_tail(&path, first, |record| {
            let chains = record.seq == first + hashes.len() as u64
                && crate::record::digest("prev_hash", &record.prev_hash).ok() == Some(head);
            let hash = record.hash_bytes().ok();
            let sound = hash.is_some() && record.compute_hash().ok().map(|h| *h.as_bytes()) == hash;
            match (hash, chains && sound) {
                (Some(hash), true) => {
                    hashes.push(hash);
                    head = hash;
                    true
                }
                _ => false,
            }
        })?;
        if hashes.is_empty() {
            return Ok(());
        }
        for (what, n, hash) in self.anchors()? {
            let Some(at) = n.checked_sub(first + 1) else {
                continue;
            };
            if usize::try_from(at).ok().and_then(|at| hashes.get(at)) != Some(&hash) {
                tracing::warn!(
                    "{MIRROR} holds records past the store's end that do not reach {what} with its hash: none is put back"
                );
                return Ok(());
            }
        }
        // Pass 2: insert them, a batch at a time.
        let end = first + hashes.len() as u64;
        let (records, db) = (self.records.clone(), self.db.clone());
        let mut tx = sled::Batch::default();
        let mut in_batch = 0;
        let mut done = first;
        let mut failed = None;
        mirror_tail(&path, first, |record| {
            if record.seq >= end {
                return false;
            }
            match serde_json::to_vec(&record) {
                Ok(json) => tx.insert(&record.seq.to_be_bytes(), json),
                Err(e) => {
                    failed = Some(corrupt_record(&path, record.seq, e));
                    return false;
                }
            }
            in_batch += 1;
            if in_batch == REPLAY_BATCH || record.seq + 1 == end {
                let hash = hashes[(record.seq - first) as usize];
                in_batch = 0;
                let written = records
                    .apply_batch(std::mem::take(&mut tx))
                    .and_then(|()| {
                        db.insert(HEAD_KEY, encode_head(record.seq + 1, &hash))
                            .map(drop)
                    })
                    .and_then(|()| db.flush().map(drop));
                if let Err(e) = written {
                    failed = Some(AuditError::store("write", &db_path)(e));
                    return false;
                }
                done = record.seq + 1;
            }
            true
        })?;
        if done > first {
            self.next_seq = done;
            self.head = hashes[(done - first - 1) as usize];
            self.replayed = done - first;
            tracing::warn!(
                "put records {first}-{} back into the audit store from {MIRROR}",
                done - 1
            );
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What replayed records must agree with: the stored head and the last
    /// checkpoint that verifies, as (what, record count, hash of the last).
    /// A checkpoint that does not verify, or cannot be checked for want of
    /// the key, is an anchor nothing can reach.
    fn anchors(&self) -> Result<Vec<Anchor>, AuditError> {
        let mut anchors = Vec::new();
        if let Some((n, hash)) = stored_head(&self.db, &self.db_path())? {
            anchors.push(("the stored head", n, hash));
        }
        let checkpoint = match &self.key {
            Some(key) => last_checkpoint(&self.dir, key)?,
            // Present but not checkable: nothing can reach it.
            None => self
                .dir
                .join(CHECKPOINT)
                .exists()
                .then(|| Err(CheckpointError("no key to verify it".into()))),
        };
        match checkpoint {
            Some(Ok(cp)) => anchors.push(("the last signed checkpoint", cp.size, cp.hash)),
            Some(Err(_)) => anchors.push(("a checkpoint that does not verify", u64::MAX, [0; 32])),
            None => {}
        }
        Ok(anchors)
    }

    /// Moves the mirror's bytes from `keep` on, if any, to a new file
    /// `log.jsonl.cut-<nanoseconds>` beside it (synced), before the repair
    /// cuts them: what recovery found and could not put back is kept for
    /// inspection.
    fn keep_cut(&mut self, keep: u64) -> Result<(), AuditError> {
        let path = self.mirror_path();
        let io_err = |action| AuditError::io(action, &path);
        let len = self.mirror.metadata().map_err(io_err("read"))?.len();
        if len <= keep {
            return Ok(());
        }
        let mut tail = Vec::new();
        let mut reader = File::open(&path).map_err(io_err("open"))?;
        reader.seek(SeekFrom::Start(keep)).map_err(io_err("seek"))?;
        reader.read_to_end(&mut tail).map_err(io_err("read"))?;
        let side = self.dir.join(format!(
            "{MIRROR}.cut-{}",
            now_unix_ns().unwrap_or_default()
        ));
        let io_side = |action| AuditError::io(action, &side);
        let mut file = fsutil::create_new(&side, 0o600).map_err(io_side("create"))?;
        file.write_all(&tail).map_err(io_side("write"))?;
        file.sync_all().map_err(io_side("sync"))?;
        tracing::warn!(
            "moved {} bytes of {MIRROR} that the store does not hold to {}",
            tail.len(),
            side.display()
        );
        self.kept = Some(side);
        Ok(())
    }

    /// Cuts the mirror to its first `keep` bytes (records `0..from`), appends
    /// the stored records from `from` on, syncs it, and only then stamps it:
    /// the stamp goes to the store with the next flush
    /// ([`Writer::write_head`]). A crash before that leaves the old stamp,
    /// which the mirror no longer matches: the next opening repairs in full.
    fn rewrite_mirror(&mut self, keep: u64, from: u64) -> Result<(), AuditError> {
        let path = self.mirror_path();
        let db_path = self.db_path();
        let io_err = |action| AuditError::io(action, &path);
        if self.recovering {
            self.keep_cut(keep)?;
        }
        self.mirror.set_len(keep).map_err(io_err("truncate"))?;
        self.mirror.seek(SeekFrom::End(0)).map_err(io_err("seek"))?;
        let mut out = std::io::BufWriter::new(&self.mirror);
        let (mut len, mut count) = (keep, from);
        for item in self.records.range(from.to_be_bytes()..) {
            let (_, value) = item.map_err(AuditError::store("read", &db_path))?;
            out.write_all(&value).map_err(io_err("write"))?;
            out.write_all(b"\n").map_err(io_err("write"))?;
            len += value.len() as u64 + 1;
            count += 1;
        }
        out.flush().map_err(io_err("write"))?;
        drop(out);
        self.mirror.sync_data().map_err(io_err("sync"))?;
        let stamp = now_unix_ns()
            .map(|mtime_ns| Stamp {
                len,
                count,
                mtime_ns,
            })
            .filter(|s| s.apply(&self.mirror));
        match stamp {
            Some(s) => self.db.insert(MIRROR_KEY, s.encode()).map(drop),
            None => self.db.remove(MIRROR_KEY).map(drop),
        }
        .map_err(AuditError::store("write", db_path))?;
        self.stamp = stamp;
        Ok(())
    }

    fn write_head(&self) -> Result<(), AuditError> {
        let store = AuditError::store("write", self.db_path());
        self.db
            .insert(HEAD_KEY, encode_head(self.next_seq, &self.head))
            .and_then(|_| self.db.flush())
            .map(drop)
            .map_err(store)
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut failed: Option<Arc<AuditError>> = None;
        let mut close = None;
        loop {
            let deadline = self.checkpoint_deadline().filter(|_| failed.is_none());
            let first = match deadline {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.sign_logged();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut ending = false;
            let mut entries = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for job in batch {
                match job {
                    // The permit is dropped here: the entry left the queue.
                    Job::Append(entry, reply, _permit) => {
                        entries.push(*entry);
                        replies.push(reply);
                    }
                    Job::Close(reply) => {
                        close = Some(reply);
                        ending = true;
                    }
                    Job::Stop => ending = true,
                }
            }
            let result = match &failed {
                Some(e) => Err(e.clone()),
                None if entries.is_empty() => Ok(Vec::new()),
                None => self.write(entries).map_err(Arc::new),
            };
            match result {
                Ok(sealed) => {
                    if let (Some(hook), false) = (&self.on_batch, sealed.is_empty()) {
                        hook(sealed.len());
                    }
                    for (reply, s) in replies.into_iter().zip(sealed) {
                        let _ = reply.send(Ok(s));
                    }
                }
                Err(e) => {
                    if failed.is_none() {
                        tracing::error!("audit log write failed: {}", chain(&*e));
                    }
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    failed = Some(e);
                }
            }
            if ending {
                break;
            }
            if failed.is_none() && self.checkpoint_due() {
                self.sign_logged();
            }
        }
        let result = match failed {
            Some(source) => Err(AuditError::Failed { source }),
            None => self.sign_checkpoint(),
        };
        // Release the store before answering `close`.
        drop(self);
        match close {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::error!("closing the audit log: {}", chain(&e));
                }
            }
        }
    }

    /// Seals `entries` into the chain and commits them; the head moves only
    /// once they are written.
    fn write(&mut self, entries: Vec<Entry>) -> Result<Vec<Sealed>, AuditError> {
        let (mut seq, mut head) = (self.next_seq, self.head);
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let record = Record::seal(entry, seq, head)
                .map_err(|source| AuditError::Seal { seq, source })?;
            head = record
                .hash_bytes()
                .map_err(|source| AuditError::Seal { seq, source })?;
            seq += 1;
            records.push(record);
        }
        self.commit(&records, seq, head)?;
        self.next_seq = seq;
        self.head = head;
        self.unsigned_since.get_or_insert_with(Instant::now);
        Ok(records
            .into_iter()
            .map(|r| Sealed {
                seq: r.seq,
                hash: r.hash,
            })
            .collect())
    }

    /// Writes a batch and the new head to the store and the mirror, durably
    /// when configured.
    fn commit(&mut self, batch: &[Record], count: u64, head: [u8; 32]) -> Result<(), AuditError> {
        let db_path = self.db_path();
        // The mirror's stamp after this batch: inserted after the batch and
        // flushed with it, not part of its atomic write. Unknown if anything
        // but this writer changed the mirror since its last stamp.
        let stamped = now_unix_ns();
        let unchanged = self.stamp.filter(|s| {
            s.count == self.next_seq && self.mirror.metadata().is_ok_and(|m| s.matches(&m))
        });
        let mut lines = Vec::new();
        let mut tx = sled::Batch::default();
        for record in batch {
            let json = serde_json::to_vec(record).map_err(|e| AuditError::Seal {
                seq: record.seq,
                source: crate::record::FieldError {
                    field: "record",
                    problem: e.to_string(),
                },
            })?;
            tx.insert(&record.seq.to_be_bytes(), json.as_slice());
            lines.extend_from_slice(&json);
            lines.push(b'\n');
        }
        let stamp = unchanged.zip(stamped).map(|(s, mtime_ns)| Stamp {
            len: s.len + lines.len() as u64,
            count,
            mtime_ns,
        });
        self.records
            .apply_batch(tx)
            .and_then(|()| self.db.insert(HEAD_KEY, encode_head(count, &head)))
            .and_then(|_| match stamp {
                Some(s) => self.db.insert(MIRROR_KEY, s.encode()).map(drop),
                None if self.stamp.is_some() => self.db.remove(MIRROR_KEY).map(drop),
                None => Ok(()),
            })
            .map_err(AuditError::store("write", &db_path))?;
        if self.durable {
            self.db
                .flush()
                .map_err(AuditError::store("flush", &db_path))?;
        }
        let mirror = self.mirror_path();
        // Unknown until the stamp's time is set on the written mirror, which
        // only its synced data may get: a crash or a failure before leaves
        // a mirror that does not match the stored stamp, so the next opening
        // repairs in full. Without `durable` there is no sync, and no such
        // guarantee: a crash may lose the data and keep the time.
        self.stamp = None;
        self.mirror
            .write_all(&lines)
            .map_err(AuditError::io("write", &mirror))?;
        if self.durable {
            self.mirror
                .sync_data()
                .map_err(AuditError::io("sync", &mirror))?;
        }
        self.stamp = stamp.filter(|s| s.apply(&self.mirror));
        Ok(())
    }

    /// When the next time-based checkpoint is due (`None`: no records wait).
    fn checkpoint_deadline(&self) -> Option<Instant> {
        self.key.as_ref()?;
        Some(self.unsigned_since? + self.checkpoint_every)
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoint_deadline()
            .is_some_and(|at| Instant::now() >= at)
            || (self.key.is_some()
                && self.next_seq - self.signed.unwrap_or(0) >= CHECKPOINT_EVERY_RECORDS)
    }

    /// Signs, logging a failure; a failed attempt is retried one interval later.
    fn sign_logged(&mut self) {
        if let Err(e) = self.sign_checkpoint() {
            tracing::warn!("cannot sign the audit checkpoint: {}", chain(&e));
            self.unsigned_since = Some(Instant::now());
        }
    }

    /// Signs the head and writes it to `DATA/audit/checkpoint`, once every
    /// record it covers is on disk.
    fn sign_checkpoint(&mut self) -> Result<(), AuditError> {
        let Some(key) = &self.key else { return Ok(()) };
        if self.signed == Some(self.next_seq) {
            return Ok(());
        }
        if !self.durable {
            self.db
                .flush()
                .map_err(AuditError::store("flush", self.db_path()))?;
        }
        let note = Checkpoint {
            size: self.next_seq,
            hash: self.head,
        }
        .sign(key);
        fsutil::replace(&self.dir.join(CHECKPOINT), note.as_bytes()).map_err(|(tmp, source)| {
            AuditError::Io {
                action: "write the checkpoint through",
                path: tmp,
                source,
            }
        })?;
        self.signed = Some(self.next_seq);
        self.unsigned_since = None;
        Ok(())
    }
}

/// Compares the records (`count` of them, the last with hash `head`) with
/// the head the store recorded and the checkpoint in `dir`. Returns what
/// disagrees, and the size of a checkpoint that matches.
fn check_head(
    dir: &Path,
    db: &sled::Db,
    records: &sled::Tree,
    key: Option<&SigningKey>,
    count: u64,
    head: [u8; 32],
) -> Result<(Option<Divergence>, Option<u64>), AuditError> {
    let db_path = dir.join("db");
    let stored = stored_head(db, &db_path)?;
    let checkpoint_path = dir.join(CHECKPOINT);
    let checkpoint = match key {
        Some(key) => last_checkpoint(dir, key)?,
        None => None,
    };
    let mut divergence = Divergence {
        remain: count,
        head: stored.map(|(n, _)| n),
        checkpoint: checkpoint
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map(|c| c.size),
        problem: String::new(),
    };
    let hash_at = |n: u64| -> Result<Option<[u8; 32]>, AuditError> {
        if n == count {
            Ok(Some(head))
        } else {
            stored_hash(records, &db_path, n - 1)
        }
    };
    let mut problems = Vec::new();
    if let Some((n, hash)) = stored {
        if n > count {
            problems.push(format!(
                "the stored head says {n} records but only {count} remain: records were removed"
            ));
        } else if n > 0 && hash_at(n)? != Some(hash) {
            problems.push(format!(
                "record {} is not the one the stored head names: it was replaced",
                n - 1
            ));
        }
    }
    let mut signed = None;
    match checkpoint {
        None => {}
        Some(Err(e)) => problems.push(format!(
            "{} does not verify with the signing key ({e}): it was replaced, or the key changed",
            checkpoint_path.display()
        )),
        Some(Ok(cp)) if cp.size > count => problems.push(format!(
            "the last signed checkpoint covers {} records but only {count} remain: records were removed",
            cp.size
        )),
        Some(Ok(cp)) if cp.size > 0 && hash_at(cp.size)? != Some(cp.hash) => {
            problems.push(format!(
                "record {} is not the one the last signed checkpoint names: history was rewritten",
                cp.size - 1
            ))
        }
        Some(Ok(cp)) => signed = Some(cp.size),
    }
    if problems.is_empty() {
        return Ok((None, signed));
    }
    divergence.problem = problems.join("; ");
    Ok((Some(divergence), signed))
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
    /// `log.jsonl` (a live writer holds the store).
    Mirror,
}

/// One stored item: a record, or the raw text of one that does not parse,
/// with the sequence number it is stored under (for the store: its key).
pub type Stored = (u64, Result<Record, String>);

/// The head the store recorded: the record count and the last record's hash.
pub type Head = (u64, [u8; 32]);

/// Reads every record of the log in `dir` (`DATA/audit`) in storage order,
/// and the head the store recorded (`(count, hash)`), if known. Reads the
/// mirror only when a live writer holds the store's lock; a store that
/// cannot be read is [`AuditError::Corrupt`], one that is gone while the
/// mirror or a checkpoint remains [`AuditError::StoreMissing`].
pub fn read_records(dir: &Path) -> Result<(Source, Vec<Stored>, Option<Head>), AuditError> {
    let log = read_log(dir, false)?;
    Ok((log.source, log.items, log.head))
}

/// What [`read_log`] found.
#[derive(Debug)]
pub struct LogRead {
    /// Where the records were read from.
    pub source: Source,
    /// The records, in storage order.
    pub items: Vec<Stored>,
    /// The head the store recorded (store only).
    pub head: Option<Head>,
    /// The complete lines of `log.jsonl`, counted while the store was
    /// still held, so that no writer appended in between (store only, when
    /// asked for).
    pub mirrored: Option<u64>,
}

/// [`read_records`], and with `count_mirror`, when the records come from the
/// store, the mirror's line count ([`mirror_count`]) taken before the store
/// is released: counted after, a writer that opened meanwhile could have
/// appended to it, and the mirror would seem ahead of the store.
pub fn read_log(dir: &Path, count_mirror: bool) -> Result<LogRead, AuditError> {
    let path = dir.join("db");
    if !path.exists() {
        let mirror = dir.join(MIRROR).exists();
        let checkpoint = dir.join(CHECKPOINT).exists();
        if mirror || checkpoint {
            let found = match (mirror, checkpoint) {
                (true, true) => format!("{MIRROR} and {CHECKPOINT} are"),
                (true, false) => format!("{MIRROR} is"),
                _ => format!("{CHECKPOINT} is"),
            };
            return Err(AuditError::StoreMissing { path, found });
        }
        return Err(AuditError::Missing {
            path: dir.to_path_buf(),
        });
    }
    let corrupt = |what: &str| {
        let what = what.to_string();
        let path = path.clone();
        move |e: sled::Error| AuditError::Corrupt {
            path,
            what,
            source: Box::new(e),
        }
    };
    let opened = read_only_copy(dir, count_mirror).and_then(|(copy, mirrored)| {
        // Errors name the store, not its copy.
        let db = open_db(copy.path(), Duration::ZERO).map_err(|e| match e {
            AuditError::Corrupt { what, source, .. } => AuditError::Corrupt {
                path: path.clone(),
                what,
                source,
            },
            AuditError::Store { action, source, .. } => AuditError::Store {
                action,
                path: path.clone(),
                source,
            },
            e => e,
        })?;
        Ok((db, copy, mirrored))
    });
    match opened {
        Ok((db, _copy, mirrored)) => {
            let tree = db
                .open_tree(RECORDS)
                .map_err(corrupt("its records tree cannot be opened"))?;
            let mut out = Vec::new();
            for item in tree.iter() {
                let (key, value) = item.map_err(corrupt("a record cannot be read"))?;
                let seq = key.as_ref().try_into().map_or(u64::MAX, u64::from_be_bytes);
                out.push((
                    seq,
                    serde_json::from_slice(&value).map_err(|e| format!("unreadable record: {e}")),
                ));
            }
            let head = db
                .get(HEAD_KEY)
                .map_err(corrupt("its head cannot be read"))?
                .and_then(|v| decode_head(&v));
            drop(db);
            Ok(LogRead {
                source: Source::Store,
                items: out,
                head,
                mirrored,
            })
        }
        Err(AuditError::Locked { .. }) => {
            let path = dir.join(MIRROR);
            let file = fsutil::open_read(&path).map_err(AuditError::io("open", &path))?;
            Ok(LogRead {
                source: Source::Mirror,
                items: read_jsonl(file).map_err(AuditError::io("read", &path))?,
                head: None,
                mirrored: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// Copies the store in `dir` (its `db` directory) into a private
/// temporary directory, under the store's own lock, and with
/// `count_mirror` counts the mirror's lines while the lock is held.
///
/// Readers open the copy, never the store: sled opens read-write, and
/// opening recovers (it truncates a torn tail, writes its config and
/// snapshots), so reading a damaged store in place would change the
/// evidence. A shared `flock` on `db/db` (sled's writer takes it
/// exclusively), through a read-only descriptor, keeps a writer from
/// starting mid-copy and lets readers copy side by side; a live writer that
/// holds it is [`AuditError::Locked`]. The copy lives in the
/// system's temporary directory (`TMPDIR`) and is removed when dropped.
fn read_only_copy(dir: &Path, count_mirror: bool) -> Result<(Copy, Option<u64>), AuditError> {
    let store = dir.join("db");
    let data = store.join("db");
    if std::fs::symlink_metadata(&store).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(AuditError::io("read", &store)(std::io::Error::other(
            "the store is a symbolic link; readers do not follow one",
        )));
    }
    sweep_stale_copies();
    let file = fsutil::open_read(&data).map_err(AuditError::io("open", &data))?;
    #[cfg(unix)]
    if let Err(e) = fsutil::flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            AuditError::Locked { path: store }
        } else {
            AuditError::io("lock", &data)(e)
        });
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(COPY_PREFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    let copy = builder
        .tempdir()
        .map_err(AuditError::io("create a temporary copy of", &store))?;
    // Held until the copy is dropped: the sweep leaves a locked copy alone.
    let held =
        copy_lock(copy.path()).map_err(AuditError::io("create a temporary copy of", &store))?;
    copy_tree(&store, &copy.path().join("db"))
        .map_err(AuditError::io("copy (to read it unchanged)", &store))?;
    let mirrored = count_mirror.then(|| mirror_count(dir)).transpose()?;
    drop(file);
    Ok((
        Copy {
            dir: copy,
            _held: held,
        },
        mirrored,
    ))
}

/// Names of the readers' copies in the temporary directory:
/// `fabric-audit-read-…`.
const COPY_PREFIX: &str = "fabric-audit-read-";

/// A reader's copy of the store, and the lock on its `lock` file that marks
/// it in use; removed when dropped.
struct Copy {
    dir: tempfile::TempDir,
    _held: File,
}

impl Copy {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Creates `dir/lock` and locks it (exclusively) for as long as the
/// returned file is open.
fn copy_lock(dir: &Path) -> std::io::Result<File> {
    let file = fsutil::create_new(&dir.join("lock"), 0o600)?;
    #[cfg(unix)]
    fsutil::flock(&file, libc::LOCK_EX)?;
    Ok(file)
}

/// Removes copies that readers killed before they could remove them left
/// behind: this user's `fabric-audit-read-…` directories whose `lock` file
/// no one holds (a reader holds its copy's lock from its creation to its
/// removal; a directory without one is left alone). Best effort; errors are
/// ignored.
fn sweep_stale_copies() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        for entry in entries.flatten() {
            let named = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(COPY_PREFIX));
            let ours = named
                && std::fs::symlink_metadata(entry.path())
                    .is_ok_and(|m| m.is_dir() && m.uid() == me);
            if !ours {
                continue;
            }
            let Ok(lock) = fsutil::open_read(&entry.path().join("lock")) else {
                continue;
            };
            if fsutil::flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Copies the regular files and directories under `from` to `to` (0600
/// files, 0700 directories). Anything else (a symbolic link planted in the
/// store) is an error naming it: left out, sled would read a different
/// store.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fsutil::private_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            let mut source = fsutil::open_read(&entry.path())?;
            let mut out = fsutil::create_new(&target, 0o600)?;
            std::io::copy(&mut source, &mut out)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file or directory (a symbolic link?)",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// How many complete lines (records) `log.jsonl` in `dir` holds (0 when
/// there is no such file). A store that holds fewer lost records: the
/// mirror is only written after the store is flushed.
pub fn mirror_count(dir: &Path) -> Result<u64, AuditError> {
    let path = dir.join(MIRROR);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AuditError::io("open", &path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut count = 0;
    loop {
        let buf = reader.fill_buf().map_err(AuditError::io("read", &path))?;
        if buf.is_empty() {
            return Ok(count);
        }
        count += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
}

/// What a writer left in `log.jsonl` when it last wrote it: its length, the
/// records it held (`0..count`), and the modification time the writer gave
/// it. A commit inserts the stamp after its records and flushes both
/// before it writes the mirror, and gives the mirror the stamp's time only
/// once it is synced, so a crash in between leaves a stamp the mirror does
/// not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    count: u64,
    /// Nanoseconds since the Unix epoch.
    mtime_ns: u64,
}

impl Stamp {
    fn encode(&self) -> Vec<u8> {
        [self.len, self.count, self.mtime_ns]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    fn decode(value: &[u8]) -> Option<Stamp> {
        let n = |i: usize| Some(u64::from_be_bytes(value.get(i..i + 8)?.try_into().ok()?));
        (value.len() == 24).then_some(())?;
        Some(Stamp {
            len: n(0)?,
            count: n(8)?,
            mtime_ns: n(16)?,
        })
    }

    /// Gives `file` the stamp's modification time; whether it could (a
    /// failure is logged once per process).
    fn apply(&self, file: &File) -> bool {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(self.mtime_ns);
        let result = file.set_modified(at);
        if let Err(e) = &result {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "cannot set {MIRROR}'s modification time ({e}): opening reads it whole"
                )
            });
        }
        result.is_ok()
    }

    /// Whether a file is still as stamped: any write but the stamping
    /// writer's changes its modification time, even one that keeps its length.
    fn matches(&self, meta: &std::fs::Metadata) -> bool {
        meta.is_file()
            && meta.len() == self.len
            && unix_ns(meta.modified().ok()) == Some(self.mtime_ns)
    }
}

fn unix_ns(time: Option<SystemTime>) -> Option<u64> {
    let since = time?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

fn now_unix_ns() -> Option<u64> {
    unix_ns(Some(SystemTime::now()))
}

/// Checks, in time independent of the log's length, that `log.jsonl` in
/// `dir` is a good prefix of the store's records, so
/// that opening need not read it whole: a one-shot process (`fabric call`)
/// opens the log once per call, and reading every record each time made a
/// call cost time in proportion to the whole history.
///
/// It must be as the last writer left it (the length and modification time
/// of its [`Stamp`]: an edit in place of an earlier line changes the time),
/// and end with the last of the stamp's records, byte for byte. Returns the
/// stamp, or `None` when it cannot tell (no stamp, a crash, an edit, records
/// removed from or replaced at the end of the store, any read error): the
/// caller then counts and repairs the mirror by reading it whole
/// ([`mirror_count`], [`Writer::repair_mirror`]), which also reports a
/// mirror that holds more records than the store.
fn mirror_intact(db: &sled::Db, records: &sled::Tree, dir: &Path) -> Option<Stamp> {
    let stamp = Stamp::decode(&db.get(MIRROR_KEY).ok()??)?;
    let mut file = File::open(dir.join(MIRROR)).ok()?;
    if !stamp.matches(&file.metadata().ok()?) {
        return None;
    }
    let Some(last) = stamp.count.checked_sub(1) else {
        return (stamp.len == 0).then_some(stamp);
    };
    // The end of the previous line (none before the first), the record, its newline.
    let mut want = if last > 0 { vec![b'\n'] } else { Vec::new() };
    want.extend_from_slice(&records.get(last.to_be_bytes()).ok()??);
    want.push(b'\n');
    let at = stamp.len.checked_sub(want.len() as u64)?;
    if last == 0 && at != 0 {
        return None;
    }
    let mut found = vec![0; want.len()];
    file.seek(SeekFrom::Start(at)).ok()?;
    file.read_exact(&mut found).ok()?;
    (found == want).then_some(stamp)
}

/// Reads an export (JSON lines); a torn last line (no newline) is ignored.
/// Items are numbered by position.
pub fn read_jsonl(file: File) -> std::io::Result<Vec<Stored>> {
    let mut follower = Follower::from_start(file);
    follower.read_new()
}

/// Reads a finished export (JSON lines): every record ends with a newline,
/// so a last line without one is an item that does not parse (it was cut or
/// edited), where [`read_jsonl`], for a mirror a live writer may be caught
/// writing, ignores it.
pub fn read_export(file: File) -> std::io::Result<Vec<Stored>> {
    let mut follower = Follower::from_start(file);
    let mut out = follower.read_new()?;
    if follower.partial.iter().any(|b| !b.is_ascii_whitespace()) {
        out.push((
            follower.lines,
            Err(
                "its line does not end with a newline, as every record of an export does: \
                 the file was cut or edited"
                    .into(),
            ),
        ));
    }
    Ok(out)
}

/// Follows a growing JSONL log: each [`Follower::read_new`] reads only what
/// was appended since the last one, and keeps a torn last line for later.
pub struct Follower {
    file: File,
    offset: u64,
    partial: Vec<u8>,
    lines: u64,
}

impl Follower {
    /// Follows `path` from its start.
    pub fn open(path: &Path) -> Result<Follower, AuditError> {
        let file = File::open(path).map_err(AuditError::io("open", path))?;
        Ok(Follower::from_start(file))
    }

    /// Follows `file` from its start.
    fn from_start(file: File) -> Follower {
        Follower {
            file,
            offset: 0,
            partial: Vec::new(),
            lines: 0,
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The complete lines appended since the last call, numbered by position.
    /// A file that shrank (the writer repaired it) is read again from its start.
    pub fn read_new(&mut self) -> std::io::Result<Vec<Stored>> {
        if self.file.metadata()?.len() < self.offset {
            self.offset = 0;
            self.lines = 0;
            self.partial.clear();
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        let start = self.partial.len();
        let n = (&self.file).read_to_end(&mut self.partial)?;
        self.offset += n as u64;
        let Some(end) = self.partial[start..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| start + i + 1)
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for line in self.partial[..end].split_inclusive(|&b| b == b'\n') {
            let parsed = serde_json::from_slice::<Record>(line)
                .map_err(|e| format!("unreadable record: {e}"));
            out.push((self.lines, parsed));
            self.lines += 1;
        }
        self.partial.drain(..end);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_waits_while_the_queue_is_full() {
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(AuditLog {
            tx,
            room: Arc::new(Semaphore::new(2)),
            thread: None,
        });
        let append =
            |log: Arc<AuditLog>| tokio::spawn(async move { log.append(Entry::default()).await });
        let _first = append(log.clone());
        let _second = append(log.clone());
        let third = append(log.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Two entries queued; the third waits for room instead of queueing.
        let queued: Vec<Job> = rx.try_iter().collect();
        assert_eq!(queued.len(), 2);
        assert!(!third.is_finished());
        assert!(rx.try_recv().is_err());
        // The writer takes one (its permit goes with it): the third goes in.
        drop(queued);
        let started = Instant::now();
        while rx.try_recv().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the third never went in"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Records of varied sizes; every 7th is a long one.
    fn entry(i: u64) -> Entry {
        let size = if i % 7 == 6 {
            40_000
        } else {
            (i % 5 * 300) as usize
        };
        Entry {
            time_unix_us: i,
            invocation_id: format!("{i:032x}"),
            tool: format!("t.{i}"),
            outcome: "ok".into(),
            arguments: Some("x".repeat(size)),
            ..Entry::default()
        }
    }

    fn open(dir: &Path, force: bool) -> Result<(Writer, Option<Divergence>), AuditError> {
        Writer::open(&AuditOptions::new(dir), None, force)
    }

    /// Opens the log in `dir` and appends `n` records.
    fn append(dir: &Path, n: u64) -> Writer {
        let (mut w, _) = open(dir, false).unwrap();
        let from = w.next_seq;
        if n > 0 {
            w.write((from..from + n).map(entry).collect()).unwrap();
        }
        w
    }

    /// The stored records, one a line: what the mirror must hold.
    fn stored(w: &Writer) -> Vec<u8> {
        let mut out = Vec::new();
        for item in w.records.iter() {
            out.extend_from_slice(&item.unwrap().1);
            out.push(b'\n');
        }
        out
    }

    fn mirror(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(MIRROR)).unwrap()
    }

    /// What the next opening will find without reading the mirror whole.
    fn intact(w: &Writer) -> Option<Stamp> {
        mirror_intact(&w.db, &w.records, &w.dir)
    }

    /// Where the mirror's last line starts.
    fn last_line_start(bytes: &[u8]) -> usize {
        bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    }

    /// Edits the mirror's line 2 in place, keeping its length (and not its
    /// modification time), as an outsider would.
    fn forge_line_2(dir: &Path) {
        let forged = String::from_utf8(mirror(dir))
            .unwrap()
            .replacen("\"t.2\"", "\"T.2\"", 1);
        std::fs::write(dir.join(MIRROR), forged).unwrap();
    }

    /// Opens the log again, which must read the mirror whole and leave it
    /// the store's.
    fn reopen_repaired_in_full(dir: &Path) -> Writer {
        let w = append(dir, 0);
        assert!(!w.opened_fast);
        assert_eq!(mirror(dir), stored(&w));
        w
    }

    /// Changes the mirror's bytes without changing its length or its
    /// modification time, so that only its content tells.
    fn edit_keeping_time(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
        let path = dir.join(MIRROR);
        let time = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut bytes = mirror(dir);
        edit(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    #[test]
    fn a_log_opened_many_times_keeps_its_mirror_equal_to_the_store() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        for round in 0..20 {
            let mut w = append(&dir, round % 4);
            assert_eq!(mirror(&dir), stored(&w), "round {round}");
            // Only the first opening found no stamp.
            assert_eq!(w.opened_fast, round > 0, "round {round}");
            // The next opening takes the short path.
            let tail = intact(&w).map(|t| (t.len, t.count));
            assert_eq!(
                tail,
                Some((mirror(&dir).len() as u64, w.next_seq)),
                "round {round}"
            );
            if round == 19 {
                // The full repair finds nothing to change.
                w.repair_mirror().unwrap();
                assert_eq!(mirror(&dir), stored(&w));
            }
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_and_rewritten_from_the_store() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        // The last record is one of the long ones.
        drop(append(&dir, 7));
        let bytes = mirror(&dir);
        let start = last_line_start(&bytes);
        let half = start + (bytes.len() - start) / 2;
        std::fs::write(dir.join(MIRROR), &bytes[..half]).unwrap();
        let w = append(&dir, 0);
        assert_eq!(mirror(&dir), bytes);
        assert_eq!(mirror(&dir), stored(&w));
        assert!(intact(&w).is_some());
        drop(w);
        // A batch torn after its first bytes: cut.
        let mut torn = bytes.clone();
        torn.extend_from_slice(br#"{"seq":7,"time_unix"#);
        std::fs::write(dir.join(MIRROR), &torn).unwrap();
        let w = append(&dir, 0);
        assert_eq!(mirror(&dir), bytes);
        assert!(intact(&w).is_some());
    }

    #[test]
    fn a_mirror_missing_its_last_records_gets_them_appended() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 9));
        let bytes = mirror(&dir);
        let cut = last_line_start(&bytes[..last_line_start(&bytes)]);
        std::fs::write(dir.join(MIRROR), &bytes[..cut]).unwrap();
        let w = append(&dir, 1);
        assert_eq!(mirror(&dir), stored(&w));
        assert_eq!(mirror(&dir)[..bytes.len()], bytes[..]);
        assert!(intact(&w).is_some());
        drop(w);
        // Emptied: written again whole.
        std::fs::write(dir.join(MIRROR), b"").unwrap();
        let w = append(&dir, 0);
        assert_eq!(mirror(&dir), stored(&w));
    }

    #[test]
    fn a_mirror_whose_last_line_was_altered_is_repaired_in_full() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 5));
        let genuine = mirror(&dir);
        // Same length, same time: only the last line's content tells.
        edit_keeping_time(&dir, |bytes| {
            let at = last_line_start(bytes);
            let tool = at + bytes[at..].windows(5).position(|w| w == b"t.4\",").unwrap();
            bytes[tool] = b'T';
        });
        assert_ne!(mirror(&dir), genuine);
        reopen_repaired_in_full(&dir);
        assert_eq!(mirror(&dir), genuine);
    }

    #[test]
    fn an_earlier_line_edited_in_place_is_repaired_in_full() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 5));
        let genuine = mirror(&dir);
        // Same length: only the modification time tells.
        forge_line_2(&dir);
        assert_ne!(mirror(&dir), genuine);
        reopen_repaired_in_full(&dir);
        assert_eq!(mirror(&dir), genuine);
    }

    #[test]
    fn a_mirror_with_more_lines_than_the_store_is_a_divergence() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 3));
        let genuine = mirror(&dir);
        let mut more = genuine.clone();
        more.extend_from_slice(&genuine[last_line_start(&genuine)..]);
        std::fs::write(dir.join(MIRROR), &more).unwrap();
        let lost = "log.jsonl holds 4 records but the store only 3: the store lost records";
        match open(&dir, false) {
            Err(AuditError::Diverged { divergence, .. }) => {
                assert_eq!(divergence.remain, 3);
                assert!(divergence.problem.starts_with(lost), "{divergence:?}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a store that lost records"),
        }
        assert_eq!(mirror(&dir), more, "a refused log is left as it is");
        // Forced (as `fabric audit recover` does): reported, and the mirror
        // is made the store's again.
        let (w, divergence) = open(&dir, true).unwrap();
        assert!(divergence.unwrap().problem.starts_with(lost));
        assert_eq!(mirror(&dir), genuine);
        assert_eq!(mirror(&dir), stored(&w));
    }

    #[test]
    fn records_lost_from_the_store_under_an_untouched_mirror_are_a_divergence() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 5));
        let genuine = mirror(&dir);
        {
            let db = open_db(&dir, LOCK_WAIT).unwrap();
            let tree = db.open_tree(RECORDS).unwrap();
            for seq in [3u64, 4] {
                tree.remove(seq.to_be_bytes()).unwrap();
            }
            db.flush().unwrap();
        }
        let Err(AuditError::Diverged { divergence, .. }) = open(&dir, false) else {
            panic!("opened a store that lost records");
        };
        assert!(
            divergence
                .problem
                .contains("log.jsonl holds 5 records but the store only 3"),
            "{divergence:?}"
        );
        assert_eq!(mirror(&dir), genuine);
    }

    #[test]
    fn an_earlier_line_edited_while_the_writer_is_open_is_repaired_on_reopening() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        let mut w = append(&dir, 5);
        forge_line_2(&dir);
        // The writer appends after the edit; it must not vouch for the mirror.
        w.write(vec![entry(5)]).unwrap();
        drop(w);
        reopen_repaired_in_full(&dir);
    }

    #[test]
    fn stored_records_beyond_the_stamp_are_appended_on_the_fast_path() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        let w = append(&dir, 4);
        let old = mirror(&dir);
        let stamp = w.db.get(MIRROR_KEY).unwrap().unwrap();
        drop(w);
        drop(append(&dir, 3));
        // As if the stamps of the last commit were lost with its mirror
        // write: the store holds 7 records, the stamp and the mirror 4.
        std::fs::write(dir.join(MIRROR), &old).unwrap();
        let file = File::options().write(true).open(dir.join(MIRROR)).unwrap();
        assert!(Stamp::decode(&stamp).unwrap().apply(&file));
        {
            let db = open_db(&dir, LOCK_WAIT).unwrap();
            db.insert(MIRROR_KEY, stamp).unwrap();
            db.flush().unwrap();
        }
        let w = append(&dir, 0);
        assert!(w.opened_fast);
        assert_eq!(w.next_seq, 7);
        assert_eq!(mirror(&dir), stored(&w));
        assert_eq!(mirror(&dir)[..old.len()], old[..]);
    }

    /// Removes records `from..` from the closed store in `dir`, leaving its
    /// head and the mirror as they are.
    fn lose_from_store(dir: &Path, from: u64) {
        let db = open_db(dir, LOCK_WAIT).unwrap();
        let tree = db.open_tree(RECORDS).unwrap();
        let keys: Vec<_> = tree
            .range(from.to_be_bytes()..)
            .map(|item| item.unwrap().0)
            .collect();
        for key in keys {
            tree.remove(key).unwrap();
        }
        db.flush().unwrap();
    }

    #[test]
    fn recovering_puts_back_the_records_the_mirror_still_chains() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 8));
        let genuine = mirror(&dir);
        lose_from_store(&dir, 5);
        // Refused, then recovered: nothing the mirror held is lost.
        assert!(matches!(
            open(&dir, false),
            Err(AuditError::Diverged { .. })
        ));
        let (w, divergence) = open(&dir, true).unwrap();
        assert_eq!(divergence.unwrap().remain, 5);
        assert_eq!((w.replayed, w.next_seq, w.kept.clone()), (3, 8, None));
        assert_eq!(mirror(&dir), genuine);
        assert_eq!(stored(&w), genuine);
        drop(w);
        // Opens as a healthy log now.
        assert!(open(&dir, false).unwrap().1.is_none());

        // The whole store deleted.
        std::fs::remove_dir_all(dir.join("db")).unwrap();
        let (w, _) = open(&dir, true).unwrap();
        assert_eq!((w.replayed, w.next_seq), (8, 8));
        assert_eq!(stored(&w), genuine);
    }

    /// Record hashes carry no key: a tail rewritten and re-hashed chains
    /// perfectly, but does not reach the stored head's hash, so recovery
    /// does not make it history.
    #[test]
    fn recovering_puts_back_nothing_a_rehashed_tail_would_make_history() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 8));
        let genuine = mirror(&dir);
        lose_from_store(&dir, 5);
        let lines: Vec<&[u8]> = genuine.split_inclusive(|&b| b == b'\n').collect();
        let read =
            |line: &[u8]| -> Record { serde_json::from_slice(&line[..line.len() - 1]).unwrap() };
        let mut forged = lines[..5].concat();
        let mut prev = read(lines[4]);
        for line in &lines[5..] {
            let mut r = read(line);
            r.tool = format!("forged.{}", r.seq);
            r.prev_hash = prev.hash.clone();
            r.hash = r.compute_hash().unwrap().to_hex().to_string();
            forged.extend_from_slice(&serde_json::to_vec(&r).unwrap());
            forged.push(b'\n');
            prev = r;
        }
        std::fs::write(dir.join(MIRROR), &forged).unwrap();
        let (w, _) = open(&dir, true).unwrap();
        assert_eq!((w.replayed, w.next_seq), (0, 5));
        assert_eq!(mirror(&dir), lines[..5].concat());
        assert!(w.kept.is_some());
    }

    #[test]
    fn recovering_keeps_aside_mirror_lines_it_cannot_put_back() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        drop(append(&dir, 6));
        let genuine = mirror(&dir);
        lose_from_store(&dir, 3);
        // Record 4 altered in the mirror: the chain does not reach the
        // stored head (6 records), so none of 3, 4, 5 is put back; all are
        // kept aside.
        let lines: Vec<&[u8]> = genuine.split_inclusive(|&b| b == b'\n').collect();
        let forged = String::from_utf8(lines[4].to_vec())
            .unwrap()
            .replacen("\"t.4\"", "\"T.4\"", 1);
        let mut edited = lines[..4].concat();
        edited.extend_from_slice(forged.as_bytes());
        edited.extend_from_slice(lines[5]);
        std::fs::write(dir.join(MIRROR), &edited).unwrap();
        let (w, _) = open(&dir, true).unwrap();
        assert_eq!((w.replayed, w.next_seq), (0, 3));
        assert_eq!(mirror(&dir), lines[..3].concat());
        let kept = w.kept.clone().expect("the cut lines were kept");
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            edited[lines[..3].concat().len()..]
        );
        assert!(kept
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("log.jsonl.cut-"));
    }
}
