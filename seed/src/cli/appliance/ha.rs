//! The appliance's `[ha]` table: the seed as the first member of an HA control plane from its
//! first boot (issue 15) — the collapsed cluster of the TripleO story. The daemon runs a
//! one-member etcd cluster on the state directory and holds the floating provisioning address;
//! what nodes are told (DHCP server, `seed.url=`, the metadata URL a deployed node keeps) is the
//! floating address, so it outlives the seed; the seed's own address is its member's and its
//! API's. The undercloud (`seed/templates/undercloud.yaml`) joins that cluster through it, and
//! `seed handoff` leaves the control plane to the undercloud and powers the appliance off.
//!
//! ```toml
//! [ha]
//! enabled = true
//! floating_address = "10.80.0.1/24"   # the control plane's address: it moves to the undercloud
//! name = "seed"                       # this member's name (default "seed")
//! ```

use super::config::Cidr;
use serde::Deserialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// Run as the first member of an HA control plane (an etcd store the daemon runs itself).
    #[serde(default)]
    pub enabled: bool,
    /// The member's and daemon's name among the control plane's (default `seed`).
    pub name: Option<String>,
    /// The address the leader holds on the provisioning NIC, ADDRESS/PREFIX: what the nodes
    /// and the operator use, the seed's first and the undercloud's after the hand-off.
    pub floating_address: Option<String>,
}

/// The checked `[ha]` of an enabled control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub floating: Cidr,
}

impl Ha {
    /// The member this config asks for (`None`: not HA), or the key at fault and why.
    pub fn check(
        &self,
        address: Cidr,
        pool: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    ) -> Result<Option<Member>, (&'static str, String)> {
        if !self.enabled {
            return Ok(None);
        }
        let name = self.name.clone().unwrap_or_else(|| "seed".into());
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err((
                "name",
                format!("`{name}` is not a member name (letters, digits, - _ .)"),
            ));
        }
        let Some(f) = &self.floating_address else {
            return Err((
                "floating_address",
                "an HA seed needs the control plane's address (ADDRESS/PREFIX), \
                 which moves to the undercloud at the hand-off"
                    .into(),
            ));
        };
        let floating = Cidr::parse(f).map_err(|e| ("floating_address", e.to_string()))?;
        if floating.prefix != address.prefix || !address.contains(floating.addr) {
            return Err((
                "floating_address",
                format!(
                    "{floating} is not in the provisioning subnet {}/{}",
                    address.network(),
                    address.prefix
                ),
            ));
        }
        if floating.addr == address.addr || floating.addr == address.network() {
            return Err((
                "floating_address",
                format!(
                    "{} is the appliance's own or the subnet's address: the floating one must \
                     be free to move",
                    floating.addr
                ),
            ));
        }
        if (u32::from(pool.0)..=u32::from(pool.1)).contains(&u32::from(floating.addr)) {
            return Err((
                "floating_address",
                format!(
                    "{} is in the DHCP pool {}–{}",
                    floating.addr, pool.0, pool.1
                ),
            ));
        }
        Ok(Some(Member { name, floating }))
    }
}

/// The daemon's `[store]` table for `member` on the appliance at `own`, its etcd data in
/// `state/etcd`; once handed over the appliance powers itself off.
pub fn store_table(m: &Member, own: std::net::Ipv4Addr, state: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let client = format!("http://{own}:2379");
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n# [ha] enabled: the first member of an HA control plane (a one-member etcd cluster\n\
         # this daemon runs; the undercloud joins it, `seed handoff` leaves it to them).\n\
         [store]\nbackend = \"etcd\"\nendpoints = [{}]\nname = {}\n\
         member = {{ data_dir = {}, client_url = {}, peer_url = {} }}\n\
         advertise = {}\nfloating_address = \"{}\"\nafter_handoff = \"poweroff\"",
        q(&client),
        q(&m.name),
        q(&format!("{state}/etcd")),
        q(&client),
        q(&format!("http://{own}:2380")),
        q(&format!("http://{own}:6385")),
        m.floating,
    );
    t
}

#[cfg(test)]
mod tests {
    use super::super::config::{daemon_toml, parse, Paths};
    use crate::store::config::StoreConfig;

    const HA: &str = "[provisioning]\naddress = \"10.80.0.2/24\"\n[dhcp]\nlease_time = 60\n\
                      [api]\ntoken = \"an-ha-appliance-token\"\n\
                      [ha]\nenabled = true\nfloating_address = \"10.80.0.1/24\"\n";

    /// `[ha] enabled` makes the daemon the first etcd member from the first boot: its data on
    /// the state directory, the floating address held, the machine off after the hand-off.
    #[test]
    fn an_ha_appliance_runs_its_own_member_and_powers_off_after_the_handoff() {
        let c = parse("seed.toml", HA).unwrap();
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state").display().to_string();
        let paths = Paths {
            share: d.path().join("share").display().to_string(),
            state: state.clone(),
        };
        let f = d.path().join("daemon.toml");
        std::fs::write(&f, daemon_toml(&c, "an-ha-appliance-token", &paths)).unwrap();
        let dc = crate::daemon::config::DaemonConfig::load(&f).unwrap();
        let StoreConfig::Etcd { etcd, ha } = &dc.store else {
            panic!("{:?}", dc.store);
        };
        assert_eq!(etcd.endpoints, vec!["http://10.80.0.2:2379".to_string()]);
        assert_eq!(ha.name, "seed");
        assert_eq!(ha.floating, Some(("10.80.0.1".parse().unwrap(), 24)));
        assert_eq!(ha.advertise.as_deref(), Some("http://10.80.0.2:6385"));
        assert_eq!(ha.after_handoff, crate::ha::handoff::After::Poweroff);
        let m = ha.member.as_ref().unwrap();
        assert_eq!(m.data_dir, std::path::Path::new(&state).join("etcd"));
        assert_eq!(m.peer_url, "http://10.80.0.2:2380");
        // Nodes are told the floating address (it outlives the seed); the seed's own address
        // is its member's and its API's.
        assert_eq!(dc.netboot.server_ip.to_string(), "10.80.0.1");
        // Without [ha], the redb store of before.
        let plain = parse(
            "seed.toml",
            &HA.replace("enabled = true", "enabled = false"),
        )
        .unwrap();
        std::fs::write(&f, daemon_toml(&plain, "an-ha-appliance-token", &paths)).unwrap();
        let dc = crate::daemon::config::DaemonConfig::load(&f).unwrap();
        assert!(
            matches!(dc.store, StoreConfig::Redb { .. }),
            "{:?}",
            dc.store
        );
    }

    #[test]
    fn a_floating_address_that_cannot_float_is_refused_at_its_line() {
        for (floating, why) in [
            ("10.81.0.1/24", "not in the provisioning subnet"),
            ("10.80.0.2/24", "own or the subnet's"),
            ("10.80.0.150/24", "in the DHCP pool"),
            ("10.80.0.1", "ADDRESS/PREFIX"),
        ] {
            let text = HA.replace("10.80.0.1/24", floating);
            let e = parse("seed.toml", &text).unwrap_err().to_string();
            assert!(
                e.starts_with("seed.toml:9: ha.floating_address: ") && e.contains(why),
                "{floating}: {e}"
            );
        }
        let e = parse(
            "seed.toml",
            &HA.replace("floating_address = \"10.80.0.1/24\"\n", ""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ha.floating_address: an HA seed needs"), "{e}");
        let e = parse(
            "seed.toml",
            &HA.replace("lease_time = 60", "lease_time = 5"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("seed.toml:4: dhcp.lease_time: "), "{e}");
    }
}
