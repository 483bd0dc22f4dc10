//! `fabric-wit-docs IN.wasm OUT.wasm WIT_DIR...`: copies a component, adding
//! the doc comments of the WIT package in the last WIT_DIR (earlier dirs are
//! its dependencies, e.g. Fabric's own `wit/`). Run by `scripts/build-tools`.

use anyhow::{bail, Context, Result};
use fabric_wit_docs::Docs;
use wit_parser::Resolve;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, wit_dirs @ ..] = args.as_slice() else {
        bail!("usage: fabric-wit-docs IN.wasm OUT.wasm WIT_DIR... (the tool's own WIT dir last)");
    };
    if wit_dirs.is_empty() {
        bail!("usage: fabric-wit-docs IN.wasm OUT.wasm WIT_DIR... (the tool's own WIT dir last)");
    }
    let mut resolve = Resolve::default();
    for dir in wit_dirs {
        resolve
            .push_path(dir)
            .with_context(|| format!("reading WIT from {dir}"))?;
    }
    let docs = Docs::from_last_package(&resolve)?;
    let mut component = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    if Docs::read(&component).is_some() {
        bail!(
            "{input} already carries a {} section",
            fabric_wit_docs::SECTION
        );
    }
    docs.append_to(&mut component)?;
    std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
    eprintln!("{output}: {} doc comments embedded", docs.items.len());
    Ok(())
}
