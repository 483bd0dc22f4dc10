//! WIT doc comments, carried into a built component and read back.
//!
//! A component built by wit-bindgen and `wasm-component-ld` keeps its WIT
//! *types* (the host decodes them) but not the `///` doc comments, which are
//! the tools' descriptions. The guest build therefore reads the tool's WIT
//! sources and appends the comments as one top-level custom section,
//! [`SECTION`], holding [`Docs`] as JSON. Components without the section still
//! load; their tools just have no descriptions.
//!
//! Keys of [`Docs::items`], for an interface exported as `ns:pkg/iface`
//! (`ns:pkg/iface@1.2.3` when versioned):
//! - `ns:pkg/iface#func`: a function; `ns:pkg/iface#type`: a named type;
//!   `ns:pkg/iface#type.member`: a record field, variant case, enum case or flag;
//! - `func`, `type`, `type.member`: the same for items of the world itself.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use wit_parser::{
    Docs as WitDocs, InterfaceId, PackageId, Resolve, TypeDefKind, TypeId, UnresolvedPackageGroup,
};

/// Name of the custom section that holds the docs.
pub const SECTION: &str = "fabric:docs";

/// Version of the section's JSON layout; readers ignore other versions.
pub const VERSION: u32 = 1;

/// Doc comments of a tool package, keyed as the crate documentation says.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Docs {
    /// Layout version, [`VERSION`].
    pub version: u32,
    /// Doc text by item key.
    pub items: BTreeMap<String, String>,
}

impl Docs {
    /// The doc comment of `item` (a key as described in the crate docs).
    pub fn get(&self, item: &str) -> Option<&str> {
        self.items.get(item).map(String::as_str)
    }

    /// Collects every doc comment of the package that was pushed last into
    /// `resolve` (the tool's own package; earlier ones are its dependencies).
    pub fn from_last_package(resolve: &Resolve) -> Result<Docs> {
        let (id, _) = resolve
            .packages
            .iter()
            .next_back()
            .context("no WIT package was loaded")?;
        Ok(Docs::from_package(resolve, id))
    }

    /// The doc comments of the tool package in the directory `wit` (its
    /// `*.wit` files), resolved against the packages in `wit/deps` and in
    /// each of `deps` (a directory holding a package and maybe a `deps/` of
    /// its own, such as Fabric's `wit/`). A package found in several places
    /// is read once, from the first: the same WASI packages in a tool's
    /// `deps/` and in Fabric's `wit/deps` do not clash.
    pub fn from_wit_dir(wit: &Path, deps: &[&Path]) -> Result<Docs> {
        let (resolve, id) = resolve_wit_dir(wit, deps)?;
        Ok(Docs::from_package(&resolve, id))
    }

    /// Every doc comment of the package `id` of `resolve`.
    pub fn from_package(resolve: &Resolve, id: PackageId) -> Docs {
        let package = &resolve.packages[id];
        let mut docs = Docs {
            version: VERSION,
            items: BTreeMap::new(),
        };
        for id in package.interfaces.values() {
            let prefix = resolve.id_of(*id).map(|name| format!("{name}#"));
            docs.add_interface(resolve, *id, prefix.as_deref().unwrap_or(""));
        }
        for world in package.worlds.values() {
            let world = &resolve.worlds[*world];
            for (key, item) in world.exports.iter().chain(world.imports.iter()) {
                let name = resolve.name_world_key(key);
                match item {
                    wit_parser::WorldItem::Function(f) => docs.add(&name, &f.docs),
                    wit_parser::WorldItem::Type { id, .. } => docs.add_type(resolve, *id, ""),
                    // An interface defined in the world itself
                    // (`export api: interface { … }`); named ones are above.
                    wit_parser::WorldItem::Interface { id, .. }
                        if resolve.interfaces[*id].name.is_none() =>
                    {
                        docs.add_interface(resolve, *id, &format!("{name}#"));
                    }
                    wit_parser::WorldItem::Interface { .. } => {}
                }
            }
        }
        docs
    }

