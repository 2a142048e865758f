//! The appliance's own `seed.toml` (on the `SEEDCFG` partition, from `seed.config=URL`, or the
//! built-in defaults): a short file a field engineer edits on any computer, turned here into the
//! daemon's full configuration with the appliance's paths.
//!
//! Every error names the file, the line and the field (`seed.toml:7: provisioning.address: …`),
//! because the person reading it is at a console in a datacenter with the stick in another
//! machine's hands.

use serde::Deserialize;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

/// The sample API token of the bundle's config: refused, so no appliance runs with it.
pub const SAMPLE_TOKEN: &str = "change-me";

/// The defaults, as shipped on `SEEDCFG` (commented) and used when no config is found.
pub const DEFAULT_TOML: &str = include_str!("../../../examples/appliance-seed.toml");

/// An error in an appliance config, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// `seed.toml` as written on the stick.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    #[serde(default)]
    pub provisioning: Provisioning,
    #[serde(default)]
    pub dhcp: Dhcp,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub operator: Operator,
    /// Other NICs: the BMC network, a management network.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// The seed as the first member of an HA control plane ([`super::ha`]).
    #[serde(default)]
    pub ha: super::ha::Ha,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// The NIC on the provisioning network.
    #[serde(default = "default_nic")]
    pub interface: String,
    /// The appliance's own address and prefix on it (`10.80.0.1/24`).
    #[serde(default = "default_address")]
    pub address: String,
}

impl Default for Provisioning {
    fn default() -> Self {
        Provisioning {
            interface: default_nic(),
            address: default_address(),
        }
    }
}

fn default_nic() -> String {
    "eth0".into()
}
fn default_address() -> String {
    "10.80.0.1/24".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    /// `auto` (ProxyDHCP when another server answers), `authoritative` or `proxy`.
    #[serde(default)]
    pub mode: DhcpMode,
    /// First and last address handed out (default: .100 to .199 of the provisioning subnet).
    pub pool_start: Option<Ipv4Addr>,
    pub pool_end: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    /// Enroll unknown MACs that PXE-boot as `node-<mac>`.
    #[serde(default)]
    pub discovery: bool,
    /// Seconds a lease lasts (default 3600).
    pub lease_time: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    #[default]
    Auto,
    Authoritative,
    Proxy,
}

impl DhcpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpMode::Auto => "auto",
            DhcpMode::Authoritative => "authoritative",
            DhcpMode::Proxy => "proxy",
        }
    }
}

#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The REST API's bearer token; none: generated at first boot and kept on the state partition.
    pub token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The console login's password (user `root`); none: the login is disabled.
    pub password: Option<String>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// `dhcp`, or an address with its prefix (`10.81.0.254/24`).
    pub address: String,
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why an `ADDRESS/PREFIX` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCidr {
    #[error("`{0}` is not ADDRESS/PREFIX (e.g. 10.80.0.1/24)")]
    Shape(String),
    #[error("`{0}` is not an IPv4 address")]
    Address(String),
    #[error("prefix `{0}` is not a number from 8 to 30")]
    Prefix(String),
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, BadCidr> {
        let (a, p) = s.split_once('/').ok_or_else(|| BadCidr::Shape(s.into()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| BadCidr::Address(a.into()))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| BadCidr::Prefix(p.into()))?;
        Ok(Cidr { addr, prefix })
    }

    fn mask(self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The `n`th address of the subnet.
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + n)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A config after its checks: what the appliance runs with.
#[derive(Debug, Clone)]
pub struct Checked {
    pub raw: ApplianceConfig,
    pub address: Cidr,
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// `[ha] enabled`: the member the daemon runs.
    pub ha: Option<super::ha::Member>,
}

/// Parse and check `text`, read from `file` (named in errors).
pub fn parse(file: &str, text: &str) -> Result<Checked, ConfigError> {
    let raw: ApplianceConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, field) = locate_offset(text, offset);
        ConfigError {
            file: file.into(),
            line,
            field: field.unwrap_or_else(|| "(file)".into()),
            message: e.message().trim().to_string(),
        }
    })?;
    check(file, text, raw)
}

