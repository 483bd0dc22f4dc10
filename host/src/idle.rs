//! Idle tools give their compiled code's pages back.
//!
//! A tool's compiled code is a file of the compile cache mapped into the
//! process (see `registry::load_checked`): the pages its calls touched stay
//! mapped, and count in the server's resident memory, long after the last
//! call (about 30 MB for the JavaScript and Python example tools). When a
//! tool has had no call running for a while ([`Registry::release_idle`], run
//! by `fabric serve` every half of `--release-idle`, at least every second), its mapping's pages are dropped with
//! `madvise(MADV_DONTNEED)`: they stay in the page cache, and the next call
//! maps them back in with minor faults (see the README for what that costs).
//!
//! `MADV_DONTNEED` on a private mapping also throws away pages the process
//! itself wrote (they would come back as the file's bytes, or as zeros), so
//! a range is released only when `/proc/self/smaps` shows every mapping in it
//! backed by a file, with no page of the process's own in memory or in swap
//! (`Anonymous: 0`, `Swap: 0`, no huge-TLB pages). A component compiled in
//! this process (a cache miss) has its code in anonymous memory: it is never
//! released. Published code is read-only, so none can be written after the
//! check.
//!
//! [`Registry::release_idle`]: crate::registry::Registry::release_idle

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since this process first asked: when a tool was last used.
pub fn now_ms() -> u64 {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    STARTED.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What releasing a range did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// This many bytes were resident and are given back.
    Pages(u64),
    /// Some mapping of the range is not a file's, or holds pages of the
    /// process's own: left alone.
    Kept,
    /// Not on this system (no `/proc/self/smaps`, not Linux).
    Unsupported,
}

/// One mapping of `/proc/self/smaps`: its address range and what of it is
/// resident and private.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    range: Range<usize>,
    /// Whether a file backs it (an inode in its header line).
    file: bool,
    rss_kb: u64,
    /// Pages of the process's own: in memory, in swap, huge-TLB.
    anonymous_kb: u64,
    swap_kb: u64,
    hugetlb_kb: u64,
}

impl Mapping {
    /// Whether dropping its pages loses nothing: every page is the file's.
    fn only_the_files(&self) -> bool {
        self.file && self.anonymous_kb == 0 && self.swap_kb == 0 && self.hugetlb_kb == 0
    }
}

/// The mappings of `smaps` text.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let first = fields.first().copied().unwrap_or_default();
        if let Some((from, to)) = first.split_once('-') {
            if let (Ok(from), Ok(to)) = (
                usize::from_str_radix(from, 16),
                usize::from_str_radix(to, 16),
            ) {
                // ADDRESS PERMS OFFSET DEVICE INODE [PATH]
                let inode = fields.get(4).copied().unwrap_or("0");
                out.push(Mapping {
                    range: from..to,
                    file: inode != "0",
                    rss_kb: 0,
                    anonymous_kb: 0,
                    swap_kb: 0,
                    hugetlb_kb: 0,
                });
                continue;
            }
        }
        let field = |name: &str| {
            line.strip_prefix(name).and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        if let Some(last) = out.last_mut() {
            if let Some(kb) = field("Rss:") {
                last.rss_kb = kb;
            } else if let Some(kb) = field("Anonymous:") {
                last.anonymous_kb = kb;
            } else if let Some(kb) = field("Swap:") {
                last.swap_kb = kb;
            } else if let Some(kb) = field("Private_Hugetlb:").or_else(|| field("Shared_Hugetlb:"))
            {
                last.hugetlb_kb += kb;
            }
        }
    }
    out
}

