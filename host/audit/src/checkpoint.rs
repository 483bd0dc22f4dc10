//! Signed checkpoints of the log's head, in the C2SP formats
//! (<https://c2sp.org/tlog-checkpoint>, <https://c2sp.org/signed-note>).
//!
//! A checkpoint commits to the log's size and the hash of its last record.
//! An auditor who keeps one can later prove that the first `size` records
//! are unchanged: a history rewritten and re-hashed ends in another hash.
//!
//! ```text
//! fabric-audit                      <- origin (the key name)
//! 42                                <- number of records
//! q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=   <- base64 hash of record 41
//!
//! — fabric-audit AAAAAbase64(key id || ed25519 signature)
//! ```

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, Verifier};
use sha2::Digest;

use crate::error::AuditError;
use crate::fsutil;

/// Signature-type byte of Ed25519 keys in signed notes.
const ED25519: u8 = 0x01;
/// The key name (and checkpoint origin) of keys Fabric generates.
pub const DEFAULT_KEY_NAME: &str = "fabric-audit";

/// The signed head of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number of records.
    pub size: u64,
    /// Hash of record `size - 1` (zeros when empty).
    pub hash: [u8; 32],
}

/// A private key for signing checkpoints, kept apart from the data directory.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

/// A public key for verifying checkpoints (signed-note verifier key).
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

