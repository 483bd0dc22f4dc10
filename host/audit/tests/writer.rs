//! The writer as a long-running server uses it: checkpoints while idle, an
//! explicit close, mirror repair, private files, keys that are never
//! overwritten, and no write through a planted symbolic link.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fabric_audit::{
    public_key_path, read_jsonl, read_records, verify, AuditError, AuditLog, AuditOptions,
    Checkpoint, Entry, Follower, SigningKey, Source, VerifyingKey,
};

fn entry(tool: &str) -> Entry {
    Entry {
        tool: tool.into(),
        invocation_id: "id".into(),
        outcome: "ok".into(),
        ..Entry::default()
    }
}

fn options(dir: &Path, key: &Path) -> AuditOptions {
    AuditOptions {
        key: Some(key.to_path_buf()),
        ..AuditOptions::new(dir.join("audit"))
    }
}

/// The signed size of `DATA/audit/checkpoint`, if there is one.
fn checkpoint_size(dir: &Path, key: &Path) -> Option<u64> {
    let note = std::fs::read_to_string(dir.join("audit/checkpoint")).ok()?;
    let vk = VerifyingKey::parse(&std::fs::read_to_string(public_key_path(key)).unwrap()).unwrap();
    Some(Checkpoint::verify(&note, &vk).unwrap().size)
}

#[tokio::test]
async fn an_idle_writer_signs_a_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("keys/audit.key");
    let log = AuditLog::open(&AuditOptions {
        checkpoint_every: Duration::from_millis(300),
        ..options(data.path(), &key)
    })
    .unwrap();
    let written = Instant::now();
    for i in 0..3 {
        log.append(entry(&format!("t.{i}"))).await.unwrap();
    }
    // No more calls arrive; the log stays open.
    let signed = loop {
        if checkpoint_size(data.path(), &key) == Some(3) {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "no checkpoint signed while idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        signed < Duration::from_millis(1500),
        "signed after {signed:?}"
    );
    drop(log);
}

#[tokio::test]
async fn close_drains_flushes_signs_and_releases_the_store() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let log = std::sync::Arc::new(AuditLog::open(&options(data.path(), &key)).unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(entry(&format!("t.{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let log = std::sync::Arc::into_inner(log).unwrap();
    log.close().await.unwrap();
    assert_eq!(checkpoint_size(data.path(), &key), Some(50));
    let (source, items, head) = read_records(&data.path().join("audit")).unwrap();
    assert_eq!(source, Source::Store, "close released the store");
    assert_eq!(verify(&items, 0, head, None).unwrap().count, 50);
}

#[tokio::test]
async fn mirror_repair_compares_content_not_only_sequence_numbers() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let log = AuditLog::open(&options(data.path(), &key)).unwrap();
    for tool in ["a.one", "a.two", "a.three"] {
        log.append(entry(tool)).await.unwrap();
    }
    log.close().await.unwrap();
    let mirror = data.path().join("audit/log.jsonl");
    let genuine = std::fs::read_to_string(&mirror).unwrap();
    // Same sequence numbers, other content.
    let forged = genuine.replacen("a.two", "a.TWO", 1);
    assert_ne!(forged, genuine);
    std::fs::write(&mirror, &forged).unwrap();
    AuditLog::open(&options(data.path(), &key))
        .unwrap()
        .close()
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&mirror).unwrap(), genuine);
}

#[tokio::test]
async fn audit_files_are_private() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("keys/audit.key");
    // Opened twice and read: sled writes snapshots at opening and closing.
    for _ in 0..2 {
        let log = AuditLog::open(&options(data.path(), &key)).unwrap();
        for _ in 0..200 {
            log.append(entry("a.b")).await.unwrap();
        }
        log.close().await.unwrap();
        read_records(&data.path().join("audit")).unwrap();
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let audit = data.path().join("audit");
    assert_eq!(mode(&audit), 0o700);
    assert_eq!(mode(&data.path().join("keys")), 0o700);
    assert_eq!(mode(&key), 0o600);
    for file in ["log.jsonl", "checkpoint"] {
        assert_eq!(mode(&audit.join(file)), 0o600, "{file}");
    }
    let mut stack = vec![audit.join("db")];
    while let Some(dir) = stack.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
            }
        }
    }
}

/// Every file under `dir`, with its content, modification time and mode.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let content = std::fs::read(e.path()).unwrap();
                out.push((
                    e.path(),
                    content,
                    meta.modified().unwrap(),
                    meta.permissions().mode(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn reading_a_damaged_store_leaves_it_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let log = AuditLog::open(&options(data.path(), &key)).unwrap();
    for i in 0..20 {
        log.append(entry(&format!("t.{i}"))).await.unwrap();
    }
    log.close().await.unwrap();
    let audit = data.path().join("audit");
    // A torn, garbled tail, as a crash or an attacker leaves it: sled's
    // recovery at opening would cut it off.
    let file = audit.join("db/db");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0xA5; 4096]);
    std::fs::write(&file, &bytes).unwrap();
    let before = snapshot(&audit);
    std::thread::sleep(Duration::from_millis(20));
    let (source, items, _) = read_records(&audit).unwrap();
    assert_eq!(source, Source::Store);
    assert_eq!(items.len(), 20);
    fabric_audit::read_log(&audit, true).unwrap();
    assert!(before == snapshot(&audit), "reading changed the store");
}