/// Gives back the resident pages of `range` (a mapped file's, such as a
/// component's code image loaded from the compile cache), unless some
/// mapping in it is not a file's or holds pages of the process's own.
///
/// # Safety
///
/// The files mapped in `range` must not change while mapped (the next access
/// reads them again), and nothing may rely on the pages being resident.
pub(crate) unsafe fn release(range: Range<*const u8>) -> Released {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return Released::Unsupported;
        };
        let (start, end) = (range.start as usize, range.end as usize);
        // SAFETY: sysconf only reads a system setting.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => return Released::Unsupported,
        };
        let overlapping: Vec<Mapping> = mappings(&smaps)
            .into_iter()
            .filter(|m| m.range.start < end && start < m.range.end)
            .collect();
        if overlapping.is_empty() || !overlapping.iter().all(Mapping::only_the_files) {
            return Released::Kept;
        }
        let mut released = 0;
        for m in overlapping {
            // Whole pages of the range inside this mapping.
            let from = start.max(m.range.start).next_multiple_of(page);
            let to = end.min(m.range.end) / page * page;
            if from >= to {
                continue;
            }
            // SAFETY: the pages lie in a file's mapping and none of them holds
            // data of the process's own (checked above); the file does not
            // change (the caller's promise), so dropping them changes no byte
            // anyone reads: the next access maps the file's page again.
            let done =
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
            if done == 0 {
                released += m.rss_kb * 1024;
            }
        }
        Released::Pages(released)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = range;
        Released::Unsupported
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    /// The resident KiB of the mapping at `at`.
    fn rss_kb(at: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        mappings(&smaps)
            .into_iter()
            .find(|m| m.range.contains(&at))
            .map_or(0, |m| m.rss_kb)
    }

    /// A file of 1 MiB of known bytes, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A private mapping (read-only unless `writable`) of a 1 MiB file of
    /// known bytes, every page read once.
    fn mapped(writable: bool) -> (Scratch, *mut u8, usize) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fabric-idle-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let scratch_path = path.clone();
        let len = 1 << 20;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        file.flush().unwrap();
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping of a file this test owns.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let ptr = ptr.cast::<u8>();
        let mut sum = 0u64;
        for i in (0..len).step_by(4096) {
            // SAFETY: inside the mapping.
            sum += u64::from(unsafe { ptr.add(i).read_volatile() });
        }
        std::hint::black_box(sum);
        // The mapping outlives the file handle.
        (Scratch(scratch_path), ptr, len)
    }

    #[test]
    fn an_untouched_file_mapping_gives_its_pages_back_and_reads_the_same() {
        let (_file, ptr, len) = mapped(false);
        let at = ptr as usize;
        assert!(rss_kb(at) >= 1000, "every page was read: {}", rss_kb(at));
        let range = ptr.cast_const()..ptr.cast_const().wrapping_add(len);
        // SAFETY: the test's file does not change.
        assert!(matches!(unsafe { release(range) }, Released::Pages(n) if n >= 1000 * 1024));
        assert!(rss_kb(at) < 100, "released: {} KiB resident", rss_kb(at));
        // The bytes are the file's, as before.
        for i in (0..len).step_by(4093) {
            // SAFETY: inside the mapping.
            assert_eq!(unsafe { ptr.add(i).read_volatile() }, (i % 251) as u8);
        }
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(ptr.cast(), len) };
    }

    #[test]
    fn a_mapping_with_a_page_of_its_own_is_left_alone() {
        let (_file, ptr, len) = mapped(true);
        // SAFETY: inside the mapping, which is writable.
        unsafe { ptr.add(8192).write_volatile(7) };
        let range = ptr.cast_const()..ptr.cast_const().wrapping_add(len);
        // SAFETY: the test's file does not change.
        assert_eq!(unsafe { release(range) }, Released::Kept);
        // SAFETY: inside the mapping.
        assert_eq!(
            unsafe { ptr.add(8192).read_volatile() },
            7,
            "the write is kept"
        );
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(ptr.cast(), len) };
    }

    #[test]
    fn anonymous_memory_is_never_released_even_with_nothing_written() {
        // Like code compiled in this process, or pages in swap: smaps says
        // `Anonymous: 0`, and dropping them would make them zeros.
        let len = 1 << 20;
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let ptr = ptr.cast::<u8>().cast_const();
        // SAFETY: nothing relies on the pages.
        assert_eq!(
            unsafe { release(ptr..ptr.wrapping_add(len)) },
            Released::Kept
        );
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(ptr.cast_mut().cast(), len) };
    }

    #[test]
    fn smaps_fields_are_read_per_mapping() {
        let text = "\
7f00-7f10 r-xp 00001000 fd:00 12 /data/compiled/x.cwasm
Size:                 64 kB
Rss:                  48 kB
Anonymous:             0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
7f10-7f20 rw-p 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
Swap:                  4 kB
VmFlags: rd wr mr mw me ac
";
        assert_eq!(
            mappings(text),
            vec![
                Mapping {
                    range: 0x7f00..0x7f10,
                    file: true,
                    rss_kb: 48,
                    anonymous_kb: 0,
                    swap_kb: 0,
                    hugetlb_kb: 0,
                },
                Mapping {
                    range: 0x7f10..0x7f20,
                    file: false,
                    rss_kb: 8,
                    anonymous_kb: 8,
                    swap_kb: 4,
                    hugetlb_kb: 0,
                },
            ]
        );
        let m = mappings(text);
        assert!(m[0].only_the_files() && !m[1].only_the_files());
    }
}
