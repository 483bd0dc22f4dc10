//! `fs`: list, read and grep inside the directories the policy preopens.

sdk_guest::wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "fabric-tools:fs/fs",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use exports::fabric_tools::fs::api::{Entry, EntryKind, Guest, Hit};
use std::path::Path;

/// Most hits `grep` returns; more would only flood the agent's context.
const MAX_HITS: usize = 1000;
/// Longest line text `grep` returns, in bytes.
const MAX_LINE: usize = 512;
/// Files larger than this are skipped by `grep`.
const MAX_GREP_FILE: u64 = 8 * 1024 * 1024;

struct Fs;

fn describe(path: &str, e: std::io::Error) -> String {
    format!("{path}: {e}")
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Guest for Fs {
    fn list(path: String) -> Result<Vec<Entry>, String> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&path).map_err(|e| describe(&path, e))? {
            let item = item.map_err(|e| describe(&path, e))?;
            let meta = item.metadata().map_err(|e| describe(&path, e))?;
            let kind = if meta.is_dir() {
                EntryKind::Directory
            } else if meta.is_file() {
                EntryKind::File
            } else if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::Other
            };
            let size = if meta.is_file() { meta.len() } else { 0 };
            entries.push(Entry {
                name: item.file_name().to_string_lossy().into_owned(),
                kind,
                size,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn read(path: String, max_bytes: u32) -> Result<String, String> {
        let bytes = std::fs::read(&path).map_err(|e| describe(&path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
        Ok(cut(&text, max_bytes as usize).to_string())
    }

    fn grep(pattern: String, path: String) -> Result<Vec<Hit>, String> {
        let re = regex::Regex::new(&pattern).map_err(|e| format!("bad pattern: {e}"))?;
        let mut hits = Vec::new();
        grep_path(&re, Path::new(&path), &mut hits)?;
        Ok(hits)
    }
}

fn grep_path(re: &regex::Regex, path: &Path, hits: &mut Vec<Hit>) -> Result<(), String> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| describe(&shown, e))?;
    if meta.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| describe(&shown, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for child in children {
            if hits.len() >= MAX_HITS {
                break;
            }
            // An entry the walk may not follow (a symbolic link out of the
            // mount) or cannot read is skipped, and the hits say so.
            if let Err(why) = grep_path(re, &child, hits) {
                hits.push(Hit {
                    path: child.display().to_string(),
                    line: 0,
                    text: format!("skipped: {why}"),
                });
            }
        }
        return Ok(());
    }
    if meta.len() > MAX_GREP_FILE {
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // binary or unreadable: skipped, as grep does
    };
    for (n, line) in text.lines().enumerate() {
        if hits.len() >= MAX_HITS {
            break;
        }
        if re.is_match(line) {
            hits.push(Hit {
                path: shown.clone(),
                line: n as u32 + 1,
                text: cut(line, MAX_LINE).to_string(),
            });
        }
    }
    Ok(())
}

export!(Fs);
