//! How a tool is listed: one shape for the CLI (`fabric tools --json`), the
//! REST API (`GET /v1/tools`) and MCP (`tools/list`).

use serde::Serialize;
use serde_json::Value;

use crate::registry::{Status, Tool};

/// One tool as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ToolInfo {
    /// `NAME.FUNCTION`.
    pub name: String,
    /// The WIT doc comment of the function, if the component carries it.
    pub description: Option<String>,
    /// JSON Schema (2020-12) of the arguments object; `null` when unavailable.
    pub input_schema: Value,
    /// JSON Schema of the output; `null` when unavailable.
    pub output_schema: Value,
    /// Whether it can be called.
    pub available: bool,
    /// Why not, when it cannot.
    pub reason: Option<String>,
    /// What its policy grants, for hints such as MCP's tool annotations.
    pub grants: Grants,
    /// The parameter names in the function's order (the schema's
    /// properties are sorted); not part of any listing.
    #[serde(skip)]
    #[schemars(skip)]
    pub params: Vec<String>,
}

/// What a tool's policy lets it touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
pub struct Grants {
    /// A writable mount or any network: it may change the world.
    pub writes: bool,
    /// Any network destination, or a socket it may listen on: it reaches
    /// beyond the host, or the world reaches it.
    pub network: bool,
}

impl ToolInfo {
    pub(crate) fn of(tool: &Tool) -> ToolInfo {
        let (available, reason, grants, params) = match &tool.status {
            Status::Ready(_) if tool.unavailable().is_some() => (
                false,
                tool.unavailable().map(str::to_string),
                Grants::default(),
                Vec::new(),
            ),
            Status::Ready(c) => {
                let policy = &c.component.policy;
                let network = policy.net.grants_any();
                let writes = network || policy.mounts.iter().any(|m| m.writable);
                let params = c.params.iter().map(|p| p.name.clone()).collect();
                (true, None, Grants { writes, network }, params)
            }
            Status::Unavailable(reason) => {
                (false, Some(reason.clone()), Grants::default(), Vec::new())
            }
        };
        ToolInfo {
            name: tool.name.clone(),
            description: tool.description.clone(),
            input_schema: tool.input_schema.clone(),
            output_schema: tool.output_schema.clone(),
            available,
            reason,
            grants,
            params,
        }
    }
}
