//! # sdk-guest: write a Fabric tool in plain Rust
//!
//! A Fabric tool is a WebAssembly component whose exported functions are the
//! tools. You describe them in WIT, with doc comments (they become the tools'
//! descriptions), and implement the generated trait in ordinary Rust:
//!
//! ```ignore
//! sdk_guest::wit_bindgen::generate!({
//!     path: ["../../wit", "wit"],          // Fabric's WIT, then your package
//!     world: "my-org:weather/weather",
//!     generate_all,                         // bindings for the WASI imports too
//!     runtime_path: "sdk_guest::wit_bindgen::rt",
//! });
//!
//! struct Weather;
//! impl exports::my_org::weather::api::Guest for Weather {
//!     fn temperature(city: String) -> Result<f64, String> { /* ... */ }
//! }
//! export!(Weather);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (or the repo's
//! `scripts/build-tools`) and drop the `.wasm` into the tools directory.
//!
//! Inside a call, Rust's `std::fs` sees only the directories the tool's
//! policy mounts, `std::env` only the variables it grants, and [`http::get`]
//! and [`net`] (TCP, UDP, name lookups over wasi:sockets) reach only the
//! destinations it allows. A denied path simply does not exist; a
//! denied host fails the request with an error you can return to the agent.

/// The bindings generator, re-exported so a tool needs only this crate.
pub use wit_bindgen;

pub mod http;
pub mod net;
