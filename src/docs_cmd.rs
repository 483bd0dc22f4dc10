//! `fabric docs add TOOL.wasm --wit DIR [--deps DIR…] [-o OUT]`: embeds the
//! WIT doc comments of a tool's package into its component, whatever
//! language built it, so that they become the tools' descriptions.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use fabric_wit_docs::Docs;

/// `fabric docs …`.
#[derive(Subcommand)]
pub enum DocsCommand {
    /// Embed the WIT doc comments of the tool's package into its component
    /// (replacing any embedded before). They become the tools' descriptions.
    Add {
        /// The component (e.g. build/tools/words.wasm).
        component: PathBuf,
        /// The directory of the tool's WIT package (its *.wit files, and a
        /// deps/ directory of the packages it uses, if any).
        #[arg(long)]
        wit: PathBuf,
        /// More directories of packages the tool's WIT uses, such as
        /// Fabric's wit/ for `include fabric:tool/host@0.1.0`. A package found
        /// in several places is read from the first.
        #[arg(long = "deps")]
        deps: Vec<PathBuf>,
        /// Write the result here instead of replacing the component.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs a `fabric docs` command.
pub fn run(command: DocsCommand) -> Result<()> {
    match command {
        DocsCommand::Add {
            component,
            wit,
            deps,
            output,
        } => add(&component, &wit, &deps, output.as_deref()),
    }
}

fn add(component: &Path, wit: &Path, deps: &[PathBuf], output: Option<&Path>) -> Result<()> {
    let deps: Vec<&Path> = deps.iter().map(PathBuf::as_path).collect();
    // wit-parser's errors run over lines (a source snippet, the packages it
    // knows): one line, as every error of the CLI is.
    let (resolve, package) = fabric_wit_docs::resolve_wit_dir(wit, &deps).map_err(|e| {
        let text = format!("{e:#}");
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        anyhow::anyhow!("{}", lines.join(" "))
    })?;
    let docs = Docs::from_package(&resolve, package);
    let bytes = std::fs::read(component)
        .with_context(|| format!("cannot read the component {}", component.display()))?;
    let exported = fabric_host::exported_doc_keys(&bytes)
        .map_err(|why| anyhow::anyhow!("{}: {why}", component.display()))?;
    // Docs keyed by functions the component does not export would match
    // nothing: the WIT must be the one the component was built from.
    let declared = fabric_wit_docs::function_keys(&resolve, package);
    let undeclared: Vec<&str> = exported
        .iter()
        .filter(|key| !declared.contains(*key))
        .map(String::as_str)
        .collect();
    if !undeclared.is_empty() {
        anyhow::bail!(
            "{}: the WIT package in {} does not declare {} of the functions the component exports ({}); pass the WIT the component was built from (nothing was written)",
            component.display(),
            wit.display(),
            if undeclared.len() == exported.len() { "any" } else { "all" },
            undeclared.join(", ")
        );
    }
    let mut out = fabric_wit_docs::without_docs(&bytes);
    docs.append_to(&mut out)?;
    let target = output.unwrap_or(component);
    // Written beside the target and renamed, so a reader never sees half.
    let tmp = target.with_extension("wasm.docs-tmp");
    std::fs::write(&tmp, &out).with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", target.display()));
    }
    eprintln!(
        "{}: {} doc comments embedded from {}",
        target.display(),
        docs.items.len(),
        wit.display()
    );
    Ok(())
}