    fn add(&mut self, key: &str, docs: &WitDocs) {
        if let Some(text) = docs
            .contents
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            self.items.insert(key.to_string(), text.to_string());
        }
    }

    fn add_interface(&mut self, resolve: &Resolve, id: InterfaceId, prefix: &str) {
        let iface = &resolve.interfaces[id];
        for (name, f) in &iface.functions {
            self.add(&format!("{prefix}{name}"), &f.docs);
        }
        for ty in iface.types.values() {
            self.add_type(resolve, *ty, prefix);
        }
    }

    fn add_type(&mut self, resolve: &Resolve, id: TypeId, prefix: &str) {
        let ty = &resolve.types[id];
        let Some(name) = &ty.name else { return };
        let key = format!("{prefix}{name}");
        self.add(&key, &ty.docs);
        let members: Vec<(&str, &WitDocs)> = match &ty.kind {
            TypeDefKind::Record(r) => r
                .fields
                .iter()
                .map(|f| (f.name.as_str(), &f.docs))
                .collect(),
            TypeDefKind::Variant(v) => v.cases.iter().map(|c| (c.name.as_str(), &c.docs)).collect(),
            TypeDefKind::Enum(e) => e.cases.iter().map(|c| (c.name.as_str(), &c.docs)).collect(),
            TypeDefKind::Flags(f) => f.flags.iter().map(|f| (f.name.as_str(), &f.docs)).collect(),
            _ => Vec::new(),
        };
        for (member, docs) in members {
            self.add(&format!("{key}.{member}"), docs);
        }
    }

    /// Reads the docs section of a component, if it has a readable one.
    pub fn read(component: &[u8]) -> Option<Docs> {
        Docs::read_checked(component).ok().flatten()
    }

    /// Reads the docs section of a component: `None` when it has none, an
    /// error saying why when it has one that cannot be read (damaged, or of
    /// another version).
    pub fn read_checked(component: &[u8]) -> Result<Option<Docs>, String> {
        let Some(data) = top_level_custom_section(component, SECTION) else {
            return Ok(None);
        };
        let docs = serde_json::from_slice::<Docs>(data)
            .map_err(|e| format!("its {SECTION} section is not readable ({e})"))?;
        if docs.version != VERSION {
            return Err(format!(
                "its {SECTION} section is version {}, this Fabric reads version {VERSION}",
                docs.version
            ));
        }
        Ok(Some(docs))
    }

    /// Appends the docs to a component as a custom section.
    pub fn append_to(&self, component: &mut Vec<u8>) -> Result<()> {
        let data = serde_json::to_vec(self)?;
        let mut payload = Vec::with_capacity(data.len() + SECTION.len() + 5);
        leb128(&mut payload, SECTION.len());
        payload.extend_from_slice(SECTION.as_bytes());
        payload.extend_from_slice(&data);
        component.push(0); // custom section id
        leb128(component, payload.len());
        component.extend_from_slice(&payload);
        Ok(())
    }
}

/// Resolves the tool package in the directory `wit` as
/// [`Docs::from_wit_dir`] describes; returns the resolve and the package.
pub fn resolve_wit_dir(wit: &Path, deps: &[&Path]) -> Result<(Resolve, PackageId)> {
    let main = UnresolvedPackageGroup::parse_dir(wit)
        .with_context(|| format!("reading the WIT package in {}", wit.display()))?;
    let mut groups: Vec<UnresolvedPackageGroup> = Vec::new();
    let mut add = |group: UnresolvedPackageGroup| {
        let name = &group.main.name;
        if *name != main.main.name && !groups.iter().any(|g| g.main.name == *name) {
            groups.push(group);
        }
    };
    for group in read_deps(&wit.join("deps"))? {
        add(group);
    }
    for dir in deps {
        if !dir.is_dir() {
            bail!("{} is not a directory of WIT files", dir.display());
        }
        let has_own = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "wit"));
        if has_own {
            add(UnresolvedPackageGroup::parse_dir(dir)
                .with_context(|| format!("reading the WIT package in {}", dir.display()))?);
        }
        for group in read_deps(&dir.join("deps"))? {
            add(group);
        }
    }
    let mut resolve = Resolve::default();
    let id = resolve.push_groups(main, groups).with_context(|| {
            format!(
                "resolving the WIT package in {} (name the directories holding the packages it uses with --deps)",
                wit.display()
            )
        })?;
    Ok((resolve, id))
}

/// The key of a function's docs (and of its match in [`function_keys`]):
/// `iface#func` for a function of the exported interface `iface` (its full
/// name, `ns:pkg/iface@1.2.3`), `func` for a function of the world itself.
pub fn function_key(interface: Option<&str>, function: &str) -> String {
    match interface {
        Some(iface) => format!("{iface}#{function}"),
        None => function.to_string(),
    }
}

