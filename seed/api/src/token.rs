//! Named API tokens with roles (`/v1/tokens`): what an admin sends to create one, the view of
//! one (never its secret or hash), and the answer to a creation, the only place the secret
//! ever appears.

use crate::Secret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do. Roles are ordered: each can do what the ones below it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `GET` only.
    Reader,
    /// Node, stack and image actions, and every `GET`.
    Operator,
    /// Everything, token management included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("no role `{s}`: one of admin, operator, reader")),
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `[a-z0-9-]`, 1 to 64 characters; `config` is the config file's token.
    pub name: String,
    pub role: Role,
    /// Seconds from now after which the token is refused; none: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// A token as `GET /v1/tokens` lists it: never its secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    pub revoked: bool,
}

/// The answer to `POST /v1/tokens`: the secret, shown this once (`***` in `Debug`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// `seed_<name>_<64 hex digits>`: present it as `Authorization: Bearer …`.
    #[schema(value_type = String)]
    pub token: Secret,
    #[serde(flatten)]
    pub view: TokenView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse_and_the_secret_stays_out_of_debug() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Reader);
        for r in [Role::Admin, Role::Operator, Role::Reader] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
        let c = TokenCreated {
            token: Secret::new("seed_ci_abcdef"),
            view: TokenView {
                name: "ci".into(),
                role: Role::Reader,
                created: 1,
                expires: None,
                revoked: false,
            },
        };
        assert!(!format!("{c:?}").contains("abcdef"), "{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("seed_ci_abcdef") && json.contains("\"role\":\"reader\""));
    }
}
