//! `http`: fetch a URL through wasi:http, within the hosts the policy allows.

sdk_guest::wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "fabric-tools:http/http",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use exports::fabric_tools::http::api::{Guest, Response};

/// Bodies are cut here so one page cannot flood the agent's context.
const MAX_BODY: usize = 64 * 1024;

struct Http;

impl Guest for Http {
    fn get(url: String) -> Result<Response, String> {
        let r = sdk_guest::http::get(&url, MAX_BODY)?;
        Ok(Response {
            status: r.status,
            headers: r.headers,
            body: String::from_utf8_lossy(&r.body).into_owned(),
            truncated: r.truncated,
        })
    }
}

export!(Http);
