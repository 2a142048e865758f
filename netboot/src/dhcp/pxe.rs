//! Who is asking, and what it should load: PXE firmware, iPXE, or UEFI HTTP Boot.
//!
//! The client system architecture (option 93, RFC 4578) picks the boot file for firmware PXE. A
//! client that is already iPXE (user class "iPXE" or iPXE's encapsulated option 175) gets the URL
//! of its per-node script instead, so it does not load iPXE again; a UEFI HTTP Boot client
//! (vendor class `HTTPClient…`) gets the boot file as an HTTP URL and option 60 `HTTPClient`.

use super::Bootfiles;
use crate::MacAddr;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use std::fmt;
use std::net::Ipv4Addr;

/// iPXE's encapsulated options; its presence means the client runs iPXE.
pub const IPXE_ENCAP: u8 = 175;

/// The kind of network boot client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Not a network boot client (an OS's DHCP client): addresses only.
    Plain,
    /// Firmware PXE (vendor class `PXEClient…` or an architecture option).
    Pxe,
    /// iPXE, which fetches its script over HTTP.
    Ipxe,
    /// UEFI HTTP Boot (vendor class `HTTPClient…`).
    HttpBoot,
}

/// What the request tells us about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub firmware: Firmware,
    /// Option 93 (first entry), if sent.
    pub arch: Option<u16>,
}

/// A readable architecture name for the decision log.
#[derive(Debug, Clone, Copy)]
pub struct ArchName(pub Option<u16>);

impl fmt::Display for ArchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some(0) => f.write_str("BIOS"),
            Some(6) => f.write_str("UEFI-ia32"),
            Some(7) => f.write_str("UEFI-x64"),
            Some(9) => f.write_str("UEFI-x64(BC)"),
            Some(10) => f.write_str("UEFI-arm32"),
            Some(11) => f.write_str("UEFI-arm64"),
            Some(16) => f.write_str("UEFI-x64-HTTP"),
            Some(19) => f.write_str("UEFI-arm64-HTTP"),
            Some(n) => write!(f, "{n}"),
        }
    }
}

fn vendor_class(msg: &Message) -> Option<&[u8]> {
    match msg.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v),
        _ => None,
    }
}

/// Whether the client says it is iPXE.
pub fn is_ipxe(msg: &Message) -> bool {
    let user_class_ipxe = match msg.opts().get(OptionCode::UserClass) {
        // iPXE sends the bare string; RFC 3004 clients prefix a length. Either contains "iPXE".
        Some(DhcpOption::UserClass(v)) => v.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    user_class_ipxe || msg.opts().contains(OptionCode::Unknown(IPXE_ENCAP))
}

/// Classify the client of a request.
pub fn classify(msg: &Message) -> ClientInfo {
    let arch = match msg.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    };
    let vc = vendor_class(msg).unwrap_or_default();
    let firmware = if is_ipxe(msg) {
        Firmware::Ipxe
    } else if vc.starts_with(b"HTTPClient") {
        Firmware::HttpBoot
    } else if vc.starts_with(b"PXEClient") || arch.is_some() {
        Firmware::Pxe
    } else {
        Firmware::Plain
    };
    ClientInfo { firmware, arch }
}

/// Boot information to put in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The `file` field and option 67: a TFTP path or an HTTP URL.
    pub file: String,
    /// `siaddr` / next-server and option 66 (TFTP boot only).
    pub next_server: Option<Ipv4Addr>,
    /// Option 60 to echo (`PXEClient` or `HTTPClient`), if any.
    pub vendor_class: Option<&'static str>,
    /// Whether to add PXE vendor option 43 (discovery control: boot the file directly).
    pub pxe_vendor_options: bool,
}

/// Why a network boot client gets no boot information.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoBoot {
    #[error("not a network boot client")]
    NotNetboot,
    #[error("no boot file for architecture {0}")]
    UnsupportedArch(u16),
    #[error("needs an HTTP URL but no [http] service runs")]
    NoHttp,
    #[error("address only (unknown MAC)")]
    AddressOnly,
}

