//! `fabric new NAME --lang rust|python|js`: scaffolds a tool that builds
//! with `scripts/build-tools NAME` and answers `fabric call NAME.greet`
//! with no edits: a WIT world with doc comments, the source, a policy, and
//! (for Rust) its place in the tools workspace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

/// The language of a new tool.
#[derive(Clone, Copy, ValueEnum)]
pub enum Lang {
    /// Rust, built with cargo for wasm32-wasip2 (tools/ workspace).
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

/// `fabric new` arguments.
#[derive(Args)]
pub struct NewArgs {
    /// The tool's name: lower-case letters and digits, starting with a
    /// letter. Its functions are called NAME.FUNCTION.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The project root holding tools/ and policies/ (the repository root).
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Writes the new tool's files; prints what was made and what to run next.
pub fn run(args: NewArgs) -> Result<()> {
    let name = args.name.as_str();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !valid {
        bail!("{name:?} is not a valid tool name: use lower-case letters and digits, starting with a letter (e.g. weather)");
    }
    // The package and world are named after the tool: a name WIT reserves
    // (func, map, …) would not parse, nor one Rust reserves (loop, self, …)
    // in the generated bindings' module path.
    if let Err(e) = fabric_wit_docs::check_wit_text("world.wit", &world(name, args.lang)) {
        bail!("{name:?} cannot name a WIT package or world ({e}): choose another name (e.g. {name}tool)");
    }
    if matches!(args.lang, Lang::Rust) && RUST_KEYWORDS.contains(&name) {
        bail!("{name:?} is a Rust keyword, so the generated bindings would not compile: choose another name (e.g. {name}tool)");
    }
    let tools = args.root.join("tools");
    if matches!(args.lang, Lang::Rust) {
        if let Some(other) = package_in_workspace(&tools, &format!("tool-{name}")) {
            bail!(
                "the tools workspace already has a package named \"tool-{name}\" ({}): choose another name",
                other.display()
            );
        }
    }
    let dir = tools.join(name);
    let policy = args.root.join("policies").join(format!("{name}.toml"));
    for path in [&dir, &policy] {
        if path.exists() {
            bail!(
                "{} already exists: choose another name, or remove it first",
                path.display()
            );
        }
    }
    let mut files: Vec<(PathBuf, String)> =
        vec![(dir.join("wit/world.wit"), world(name, args.lang))];
    match args.lang {
        Lang::Rust => {
            files.push((dir.join("Cargo.toml"), RUST_MANIFEST.replace("NAME", name)));
            files.push((dir.join("src/lib.rs"), RUST_SOURCE.replace("NAME", name)));
        }
        Lang::Python => files.push((dir.join("app.py"), PYTHON_SOURCE.replace("NAME", name))),
        Lang::Js => files.push((dir.join("app.js"), JS_SOURCE.replace("NAME", name))),
    }
    let limits = match args.lang {
        Lang::Rust => "fuel = 100_000_000\nmemory = \"32 MiB\"\n",
        // An interpreter needs more room than compiled Rust.
        Lang::Python | Lang::Js => "fuel = 2_000_000_000\nmemory = \"64 MiB\"\n",
    };
    files.push((
        policy,
        format!("# {name}: pure computation, no capabilities. Grant files ([[fs]]), network\n# ([net]) or environment ([env]) here as the tool needs them.\n[limits]\n{limits}timeout = \"2s\"\noutput = \"1 MiB\"\n"),
    ));
    if let Lang::Rust = args.lang {
        add_member(&tools.join("Cargo.toml"), name)?;
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("created {}", path.display());
    }
    println!(
        "next: scripts/build-tools {name} && fabric call {name}.greet '{{\"name\": \"you\"}}'"
    );
    Ok(())
}

/// Adds `name` to the `members` of the tools workspace manifest.
fn add_member(manifest: &Path, name: &str) -> Result<()> {
    let text = std::fs::read_to_string(manifest).with_context(|| {
        format!(
            "cannot read {} (the Rust tools' workspace): run fabric new from the repository root, or pass --root",
            manifest.display()
        )
    })?;
    let Some(at) = text.find("members = [") else {
        bail!(
            "{} has no `members = [` line to add {name:?} to: add it to the workspace by hand",
            manifest.display()
        );
    };
    let insert = at + "members = [".len();
    let updated = format!("{}\"{name}\", {}", &text[..insert], &text[insert..]);
    std::fs::write(manifest, updated)
        .with_context(|| format!("cannot write {}", manifest.display()))
}

/// Rust's keywords (strict and reserved, 2024 edition) of the form a tool
/// name takes (lower-case letters and digits).
const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// The manifest under `tools` (at most two directories down, as
/// `tools/NAME` and `tools/testing/NAME` are) whose package is `package`.
fn package_in_workspace(tools: &Path, package: &str) -> Option<PathBuf> {
    let wanted = format!("name = \"{package}\"");
    let mut dirs = vec![(tools.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || path.ends_with("target") {
                continue;
            }
            let manifest = path.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap_or_default();
            if text.lines().any(|l| l.trim() == wanted) {
                return Some(manifest);
            }
            if depth < 1 {
                dirs.push((path, depth + 1));
            }
        }
    }
    None
}

fn world(name: &str, lang: Lang) -> String {
    // Rust tools get every WASI interface Fabric offers (what they may use
    // is up to the policy); the Python and JavaScript toolchains bring their own.
    let include = match lang {
        Lang::Rust => "  include fabric:tool/host@0.1.0;\n",
        Lang::Python | Lang::Js => "",
    };
    format!(
        "package local:{name};\n\n/// {name}: say here what the tool is for.\ninterface api {{\n  /// Greets someone by name. (Each function's doc comment is its tool's\n  /// description: write what it does, its arguments and what it returns.)\n  greet: func(name: string) -> string;\n}}\n\nworld {name} {{\n{include}  export api;\n}}\n"
    )
}

const RUST_MANIFEST: &str = r#"[package]
name = "tool-NAME"
version = "0.1.0"
edition.workspace = true
license.workspace = true
publish = false

[lib]
name = "NAME"
crate-type = ["cdylib"]

[dependencies]
sdk-guest.workspace = true
"#;

const RUST_SOURCE: &str = r#"//! `NAME`: a Fabric tool. Its WIT world, with the tools' descriptions, is
//! wit/world.wit; build it with `scripts/build-tools NAME`.

sdk_guest::wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "local:NAME/NAME",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use exports::local::NAME::api::Guest;

struct Tool;

impl Guest for Tool {
    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }
}

export!(Tool);
"#;

const PYTHON_SOURCE: &str = r#""""NAME: a Fabric tool in Python.

Its WIT world, with the tools' descriptions, is wit/world.wit; build it with
`scripts/build-tools NAME` (componentize-py). `componentize-py -d wit -w NAME
bindings out/` writes the bindings this module implements, to read.
"""

from wit_world import exports


class Api(exports.Api):
    def greet(self, name: str) -> str:
        return f"Hello, {name}!"
"#;

const JS_SOURCE: &str = r#"// NAME: a Fabric tool in JavaScript.
//
// Its WIT world, with the tools' descriptions, is wit/world.wit; build it
// with `scripts/build-tools NAME` (componentize-js). Each exported interface
// is an object of functions; a function returning result<T, E> returns T or
// throws E.

export const api = {
  greet(name) {
    return `Hello, ${name}!`;
  },
};
"#;
