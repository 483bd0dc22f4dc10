//! `fabric-wit-docs IN.wasm OUT.wasm [DEPS_DIR...] TOOL_WIT_DIR`: copies a
//! component, adding the doc comments of the WIT package in the last
//! directory, resolved against its own `deps/` and the earlier directories
//! (e.g. Fabric's own `wit/`). Run by `scripts/build-tools`; `fabric docs add`
//! does the same for any component.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fabric_wit_docs::Docs;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, deps @ .., wit] = args.as_slice() else {
        bail!("usage: fabric-wit-docs IN.wasm OUT.wasm [DEPS_DIR...] TOOL_WIT_DIR");
    };
    let deps: Vec<&Path> = deps.iter().map(Path::new).collect();
    let docs = Docs::from_wit_dir(Path::new(wit), &deps)?;
    let component = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let mut component = fabric_wit_docs::without_docs(&component);
    docs.append_to(&mut component)?;
    std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
    eprintln!("{output}: {} doc comments embedded", docs.items.len());
    Ok(())
}
