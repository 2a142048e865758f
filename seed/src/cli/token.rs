//! `seed token create|list|revoke`: named API tokens with roles, a client of the daemon's
//! `/v1/tokens` (role admin: the config file's `[api] token` or an admin token).

use super::client::{Client, ClientArgs};
use super::table::{self, table};
use anyhow::Context;
use api::token::{Role, TokenCreated, TokenRequest, TokenView};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Create, list and revoke named API tokens (admin only).
#[derive(Debug, clap::Args)]
#[command(mut_arg("token", |a| a.help("The API's bearer token (role admin).")))]
pub struct Args {
    #[command(subcommand)]
    pub command: TokenCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once: `seed token create ci --role reader --expires 30d`.
    Create {
        /// a-z, 0-9 and '-'.
        name: String,
        /// admin (everything), operator (node, stack and image actions, reads), reader (reads).
        #[arg(long)]
        role: Role,
        /// Refused after this long: `90s`, `15m`, `12h`, `30d`, `2w` (default: never).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// One line per token: name, role, created, expires, revoked.
    List,
    /// Revoke a token: refused from now on.
    Revoke { name: String },
}

/// `30d` → 30 days. Hand-written: five suffixes do not justify a dependency.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: want a number and a unit, e.g. 30d"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d, w")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

fn when(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let c = args.client.client()?;
    run_with(&c, args.command, &mut std::io::stdout().lock())
}

/// Run `cmd` against `c`, printing to `out` (a created token's secret is its only line).
pub fn run_with(c: &Client, cmd: TokenCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            expires,
        } => {
            let req = TokenRequest {
                name: name.clone(),
                role,
                expires_in_secs: expires.map(|d| d.as_secs()),
            };
            let created: TokenCreated = c
                .post("/v1/tokens", &req)
                .with_context(|| format!("creating token {name:?}"))?;
            eprintln!(
                "token {name} ({role}){}: shown once, keep it now",
                created
                    .view
                    .expires
                    .map(|e| format!(", expires {}", when(e)))
                    .unwrap_or_default()
            );
            writeln!(out, "{}", created.token.expose())?;
        }
        TokenCommand::List => {
            let all: Vec<TokenView> = c.get("/v1/tokens")?;
            let mut rows = vec![table::header(&[
                "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED",
            ])];
            for t in &all {
                rows.push(vec![
                    t.name.clone(),
                    t.role.to_string(),
                    when(t.created),
                    t.expires.map(when).unwrap_or_else(|| "never".into()),
                    if t.revoked { "yes" } else { "no" }.into(),
                ]);
            }
            write!(out, "{}", table(&rows))?;
        }
        TokenCommand::Revoke { name } => {
            let _: TokenView = c
                .delete(&format!("/v1/tokens/{name}"))
                .with_context(|| format!("revoking token {name:?}"))?;
            writeln!(out, "{name}: revoked")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 86_400);
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3y").is_err());
    }

    /// The CLI's round trip against a served API: the admin creates a reader token, the reader
    /// reads but is refused token management (403 in the error), revoked it gets 401.
    #[test]
    fn create_use_list_revoke_through_the_api() {
        use crate::daemon::{api::Api, test_support, Daemon, Settings};
        let d = Daemon::new(
            std::sync::Arc::new(crate::store::memory::MemStore::new()),
            Settings {
                server_ip: "10.0.0.1".parse().unwrap(),
                http_port: 8080,
                timeouts: crate::lifecycle::Timeouts::default(),
                heartbeat_secs: 5,
                provide_after_inspect: true,
                agent_tls: None,
            },
        )
        .unwrap();
        let (addr, stop) = test_support::serve(Api::new(d, "admin-bootstrap-token"));
        let admin = Client::new(&addr, Some("admin-bootstrap-token"), None).unwrap();
        let mut out = Vec::new();
        let create = TokenCommand::Create {
            name: "dash".into(),
            role: Role::Reader,
            expires: Some(Duration::from_secs(3600)),
        };
        run_with(&admin, create, &mut out).unwrap();
        let secret = String::from_utf8(out).unwrap().trim().to_string();
        assert!(secret.starts_with("seed_dash_"), "{secret}");

        let reader = Client::new(&addr, Some(&secret), None).unwrap();
        let _: Vec<api::NodeView> = reader.get("/v1/nodes").unwrap();
        let e = run_with(&reader, TokenCommand::List, &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("403"), "{e:#}");

        let mut out = Vec::new();
        run_with(&admin, TokenCommand::List, &mut out).unwrap();
        let list = String::from_utf8(out).unwrap();
        assert!(list.contains("dash") && list.contains("reader"), "{list}");
        assert!(!list.contains(&secret[10..]), "{list}");

        let revoke = TokenCommand::Revoke {
            name: "dash".into(),
        };
        run_with(&admin, revoke, &mut Vec::new()).unwrap();
        let e = reader.get::<Vec<api::NodeView>>("/v1/nodes").unwrap_err();
        assert!(format!("{e:#}").contains("401"), "{e:#}");
        stop.cancel();
    }
}
