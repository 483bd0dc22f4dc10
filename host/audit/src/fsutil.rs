//! Files the audit log creates: private (0600 files, 0700 directories),
//! never written through a symbolic link planted in their place. The host
//! uses the same primitives for its compiled-code cache and its key.
//!
//! Every new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`; files that
//! are replaced whole (the checkpoint) are written to a fresh, uniquely named
//! temporary file in the same directory and renamed over the old one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and missing parents) as 0700, and makes an existing `dir`
/// 0700.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    restrict(dir, 0o700)
}

/// Sets `path`'s mode (Unix only; elsewhere a no-op).
pub(crate) fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Makes every file under `dir` 0600 and every directory 0700 (for the
/// files sled creates with the process's umask).
pub(crate) fn restrict_tree(dir: &Path) -> io::Result<()> {
    restrict(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict_tree(&entry.path())?;
        } else if kind.is_file() {
            restrict(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

fn options(mode: u32) -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    #[cfg(not(unix))]
    let _ = mode;
    options
}

/// Creates a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`) with `mode`; fails if
/// anything, a symbolic link included, is already at `path`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    options(mode).write(true).create_new(true).open(path)
}

/// Takes `op` on `file`'s advisory lock (`libc::LOCK_SH` or `LOCK_EX`, with
/// `LOCK_NB` not to wait: then a lock held elsewhere is `WouldBlock`).
#[cfg(unix)]
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens `path` for reading; refuses a symbolic link.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    options(0o600).read(true).open(path)
}

/// Opens `path` for reading and appending, creating it 0600; refuses a
/// symbolic link.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let file = options(0o600)
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    restrict(path, 0o600)?;
    Ok(file)
}

/// Creates `path` holding `bytes` (mode `mode`) unless something is
/// already there, atomically: written and synced to a new temporary file,
/// then hard-linked into place, so a reader never sees it half-written and
/// of processes racing to create it exactly one wins. Returns whether this
/// call created it.
pub fn publish_new(path: &Path, mode: u32, bytes: &[u8]) -> io::Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = create_new(&tmp, mode).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes`: written and synced to a new, uniquely named
/// temporary file beside it, then renamed over it. Returns the temporary
/// file's path on failure, for the message.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = create_new(&tmp, 0o600).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err((tmp, e));
    }
    Ok(())
}