/// The keys ([`function_key`]) of every function the package `id` declares:
/// in its interfaces and in its worlds.
pub fn function_keys(resolve: &Resolve, id: PackageId) -> std::collections::BTreeSet<String> {
    let package = &resolve.packages[id];
    let mut keys = std::collections::BTreeSet::new();
    for iface in package.interfaces.values() {
        let name = resolve.id_of(*iface);
        for f in resolve.interfaces[*iface].functions.keys() {
            keys.insert(function_key(name.as_deref(), f));
        }
    }
    for world in package.worlds.values() {
        for (key, item) in resolve.worlds[*world].exports.iter() {
            if let wit_parser::WorldItem::Function(f) = item {
                keys.insert(function_key(None, &f.name));
            } else if let wit_parser::WorldItem::Interface { id, .. } = item {
                // An interface defined inline in the world (`export x: interface {…}`).
                let name = resolve.name_world_key(key);
                for f in resolve.interfaces[*id].functions.keys() {
                    keys.insert(function_key(Some(&name), f));
                }
            }
        }
    }
    keys
}

/// The packages of a `deps` directory: each subdirectory, and each `*.wit`
/// file, is one package (a missing directory has none).
fn read_deps(dir: &Path) -> Result<Vec<UnresolvedPackageGroup>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut groups = Vec::new();
    for path in entries {
        let group = if path.is_dir() {
            UnresolvedPackageGroup::parse_dir(&path)
        } else if path.extension().is_some_and(|x| x == "wit") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            UnresolvedPackageGroup::parse(&path, &text).map_err(|(map, e)| {
                let rendered = e.render(&map);
                anyhow::Error::from(e).context(rendered)
            })
        } else {
            continue;
        };
        groups.push(group.with_context(|| format!("reading the WIT package {}", path.display()))?);
    }
    Ok(groups)
}

