//! Reading and writing files that someone other than Fabric may have put in
//! place: tool components, policies, cached compiled code and its key.
//!
//! Reads take regular files only, opened without blocking (a FIFO or a
//! device is refused, never read) and bounded in size. Writes go to a fresh
//! temporary file created with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600), then
//! renamed into place, so a reader sees the old file or the whole new one
//! and a link planted at the temporary name is never written through.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Whether a symbolic link as the last part of a path is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Follow it (the file it names is checked instead).
    Follow,
    /// Refuse it.
    Refuse,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// It is a FIFO, a device, a socket or a directory.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// It is larger than allowed.
    #[error("it is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size, or at least how much was there.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// Whether the file does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads the regular file at `path`, at most `limit` bytes. A FIFO or device
/// is refused from the opened file's own metadata, so swapping the path
/// between a check and the open changes nothing.
pub(crate) fn read_regular(path: &Path, limit: u64, links: Links) -> Result<Vec<u8>, ReadError> {
    let (file, len) = open_regular(path, limit, links)?;
    let mut bytes = Vec::with_capacity(len as usize);
    copy_limited(&file, limit, &mut bytes)?;
    Ok(bytes)
}

/// Copies `file` into `to`, at most `limit` bytes: one byte past it tells a
/// file that grew since it was opened apart. The bytes copied.
pub(crate) fn copy_limited(
    file: &File,
    limit: u64,
    to: &mut impl std::io::Write,
) -> Result<u64, ReadError> {
    let copied = std::io::copy(&mut file.take(limit.saturating_add(1)), to)?;
    if copied > limit {
        return Err(ReadError::TooLarge {
            size: copied,
            limit,
        });
    }
    Ok(copied)
}

/// Opens the regular file at `path` for reading, if it is at most `limit`
/// bytes (checked on the opened file); the file and its size. A reader must
/// still stop one byte past `limit`: the file may grow.
pub(crate) fn open_regular(
    path: &Path,
    limit: u64,
    links: Links,
) -> Result<(File, u64), ReadError> {
    let file = open_read(path, links)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(describe(&kind)));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

#[cfg(unix)]
fn open_read(path: &Path, links: Links) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = match links {
        Links::Follow => 0,
        Links::Refuse => libc::O_NOFOLLOW,
    };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(path)
}

#[cfg(not(unix))]
fn open_read(path: &Path, _links: Links) -> std::io::Result<File> {
    File::open(path)
}

/// "a FIFO", "a directory", … for messages.
pub(crate) fn describe(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Writes `parts` to `path` atomically: a fresh temporary file beside it
/// (unique name, `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), then a rename
/// over `path`. Concurrent writers in any number of processes each rename
/// a whole file; the last one wins.
pub(crate) fn write_atomic(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let (tmp, mut file) = create_temp(path)?;
    let written = parts
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A new file beside `path` under a random name, created exclusively.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    loop {
        let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        match fabric_audit::fsutil::create_new(&tmp, 0o600) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `dir` and its missing parents, the new ones private (0700).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