fn file_for_arch(arch: u16, files: &Bootfiles) -> Option<&str> {
    match arch {
        0 => Some(&files.bios),
        7 | 9 | 16 => Some(&files.uefi_x64),
        11 | 19 => Some(&files.uefi_arm64),
        _ => None,
    }
}

/// The boot information for a client, given its MAC (for the iPXE script URL).
pub fn boot_for(
    client: &ClientInfo,
    mac: MacAddr,
    files: &Bootfiles,
    server_ip: Ipv4Addr,
    http_base: Option<&str>,
) -> Result<Boot, NoBoot> {
    match client.firmware {
        Firmware::Plain => Err(NoBoot::NotNetboot),
        Firmware::Ipxe => {
            let base = http_base.ok_or(NoBoot::NoHttp)?;
            Ok(Boot {
                file: format!("{base}/ipxe/{}", mac.hyphenated()),
                next_server: None,
                vendor_class: None,
                pxe_vendor_options: false,
            })
        }
        Firmware::HttpBoot => {
            let base = http_base.ok_or(NoBoot::NoHttp)?;
            let arch = client.arch.unwrap_or(16);
            let file = file_for_arch(arch, files).ok_or(NoBoot::UnsupportedArch(arch))?;
            Ok(Boot {
                file: format!("{base}/{file}"),
                next_server: None,
                vendor_class: Some("HTTPClient"),
                pxe_vendor_options: false,
            })
        }
        Firmware::Pxe => {
            let arch = client.arch.unwrap_or(0);
            let file = file_for_arch(arch, files).ok_or(NoBoot::UnsupportedArch(arch))?;
            Ok(Boot {
                file: file.to_string(),
                next_server: Some(server_ip),
                vendor_class: Some("PXEClient"),
                pxe_vendor_options: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, UnknownOption};

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn msg(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn boot(opts: Vec<DhcpOption>, http: Option<&str>) -> Result<Boot, NoBoot> {
        let c = classify(&msg(opts));
        boot_for(&c, MAC, &Bootfiles::default(), SERVER, http)
    }

    fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        ]
    }

    #[test]
    fn architecture_picks_the_boot_file() {
        for (arch, file) in [
            (0, "undionly.kpxe"),
            (7, "snponly.efi"),
            (9, "snponly.efi"),
            (11, "snponly-arm64.efi"),
        ] {
            let b = boot(pxe(arch), None).unwrap();
            assert_eq!(b.file, file, "arch {arch}");
            assert_eq!(b.next_server, Some(SERVER));
            assert_eq!(b.vendor_class, Some("PXEClient"));
        }
        assert_eq!(boot(pxe(6), None), Err(NoBoot::UnsupportedArch(6)));
        // PXEClient without option 93 is a BIOS client.
        let b = boot(
            vec![DhcpOption::ClassIdentifier(b"PXEClient".to_vec())],
            None,
        );
        assert_eq!(b.unwrap().file, "undionly.kpxe");
    }

    #[test]
    fn ipxe_gets_its_script_url() {
        let http = Some("http://10.0.0.1:8080");
        let mut by_user_class = pxe(0);
        by_user_class.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let b = boot(by_user_class, http).unwrap();
        assert_eq!(b.file, "http://10.0.0.1:8080/ipxe/52-54-00-00-00-01");
        assert_eq!(b.next_server, None);

        let mut by_175 = pxe(7);
        by_175.push(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(IPXE_ENCAP),
            vec![177, 5, 1, 0x80, 0x86, 0x10, 0x0e],
        )));
        assert_eq!(classify(&msg(by_175.clone())).firmware, Firmware::Ipxe);
        assert_eq!(boot(by_175, None), Err(NoBoot::NoHttp));
    }

    #[test]
    fn http_boot_gets_a_url_and_httpclient() {
        let opts = vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(16)),
        ];
        let b = boot(opts, Some("http://10.0.0.1:8080")).unwrap();
        assert_eq!(b.file, "http://10.0.0.1:8080/snponly.efi");
        assert_eq!(b.vendor_class, Some("HTTPClient"));
        assert_eq!(b.next_server, None);
    }

    #[test]
    fn an_os_client_is_plain() {
        assert_eq!(boot(vec![], None), Err(NoBoot::NotNetboot));
    }
}