/// Whether `text` parses as a WIT file (named `path` in the error), its
/// `use`s and `include`s left unresolved; the error is wit-parser's first
/// line.
pub fn check_wit_text(path: &str, text: &str) -> Result<(), String> {
    match wit_parser::UnresolvedPackageGroup::parse(path, text) {
        Ok(_) => Ok(()),
        Err((_, e)) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

/// Whether `bytes` are a whole component, as far as its section headers
/// tell: the component header, and sections that each end within the file.
/// The error says what it is instead (a core module, a file cut short).
pub fn check_component(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err("it is a core WebAssembly module: build the tool for wasm32-wasip2, or wrap it with `wasm-tools component new`".into())
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
        _ => return Err("it is not a WebAssembly component: pass the built NAME.wasm".into()),
    }
    let mut rest = &bytes[8..];
    while !rest.is_empty() {
        let section = read_leb128(&rest[1..]).and_then(|(size, after)| after.get(size..));
        match section {
            Some(after) => rest = after,
            None => {
                return Err("it is cut short (a section runs past its end): build it again".into())
            }
        }
    }
    Ok(())
}

/// The component without its top-level [`SECTION`] custom sections (for
/// replacing the docs). Malformed input is returned unchanged.
pub fn without_docs(component: &[u8]) -> Vec<u8> {
    let Some(mut rest) = component.get(8..) else {
        return component.to_vec();
    };
    let mut out = component[..8].to_vec();
    while !rest.is_empty() {
        let Some((size, after)) = read_leb128(&rest[1..]) else {
            return component.to_vec();
        };
        let Some(payload) = after.get(..size) else {
            return component.to_vec();
        };
        let header = rest.len() - after.len();
        let is_docs = rest[0] == 0
            && read_leb128(payload)
                .and_then(|(len, name)| name.get(..len))
                .is_some_and(|name| name == SECTION.as_bytes());
        if !is_docs {
            out.extend_from_slice(&rest[..header + size]);
        }
        rest = &after[size..];
    }
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The data of the first custom section named `name` at the top level of a
/// component or module (sections of nested modules are not looked at).
/// Malformed input gives `None`, never a panic.
fn top_level_custom_section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut rest = bytes.get(8..)?; // magic and version
    while !rest.is_empty() {
        let id = rest[0];
        let (size, after) = read_leb128(&rest[1..])?;
        let payload = after.get(..size)?;
        rest = &after[size..];
        if id == 0 {
            let (len, after) = read_leb128(payload)?;
            if after.get(..len)? == name.as_bytes() {
                return Some(&after[len..]);
            }
        }
    }
    None
}

/// An unsigned LEB128 (at most 32 bits, as section sizes are) and the rest.
fn read_leb128(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod check_tests {
    use super::check_component;

    #[test]
    fn a_core_module_or_a_cut_component_is_not_a_component() {
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0, 0, 3, 1, b'x', 7];
        assert!(check_component(&component).is_ok());
        let cut = &component[..component.len() - 1];
        assert!(check_component(cut).unwrap_err().contains("cut short"));
        let module = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(check_component(&module)
            .unwrap_err()
            .contains("core WebAssembly module"));
        assert!(check_component(b"hello")
            .unwrap_err()
            .contains("not a WebAssembly component"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIT: &str = r#"
        package demo:tool@1.0.0;
        interface api {
            /// A point.
            record point {
                /// Across.
                x: u32,
                y: u32,
            }
            /// Says hi.
            hello: func(name: string) -> string;
            undocumented: func();
        }
        world tool {
            export api;
            /// Top-level function.
            export run: func();
        }
    "#;

    #[test]
    fn collects_function_type_and_member_docs() {
        let mut resolve = Resolve::default();
        resolve.push_str("tool.wit", WIT).unwrap();
        let docs = Docs::from_last_package(&resolve).unwrap();
        assert_eq!(docs.get("demo:tool/api@1.0.0#hello"), Some("Says hi."));
        assert_eq!(docs.get("demo:tool/api@1.0.0#point"), Some("A point."));
        assert_eq!(docs.get("demo:tool/api@1.0.0#point.x"), Some("Across."));
        assert_eq!(docs.get("run"), Some("Top-level function."));
        assert_eq!(docs.get("demo:tool/api@1.0.0#undocumented"), None);
        assert_eq!(docs.get("demo:tool/api@1.0.0#point.y"), None);
    }

    #[test]
    fn a_tool_dir_with_the_same_deps_as_fabrics_wit_does_not_clash() {
        // The checkout under test (see the root's tests/common/mod.rs).
        let root = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || env!("CARGO_MANIFEST_DIR").into(),
                std::path::PathBuf::from,
            )
            .join("..");
        let tool = std::env::temp_dir().join(format!("wit-docs-test-{}", std::process::id()));
        let deps = tool.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        // The tool carries its own copy of WASI io, as `wkg` or cargo-component leave it.
        std::fs::copy(root.join("wit/deps/io.wit"), deps.join("io.wit")).unwrap();
        std::fs::write(
            tool.join("world.wit"),
            "package demo:t;\ninterface api {\n  /// Hi.\n  hi: func() -> string;\n}\nworld t {\n  include fabric:tool/host@0.1.0;\n  export api;\n}\n",
        )
        .unwrap();
        let wit = root.join("wit");
        let docs = Docs::from_wit_dir(&tool, &[wit.as_path()]).unwrap();
        std::fs::remove_dir_all(&tool).unwrap();
        assert_eq!(docs.get("demo:t/api#hi"), Some("Hi."));
    }

    #[test]
    fn survives_a_round_trip_through_a_component_section() {
        let mut docs = Docs {
            version: VERSION,
            items: BTreeMap::new(),
        };
        docs.items.insert("x#y".into(), "ünïcode \u{0} doc".into());
        // An empty component: magic, version 0x0d, layer 1.
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        assert_eq!(Docs::read(&component), None);
        docs.append_to(&mut component).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&component)
            .unwrap();
        assert_eq!(Docs::read(&component), Some(docs.clone()));
        let stripped = without_docs(&component);
        assert_eq!(stripped, b"\0asm\x0d\0\x01\0");
        let mut replaced = stripped;
        docs.append_to(&mut replaced).unwrap();
        assert_eq!(Docs::read(&replaced), Some(docs.clone()));
        // A damaged section, or one of another version, says so.
        let mut damaged = without_docs(&replaced);
        let mut other = docs.clone();
        other.version = VERSION + 1;
        other.append_to(&mut damaged).unwrap();
        let why = Docs::read_checked(&damaged).unwrap_err();
        assert!(why.contains("version 2"), "{why}");
        let mut damaged = without_docs(&replaced);
        let mut section = Vec::new();
        docs.append_to(&mut section).unwrap();
        let brace = section.iter().position(|&b| b == b'{').unwrap();
        section[brace] = b'[';
        damaged.extend_from_slice(&section);
        assert!(Docs::read_checked(&damaged).is_err());
        assert_eq!(Docs::read_checked(&without_docs(&replaced)), Ok(None));
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        for bytes in [
            &b""[..],
            b"\0asm",
            b"\0asm\x0d\0\x01\0\0",
            b"\0asm\x0d\0\x01\0\0\xff\xff\xff\xff\xff\xff",
            b"\0asm\x0d\0\x01\0\0\x05\x09abc",
        ] {
            assert_eq!(Docs::read(bytes), None);
        }
    }
}
