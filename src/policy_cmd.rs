//! `fabric policy check [FILE…]`: validates policy files without running
//! anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use fabric_host::policy::{Maxima, Policy};

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check policy files (default: every NAME.toml in --policies): prints
    /// `FILE: ok` for each good one, and for each bad one the file, key,
    /// line and what is allowed (on stderr). Also warns of symbolic links in
    /// a mount that lead out of it (the tool cannot follow them), and, when
    /// checking the whole directory, of a policy that no component in
    /// --tools is named for (it applies to nothing: a misspelt file name).
    /// Exit 0 when all are good, 1 otherwise.
    Check {
        /// Policy files to check.
        files: Vec<PathBuf>,
    },
}

/// Runs a policy command under the host's `maxima`.
pub fn run(
    command: PolicyCommand,
    policies: &Path,
    tools: &Path,
    maxima: &Maxima,
) -> Result<ExitCode> {
    let PolicyCommand::Check { files } = command;
    // A policy is matched to its tool by file name only in the directory.
    let whole_directory = files.is_empty();
    let files = if files.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(policies)
            .with_context(|| {
                format!(
                    "cannot read the policies directory {} (give --policies DIR or policy files)",
                    policies.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        found
    } else {
        files
    };
    let mut bad = 0;
    for file in &files {
        match Policy::load(file, maxima) {
            Ok(policy) => {
                println!("{}: ok", file.display());
                if whole_directory && tools.is_dir() {
                    let name = file
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    let component = tools.join(format!("{name}.wasm"));
                    if !component.exists() {
                        println!(
                            "{}: warning: there is no component {} for it to apply to: check the file name",
                            file.display(),
                            component.display()
                        );
                    }
                }
                for link in policy.links_leaving_mounts() {
                    println!(
                        "{}: {}: warning: {} -> {} leads outside the mount (or nowhere): the tool cannot follow it",
                        file.display(),
                        link.key,
                        link.link.display(),
                        link.target.display()
                    );
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