fn check(file: &str, text: &str, raw: ApplianceConfig) -> Result<Checked, ConfigError> {
    let err = |table: &str, key: &str, message: String| ConfigError {
        file: file.into(),
        line: locate_key(text, table, key),
        field: format!("{table}.{key}"),
        message,
    };
    let address = Cidr::parse(&raw.provisioning.address)
        .map_err(|m| err("provisioning", "address", m.to_string()))?;
    if address.addr == address.network() {
        return Err(err(
            "provisioning",
            "address",
            format!("{} is the subnet's own address, not a host's", address.addr),
        ));
    }
    if !valid_ifname(&raw.provisioning.interface) {
        return Err(err(
            "provisioning",
            "interface",
            format!(
                "`{}` is not a network interface name",
                raw.provisioning.interface
            ),
        ));
    }
    let pool = (
        raw.dhcp.pool_start.unwrap_or(address.nth(100)),
        raw.dhcp.pool_end.unwrap_or(address.nth(199)),
    );
    for (key, ip) in [("pool_start", pool.0), ("pool_end", pool.1)] {
        if !address.contains(ip) {
            return Err(err(
                "dhcp",
                key,
                format!(
                    "{ip} is outside the provisioning subnet {}/{}",
                    address.network(),
                    address.prefix
                ),
            ));
        }
    }
    if u32::from(pool.0) > u32::from(pool.1) {
        return Err(err(
            "dhcp",
            "pool_end",
            format!("{} comes before pool_start {}", pool.1, pool.0),
        ));
    }
    if (u32::from(pool.0)..=u32::from(pool.1)).contains(&u32::from(address.addr)) {
        return Err(err(
            "dhcp",
            "pool_start",
            format!(
                "the pool {}–{} holds the appliance's own address {}",
                pool.0, pool.1, address.addr
            ),
        ));
    }
    if let Some(l) = raw.dhcp.lease_time {
        if !(60..=7 * 86400).contains(&l) {
            return Err(err(
                "dhcp",
                "lease_time",
                format!("{l} s is not from 60 s to 7 days"),
            ));
        }
    }
    if let Some(r) = raw.dhcp.router {
        if !address.contains(r) {
            return Err(err(
                "dhcp",
                "router",
                format!("{r} is outside the provisioning subnet"),
            ));
        }
    }
    if let Some(t) = &raw.api.token {
        if t == SAMPLE_TOKEN {
            return Err(err(
                "api",
                "token",
                format!("`{SAMPLE_TOKEN}` is the sample token: set your own, or remove the line to have one generated"),
            ));
        }
        // The daemon refuses to start with a weak token: say so here, at the line.
        if let Some(why) = crate::daemon::config::weak_token(t) {
            return Err(err("api", "token", why));
        }
    }
    if let Some(p) = &raw.operator.password {
        if p.len() < 8 {
            return Err(err(
                "operator",
                "password",
                "needs 8 or more characters".into(),
            ));
        }
    }
    for (i, nic) in raw.interfaces.iter().enumerate() {
        let line = locate_nth_table(text, "interfaces", i);
        let ierr = |key: &str, message: String| ConfigError {
            file: file.into(),
            line,
            field: format!("interfaces[{i}].{key}"),
            message,
        };
        if !valid_ifname(&nic.name) || nic.name == raw.provisioning.interface {
            return Err(ierr(
                "name",
                format!("`{}` is not another network interface's name", nic.name),
            ));
        }
        if nic.address != "dhcp" {
            Cidr::parse(&nic.address).map_err(|m| ierr("address", format!("{m} (or \"dhcp\")")))?;
        }
    }
    let ha = raw
        .ha
        .check(address, pool)
        .map_err(|(key, m)| err("ha", key, m))?;
    Ok(Checked {
        raw,
        address,
        pool,
        ha,
    })
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Where the appliance keeps what it serves and what it writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The bundle's `share/`: ramdisk, ipxe, images.
    pub share: String,
    /// The state directory (persistent partition or RAM).
    pub state: String,
}

/// The daemon's configuration for a checked appliance config and an API token.
pub fn daemon_toml(c: &Checked, token: &str, paths: &Paths) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Generated at boot by `seed appliance config` from the appliance's seed.toml.\n\
         {}[api]\ntoken = {}\nlisten = \"0.0.0.0:6385\"\n\
         # Plain HTTP until the appliance's status screen and installer pin the CA.\n\
         tls = \"off\"\n\n\
         [agent]\nheartbeat_secs = 10\n\n\
         [ramdisk]\nkernel = {}\ninitrd = {}\n\n\
         [lifecycle]\nprovide_after_inspect = true\n\n\
         [images]\ndir = \"images\"\n",
        match c.ha {
            // The [store] table comes last (after it, every key would be the store's).
            Some(_) => String::new(),
            None => format!("store = {}\n\n", q(&format!("{}/seed.redb", paths.state))),
        },
        q(token),
        q(&format!("{}/ramdisk/vmlinuz", paths.share)),
        q(&format!("{}/ramdisk/initramfs.zst", paths.share)),
    );
    let a = c.address;
    let _ = writeln!(
        t,
        "[netboot]\ninterface = {}\nserver_ip = \"{}\"\nstate_dir = {}\n\n\
         [netboot.dhcp]\nmode = \"{}\"\nsubnet = \"{}/{}\"\nlease_time = {}\n\
         pool = {{ start = \"{}\", end = \"{}\" }}\ndiscovery = {}",
        q(&c.raw.provisioning.interface),
        // HA: what nodes are told (DHCP server, `seed.url=`, the metadata URL a deployed node
        // keeps) is the floating address, which the undercloud holds after the hand-off.
        c.ha.as_ref().map_or(a.addr, |m| m.floating.addr),
        q(&format!("{}/netboot", paths.state)),
        daemon_dhcp_mode(c.raw.dhcp.mode),
        a.network(),
        a.prefix,
        c.raw.dhcp.lease_time.unwrap_or(3600),
        c.pool.0,
        c.pool.1,
        c.raw.dhcp.discovery,
    );
    if let Some(r) = c.raw.dhcp.router {
        let _ = writeln!(t, "router = \"{r}\"");
    }
    let _ = writeln!(
        t,
        "\n[netboot.tftp]\nroot = {}\n\n[netboot.http]\nroot = {}\nport = 8080",
        q(&format!("{}/ipxe", paths.share)),
        q(&paths.share),
    );
    if let Some(m) = &c.ha {
        t.push_str(&super::ha::store_table(m, a.addr, &paths.state));
    }
    t
}