/// A checkpoint that does not verify, or a key file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(pub String);

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn hex4(id: [u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the verifier (public) key of the private key at `private` lives:
/// beside it, with `.pub` appended (`audit.key` → `audit.key.pub`).
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

impl SigningKey {
    /// Loads the private key at `path`, or creates one there (mode 0600, its
    /// directory 0700) with its verifier key beside it at
    /// [`public_key_path`]. Never overwrites a file: a verifier key already at
    /// that path without its private key is an error, and so is a file at
    /// `path` that is not a private key.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, AuditError> {
        let key_err = |problem: String| AuditError::Key {
            path: path.to_path_buf(),
            problem: CheckpointError(problem),
        };
        let read = || {
            let text = std::fs::read_to_string(path).map_err(AuditError::io("read", path))?;
            let text = text.trim();
            SigningKey::parse(text).map_err(|e| {
                if VerifyingKey::parse(text).is_ok() {
                    key_err(
                        "this is a verifier (public) key, not the private key that signs checkpoints; \
                         pass the private key file (the one without .pub)"
                            .into(),
                    )
                } else {
                    key_err(e.0)
                }
            })
        };
        if path.exists() {
            return read();
        }
        let public = public_key_path(path);
        if public.exists() {
            return Err(key_err(format!(
                "there is no private key here but {} exists; refusing to overwrite it: \
                 pass the private key that belongs to it, or move it away to create a new pair",
                public.display()
            )));
        }
        let key = SigningKey {
            name: DEFAULT_KEY_NAME.into(),
            key: ed25519_dalek::SigningKey::from_bytes(&rand::random()),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                fsutil::private_dir(parent).map_err(AuditError::io("create", parent))?;
            }
        }
        // Processes starting at once race to create the key: one wins, the
        // others read the key it made.
        let created = fsutil::publish_new(path, 0o600, format!("{}\n", key.encode()).as_bytes())
            .map_err(AuditError::io("create", path))?;
        if !created {
            return read();
        }
        write_new(&public, 0o644, &key.verifying_key().encode())?;
        Ok(key)
    }

    /// Parses `PRIVATE+KEY+NAME+HEXID+BASE64(0x01 || seed)`.
    pub fn parse(text: &str) -> Result<SigningKey, CheckpointError> {
        let bad =
            || CheckpointError("not a signed-note private key (PRIVATE+KEY+name+id+key)".into());
        let rest = text.strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let (name, _id, seed) = split_key(rest).ok_or_else(bad)?;
        Ok(SigningKey {
            name: name.into(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    fn encode(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let mut raw = vec![ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex4(key_id(&self.name, &public)),
            B64.encode(raw)
        )
    }

    /// The matching verifier key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let key = self.key.verifying_key();
        VerifyingKey {
            name: self.name.clone(),
            id: key_id(&self.name, &key.to_bytes()),
            key,
        }
    }
}

/// Splits `name+hexid+base64(0x01 || 32 bytes)`; names and hex ids contain
/// no '+', base64 may.
fn split_key(text: &str) -> Option<(&str, &str, [u8; 32])> {
    let mut parts = text.splitn(3, '+');
    let (name, id, b64) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = B64.decode(b64).ok()?;
    let key = bytes.strip_prefix(&[ED25519])?.try_into().ok()?;
    Some((name, id, key))
}

/// Writes `text` and a newline to a new file (never through a link, never
/// over an existing file).
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), AuditError> {
    use std::io::Write;
    fsutil::create_new(path, mode)
        .and_then(|mut f| {
            writeln!(f, "{text}")?;
            f.sync_all()
        })
        .map_err(AuditError::io("create", path))
}

impl VerifyingKey {
    /// Parses `NAME+HEXID+BASE64(0x01 || public key)`.
    pub fn parse(text: &str) -> Result<VerifyingKey, CheckpointError> {
        let bad = || CheckpointError("not a signed-note verifier key (name+id+key)".into());
        let (name, id, public) = split_key(text.trim()).ok_or_else(bad)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
        let vk = VerifyingKey {
            name: name.into(),
            id: key_id(name, &public),
            key,
        };
        if hex4(vk.id) != id {
            return Err(CheckpointError(
                "verifier key id does not match its key".into(),
            ));
        }
        Ok(vk)
    }

    /// The text form.
    pub fn encode(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!("{}+{}+{}", self.name, hex4(self.id), B64.encode(raw))
    }
}

impl Checkpoint {
    /// The signed note text.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = format!("{}\n{}\n{}\n", key.name, self.size, B64.encode(self.hash));
        let signature = key.key.sign(body.as_bytes());
        let mut blob = key_id(&key.name, &key.key.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", key.name, B64.encode(blob))
    }

    /// Parses a signed note and checks its signature by `key`.
    pub fn verify(note: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: &str| CheckpointError(format!("checkpoint: {m}"));
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines.next().ok_or_else(|| bad("no origin line"))?;
        let size: u64 = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("bad size line"))?;
        let hash: [u8; 32] = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("bad hash line"))?;
        if origin != key.name {
            return Err(bad(&format!(
                "origin {origin:?} is not the key's name {:?}",
                key.name
            )));
        }
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                continue;
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(blob) = B64.decode(b64) else { continue };
            if name != key.name || blob.len() != 68 || blob[..4] != key.id {
                continue;
            }
            let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| bad("malformed signature"))?;
            return match key.key.verify(body.as_bytes(), &signature) {
                Ok(()) => Ok(Checkpoint { size, hash }),
                Err(_) => Err(bad("signature invalid")),
            };
        }
        Err(bad("no signature by this key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_detect_changes() {
        let key = SigningKey {
            name: "test-log".into(),
            key: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        };
        let vk = VerifyingKey::parse(&key.verifying_key().encode()).unwrap();
        let cp = Checkpoint {
            size: 42,
            hash: [9; 32],
        };
        let note = cp.sign(&key);
        assert!(note.starts_with("test-log\n42\n"));
        assert_eq!(Checkpoint::verify(&note, &vk), Ok(cp));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            Checkpoint::verify(&forged, &vk),
            Err(CheckpointError("checkpoint: signature invalid".into()))
        );
        let other = SigningKey {
            name: "test-log".into(),
            key: ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        };
        assert!(Checkpoint::verify(&note, &other.verifying_key()).is_err());
        let reparsed = SigningKey::parse(&key.encode()).unwrap();
        assert_eq!(
            reparsed.verifying_key().encode(),
            key.verifying_key().encode()
        );
    }
}
