//! `FABRIC_SOURCE_ID`: a hash of this crate's sources, so that what the
//! compile cache remembers about a component's failure to link (which the
//! linker these sources define decides) is not believed by another build.

use std::hash::{Hash, Hasher};
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src");
    // Fixed keys: the same sources give the same id on every build.
    let mut hasher = std::hash::DefaultHasher::new();
    hash_dir(Path::new("src"), &mut hasher);
    println!("cargo:rustc-env=FABRIC_SOURCE_ID={:016x}", hasher.finish());
}

/// Hashes every file under `dir`, names and contents, in name order.
fn hash_dir(dir: &Path, hasher: &mut std::hash::DefaultHasher) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        path.hash(hasher);
        if path.is_dir() {
            hash_dir(&path, hasher);
        } else if let Ok(bytes) = std::fs::read(&path) {
            bytes.hash(hasher);
        }
    }
}