/// The daemon's `[netboot.dhcp] mode` for the appliance's (the same words: `auto` is the
/// daemon's own probe, `netboot::dhcp::probe`).
fn daemon_dhcp_mode(m: DhcpMode) -> &'static str {
    m.as_str()
}

/// Line (1-based) of byte `offset` and the dotted field whose `key = …` line it is on.
fn locate_offset(text: &str, offset: usize) -> (usize, Option<String>) {
    let offset = offset.min(text.len());
    let line = text[..offset].matches('\n').count() + 1;
    let this = text.lines().nth(line - 1).unwrap_or("");
    let key = line_key(this);
    let table = text.lines().take(line).filter_map(table_header).last();
    let field = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    };
    (line, field)
}

fn line_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('#') && !k.starts_with('[')).then(|| k.to_string())
}

fn table_header(line: &str) -> Option<String> {
    let l = line.trim();
    let inner = l
        .strip_prefix("[[")
        .and_then(|l| l.split("]]").next())
        .or_else(|| l.strip_prefix('[').and_then(|l| l.split(']').next()))?;
    Some(inner.trim().to_string())
}

/// Line of `key` inside `[table]` (1 when absent: the default applied).
fn locate_key(text: &str, table: &str, key: &str) -> usize {
    let mut current = String::new();
    let mut table_line = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(t) = table_header(l) {
            current = t;
            if current == table {
                table_line = Some(i + 1);
            }
            continue;
        }
        if current == table && line_key(l).as_deref() == Some(key) {
            return i + 1;
        }
    }
    table_line.unwrap_or(1)
}

fn locate_nth_table(text: &str, table: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim().starts_with("[[") && table_header(l).as_deref() == Some(table))
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}

/// Read and check a config file.
pub fn load(path: &Path) -> Result<Checked, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 1,
        field: "(file)".into(),
        message: format!("cannot be read: {e}"),
    })?;
    parse(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_render_a_daemon_config_that_loads() {
        let c = parse("seed.toml", DEFAULT_TOML).unwrap();
        assert_eq!(c.address.to_string(), "10.80.0.1/24");
        assert_eq!(c.pool.0, Ipv4Addr::new(10, 80, 0, 100));
        assert_eq!(c.raw.dhcp.mode, DhcpMode::Auto);
        let d = tempfile::tempdir().unwrap();
        let paths = Paths {
            share: d.path().join("share").display().to_string(),
            state: d.path().join("state").display().to_string(),
        };
        let text = daemon_toml(&c, "a-generated-token", &paths);
        let f = d.path().join("daemon.toml");
        std::fs::write(&f, &text).unwrap();
        let dc = crate::daemon::config::DaemonConfig::load(&f).unwrap();
        assert_eq!(dc.netboot.interface.as_deref(), Some("eth0"));
        assert_eq!(dc.netboot.server_ip, Ipv4Addr::new(10, 80, 0, 1));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse(
            "seed.toml",
            "[provisioning]\ninterface = \"eth0\"\naddress = \"10.9.0.1\"\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "provisioning.address"));
        assert!(
            e.to_string()
                .starts_with("seed.toml:3: provisioning.address: "),
            "{e}"
        );

        let e = parse("s.toml", "[dhcp]\n\nmode = \"sometimes\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "dhcp.mode"), "{e}");

        let e = parse("s.toml", "[api]\ntokn = \"abcdefghij\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("tokn"), "{e}");

        let e = parse(
            "s.toml",
            "[provisioning]\naddress = \"10.9.0.1/24\"\n[dhcp]\npool_start = \"10.8.0.5\"\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "dhcp.pool_start"), "{e}");

        let e = parse("s.toml", "[provisioning\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn the_sample_token_and_short_passwords_are_refused() {
        let e = parse("s.toml", "# x\n[api]\ntoken = \"change-me\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "api.token"));
        let e = parse("s.toml", "[operator]\npassword = \"short\"\n").unwrap_err();
        assert_eq!(e.field, "operator.password");
        let ok = parse("s.toml", "[operator]\npassword = \"long enough\"\n").unwrap();
        assert!(
            !format!("{ok:?}").contains("long enough"),
            "no password in Debug"
        );
    }

    #[test]
    fn other_interfaces_are_checked() {
        let e = parse(
            "s.toml",
            "[[interfaces]]\nname = \"eth1\"\naddress = \"dhcp\"\n\n[[interfaces]]\nname = \"eth2\"\naddress = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (5, "interfaces[1].address"),
            "{e}"
        );
    }
}
