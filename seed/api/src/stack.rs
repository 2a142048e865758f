//! Stacks (Heat-style templates) as the API takes and shows them: `/v1/stacks…`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The body of `POST /v1/stacks` and `PUT /v1/stacks/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StackRequest {
    /// Ignored on PUT (the path names the stack).
    #[serde(default)]
    pub name: String,
    /// The template's file name, for error messages.
    #[serde(default = "default_file")]
    pub file: String,
    /// The template's text (HOT YAML).
    pub template: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

fn default_file() -> String {
    "template.yaml".into()
}

/// The body of `POST /v1/stacks/{name}/replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplaceRequest {
    /// The server to move to another node: its member name (`members-0`) or its node's name.
    pub member: String,
}

/// A stack as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StackView {
    pub name: String,
    /// `CREATE_IN_PROGRESS`, `CREATE_COMPLETE`, `UPDATE_FAILED`, …
    pub status: String,
    pub reason: String,
    pub members: Vec<MemberView>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One member: its status and, for servers, its node and the node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One line of a stack's history (`GET /v1/stacks/{name}/events`; also the stored record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StackEvent {
    pub id: u64,
    pub time_ms: u64,
    /// The member, or the stack's own name.
    pub resource: String,
    /// `CREATE_IN_PROGRESS`, …
    pub status: String,
    #[serde(default)]
    pub reason: String,
}