#[tokio::test]
async fn a_symbolic_link_in_the_store_is_an_error_not_an_empty_log() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let log = AuditLog::open(&options(data.path(), &key)).unwrap();
    for i in 0..5 {
        log.append(entry(&format!("t.{i}"))).await.unwrap();
    }
    log.close().await.unwrap();
    let audit = data.path().join("audit");
    let file = audit.join("db/db");
    let moved = data.path().join("elsewhere");
    std::fs::rename(&file, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &file).unwrap();
    let err = chain(&read_records(&audit).expect_err("a planted link is not read past"));
    assert!(err.contains("db/db"), "{err}");
    // A link elsewhere in the store is refused too.
    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&moved, &file).unwrap();
    std::os::unix::fs::symlink(&moved, audit.join("db/conf2")).unwrap();
    let err = chain(&read_records(&audit).expect_err("a planted link is not left out"));
    assert!(
        err.contains("conf2") && err.contains("symbolic link"),
        "{err}"
    );
}

/// An error with its causes, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

#[tokio::test]
async fn a_killed_readers_copy_is_removed_by_the_next_reader() {
    use std::os::unix::io::AsRawFd;
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let log = AuditLog::open(&options(data.path(), &key)).unwrap();
    log.append(entry("a.b")).await.unwrap();
    log.close().await.unwrap();
    let tmp = std::env::temp_dir();
    let id = std::process::id();
    // A killed reader's copy (its lock free), a live one's (held), and a
    // directory that only shares the prefix (no lock file).
    let stale = tmp.join(format!("fabric-audit-read-stale{id}"));
    let live = tmp.join(format!("fabric-audit-read-live{id}"));
    let other = tmp.join(format!("fabric-audit-read-notes{id}"));
    for dir in [&stale, &live, &other] {
        std::fs::create_dir_all(dir.join("db")).unwrap();
    }
    std::fs::write(stale.join("lock"), "").unwrap();
    let held = std::fs::File::create(live.join("lock")).unwrap();
    // SAFETY: flock on a descriptor the test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    read_records(&data.path().join("audit")).unwrap();
    assert!(!stale.exists(), "the killed reader's copy stays");
    assert!(live.exists(), "a live reader's copy was removed");
    assert!(other.exists(), "a directory without a lock was removed");
    drop(held);
    for dir in [&live, &other] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[tokio::test]
async fn a_planted_symlink_does_not_redirect_a_write() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("audit.key");
    let victim = data.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let audit = data.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    // The old fixed temp name of the checkpoint, and the mirror itself.
    std::os::unix::fs::symlink(&victim, audit.join("checkpoint.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, audit.join("log.jsonl")).unwrap();
    match AuditLog::open(&options(data.path(), &key)) {
        Err(AuditError::Io { path, .. }) => assert!(path.ends_with("log.jsonl"), "{path:?}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a mirror that is a symbolic link"),
    }
    std::fs::remove_file(audit.join("log.jsonl")).unwrap();
    let log = AuditLog::open(&options(data.path(), &key)).unwrap();
    log.append(entry("a.b")).await.unwrap();
    log.close().await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(checkpoint_size(data.path(), &key), Some(1));
    // A symlink at the key's path is refused too.
    let planted = data.path().join("planted.key");
    std::os::unix::fs::symlink(data.path().join("elsewhere"), &planted).unwrap();
    assert!(SigningKey::load_or_create(&planted).is_err());
    assert!(!data.path().join("elsewhere").exists());
}

#[test]
fn keys_have_one_public_name_and_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    let signing = SigningKey::load_or_create(&key).unwrap();
    let public = dir.path().join("audit.key.pub");
    assert_eq!(public_key_path(&key), public);
    let public_text = std::fs::read_to_string(&public).unwrap();
    assert_eq!(public_text.trim(), signing.verifying_key().encode());
    let private_text = std::fs::read_to_string(&key).unwrap();

    // `--audit-key audit.key.pub`: a verifier key is not a private key.
    let err = SigningKey::load_or_create(&public)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("verifier (public) key"), "{err}");
    // A private key whose public half exists without it: refuse, keep both.
    std::fs::remove_file(&key).unwrap();
    let err = SigningKey::load_or_create(&key).err().unwrap().to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_text);
    assert!(!key.exists());
    // A file that is no key at all.
    std::fs::write(&key, "hello").unwrap();
    let err = SigningKey::load_or_create(&key).err().unwrap().to_string();
    assert!(err.contains("not a signed-note private key"), "{err}");
    std::fs::write(&key, &private_text).unwrap();
    assert_eq!(
        SigningKey::load_or_create(&key)
            .unwrap()
            .verifying_key()
            .encode(),
        public_text.trim()
    );
}

#[test]
fn a_follower_reads_only_what_was_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let line = |seq: u64| {
        let mut r = fabric_audit::Record::seal(entry("a.b"), seq, [0; 32]).unwrap();
        r.seq = seq;
        format!("{}\n", serde_json::to_string(&r).unwrap())
    };
    std::fs::write(&path, line(0) + &line(1)).unwrap();
    let mut follower = Follower::open(&path).unwrap();
    assert_eq!(follower.read_new().unwrap().len(), 2);
    let read = follower.offset();
    assert_eq!(read, std::fs::metadata(&path).unwrap().len());
    assert!(follower.read_new().unwrap().is_empty());
    assert_eq!(follower.offset(), read, "nothing new, nothing read");
    let next = line(2);
    let (head, tail) = next.split_at(next.len() / 2);
    let append = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(head);
    assert!(follower.read_new().unwrap().is_empty(), "a torn line waits");
    append(tail);
    let new = follower.read_new().unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].1.as_ref().unwrap().seq, 2);
    assert_eq!(follower.offset() - read, next.len() as u64);
    // A rewritten (shorter) file is read again from its start.
    std::fs::write(&path, line(0)).unwrap();
    assert_eq!(follower.read_new().unwrap().len(), 1);
    assert_eq!(
        read_jsonl(std::fs::File::open(&path).unwrap())
            .unwrap()
            .len(),
        1
    );
}
