//! The IPMI chassis commands the seed needs and `ipmi-rs` 0.6 lacks, as raw requests with typed
//! encoders and decoders (IPMI 2.0 §28): Get Chassis Status (0x01), Chassis Control (0x02), Set
//! System Boot Options (0x08) for the boot flags (parameter 5), and completion-code meanings.
//!
//! Sans-IO: bytes in, bytes out; the transport lives in `ipmi.rs`.

use super::{BootDevice, PowerAction, PowerState};

/// Network function of chassis requests (responses are `0x01`).
pub const NETFN_CHASSIS: u8 = 0x00;
/// Get Chassis Status.
pub const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
/// Chassis Control.
pub const CMD_CHASSIS_CONTROL: u8 = 0x02;
/// Set System Boot Options.
pub const CMD_SET_SYSTEM_BOOT_OPTIONS: u8 = 0x08;
/// Get System Boot Options.
pub const CMD_GET_SYSTEM_BOOT_OPTIONS: u8 = 0x09;

/// Boot option parameter 0: set in progress.
pub const BOOT_PARAM_SET_IN_PROGRESS: u8 = 0;
/// Boot option parameter 4: boot info acknowledge.
pub const BOOT_PARAM_INFO_ACK: u8 = 4;
/// Boot option parameter 5: boot flags.
pub const BOOT_PARAM_BOOT_FLAGS: u8 = 5;

/// Network function of application requests.
pub const NETFN_APP: u8 = 0x06;
/// Set Session Privilege Level (application netfn).
pub const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
/// Privilege level: operator (enough for chassis commands).
pub const PRIV_OPERATOR: u8 = 0x03;
/// Privilege level: administrator.
pub const PRIV_ADMINISTRATOR: u8 = 0x04;

/// Close Session (application netfn).
pub const CMD_CLOSE_SESSION: u8 = 0x3c;

/// A request as it goes on the wire inside an IPMI message: netfn, command, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// What the operator would call it, for error messages.
    pub name: &'static str,
}

/// Why a chassis response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChassisError {
    /// A non-zero completion code.
    #[error("completion code {code:#04x} ({})", completion_meaning(*.cmd, *.code))]
    Completion { cmd: u8, code: u8 },
    /// Fewer data bytes than the command's response has.
    #[error("response has {got} data byte(s), expected at least {expected}")]
    Short { expected: usize, got: usize },
}

/// The chassis control code of a power action (Chassis Control request byte 1).
pub fn control_code(action: PowerAction) -> u8 {
    match action {
        PowerAction::Off => 0x00,
        PowerAction::On => 0x01,
        PowerAction::Cycle => 0x02,
        PowerAction::Reset => 0x03,
        PowerAction::SoftOff => 0x05,
    }
}

/// Chassis Control (netfn 0x00, cmd 0x02).
pub fn chassis_control(action: PowerAction) -> RawRequest {
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: CMD_CHASSIS_CONTROL,
        data: vec![control_code(action)],
        name: "Chassis Control",
    }
}

/// Set Session Privilege Level (netfn 0x06, cmd 0x3b).
///
/// An RMCP+ session starts at user privilege whatever RAKP asked for (IPMI 2.0 §13.17); the
/// chassis commands need operator, so this goes right after the session opens (as ipmitool
/// does). `ipmi-rs` 0.6 does not send it.
pub fn set_session_privilege(level: u8) -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: CMD_SET_SESSION_PRIVILEGE,
        data: vec![level],
        name: "Set Session Privilege Level",
    }
}

/// Close Session (netfn 0x06, cmd 0x3c) for the session with this id (the BMC's, i.e. the
/// managed system session id for RMCP+), least significant byte first.
pub fn close_session(session_id: u32) -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: CMD_CLOSE_SESSION,
        data: session_id.to_le_bytes().to_vec(),
        name: "Close Session",
    }
}

/// Get Chassis Status (netfn 0x00, cmd 0x01).
pub fn get_chassis_status() -> RawRequest {
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: CMD_GET_CHASSIS_STATUS,
        data: Vec::new(),
        name: "Get Chassis Status",
    }
}

/// What Get Chassis Status reports (the parts the seed uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power: PowerState,
    pub overload: bool,
    pub interlock: bool,
    pub main_power_fault: bool,
    pub power_control_fault: bool,
}

/// Check a completion code: 0 is success.
pub fn check_completion(cmd: u8, code: u8) -> Result<(), ChassisError> {
    if code == 0 {
        Ok(())
    } else {
        Err(ChassisError::Completion { cmd, code })
    }
}

/// A response to `cmd` that succeeded and carries at least `expected` data bytes.
fn check_response(cmd: u8, cc: u8, data: &[u8], expected: usize) -> Result<(), ChassisError> {
    check_completion(cmd, cc)?;
    if data.len() < expected {
        return Err(ChassisError::Short {
            expected,
            got: data.len(),
        });
    }
    Ok(())
}

/// Decode a Get Chassis Status response (completion code and the data after it).
pub fn parse_chassis_status(cc: u8, data: &[u8]) -> Result<ChassisStatus, ChassisError> {
    // Current power state, last power event, misc. chassis state; front panel is optional.
    check_response(CMD_GET_CHASSIS_STATUS, cc, data, 3)?;
    let b = data[0];
    Ok(ChassisStatus {
        power: if b & 0x01 != 0 {
            PowerState::On
        } else {
            PowerState::Off
        },
        overload: b & 0x02 != 0,
        interlock: b & 0x04 != 0,
        main_power_fault: b & 0x08 != 0,
        power_control_fault: b & 0x10 != 0,
    })
}

/// Decode a response that carries only a completion code (Chassis Control, Set Boot Options).
pub fn parse_empty(cmd: u8, cc: u8) -> Result<(), ChassisError> {
    check_completion(cmd, cc)
}

/// The boot device selector (boot flags data byte 2, bits 5:2), already shifted into place.
pub fn device_selector(device: BootDevice) -> u8 {
    let sel: u8 = match device {
        BootDevice::Pxe => 0b0001,
        BootDevice::Disk => 0b0010,
        BootDevice::Cdrom => 0b0101,
        BootDevice::Bios => 0b0110,
    };
    sel << 2
}

/// The five data bytes of boot option parameter 5 (boot flags).
///
/// Byte 1: bit 7 valid, bit 6 persistent (else next boot only), bit 5 EFI (else legacy).
/// Byte 2: boot device selector. Bytes 3–5: no overrides.
pub fn boot_flag_bytes(device: BootDevice, persistent: bool, efi: bool) -> [u8; 5] {
    let mut b1 = 0x80;
    if persistent {
        b1 |= 0x40;
    }
    if efi {
        b1 |= 0x20;
    }
    [b1, device_selector(device), 0, 0, 0]
}

fn set_boot_option(param: u8, data: &[u8], name: &'static str) -> RawRequest {
    let mut d = Vec::with_capacity(1 + data.len());
    // Bit 7 clear: the parameter stays valid/unlocked.
    d.push(param & 0x7f);
    d.extend_from_slice(data);
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: CMD_SET_SYSTEM_BOOT_OPTIONS,
        data: d,
        name,
    }
}

/// Set System Boot Options, parameter 5 (boot flags).
pub fn set_boot_flags(device: BootDevice, persistent: bool, efi: bool) -> RawRequest {
    set_boot_option(
        BOOT_PARAM_BOOT_FLAGS,
        &boot_flag_bytes(device, persistent, efi),
        "Set System Boot Options (boot flags)",
    )
}

/// Set System Boot Options, parameter 0: `true` = set in progress, `false` = set complete.
pub fn set_in_progress(in_progress: bool) -> RawRequest {
    set_boot_option(
        BOOT_PARAM_SET_IN_PROGRESS,
        &[u8::from(in_progress)],
        "Set System Boot Options (set in progress)",
    )
}

/// Set System Boot Options, parameter 4: clear the BIOS's acknowledgement so the firmware
/// reads the new flags (write mask 0x01, data 0x01 — what ipmitool sends too).
pub fn boot_info_ack() -> RawRequest {
    set_boot_option(
        BOOT_PARAM_INFO_ACK,
        &[0x01, 0x01],
        "Set System Boot Options (boot info acknowledge)",
    )
}

/// Get System Boot Options for the boot flags (parameter 5).
pub fn get_boot_flags() -> RawRequest {
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: CMD_GET_SYSTEM_BOOT_OPTIONS,
        data: vec![BOOT_PARAM_BOOT_FLAGS, 0, 0],
        name: "Get System Boot Options (boot flags)",
    }
}

/// Boot flags as read back with Get System Boot Options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    pub valid: bool,
    pub persistent: bool,
    pub efi: bool,
    /// `None` when no override (or one the seed does not name) is set.
    pub device: Option<BootDevice>,
}

/// Decode a Get System Boot Options response for parameter 5.
pub fn parse_boot_flags(cc: u8, data: &[u8]) -> Result<BootFlags, ChassisError> {
    // Parameter version, parameter valid + selector, then the 5 data bytes.
    check_response(CMD_GET_SYSTEM_BOOT_OPTIONS, cc, data, 7)?;
    let b1 = data[2];
    let device = match (data[3] >> 2) & 0x0f {
        0b0001 => Some(BootDevice::Pxe),
        0b0010 => Some(BootDevice::Disk),
        0b0101 => Some(BootDevice::Cdrom),
        0b0110 => Some(BootDevice::Bios),
        _ => None,
    };
    Ok(BootFlags {
        valid: b1 & 0x80 != 0,
        persistent: b1 & 0x40 != 0,
        efi: b1 & 0x20 != 0,
        device,
    })
}

/// What a completion code means (IPMI 2.0 table 5-2, plus the chassis command-specific ones).
pub fn completion_meaning(cmd: u8, code: u8) -> &'static str {
    match (cmd, code) {
        (_, 0x00) => "success",
        (CMD_SET_SYSTEM_BOOT_OPTIONS | CMD_GET_SYSTEM_BOOT_OPTIONS, 0x80) => {
            "boot option parameter not supported"
        }
        (CMD_SET_SYSTEM_BOOT_OPTIONS, 0x81) => {
            "another client is setting boot options (set in progress)"
        }
        (CMD_SET_SYSTEM_BOOT_OPTIONS, 0x82) => "boot option parameter is read-only",
        (CMD_CLOSE_SESSION, 0x87) => "invalid session id",
        (CMD_CLOSE_SESSION, 0x88) => "invalid session handle",
        (CMD_SET_SESSION_PRIVILEGE, 0x80) => "requested privilege level not available to this user",
        (CMD_SET_SESSION_PRIVILEGE, 0x81) => "requested privilege level exceeds the user's limit",
        (_, 0xc0) => "node busy",
        (_, 0xc1) => "invalid or unsupported command",
        (_, 0xc2) => "command invalid for this LUN",
        (_, 0xc3) => "timeout while processing the command",
        (_, 0xc4) => "out of space",
        (_, 0xc5) => "reservation cancelled or invalid",
        (_, 0xc6) => "request data truncated",
        (_, 0xc7) => "request data length invalid",
        (_, 0xc8) => "request data field length limit exceeded",
        (_, 0xc9) => "parameter out of range",
        (_, 0xca) => "cannot return the number of requested bytes",
        (_, 0xcb) => "requested sensor, data or record not present",
        (_, 0xcc) => "invalid data field in request",
        (_, 0xcd) => "command illegal for this sensor or record type",
        (_, 0xce) => "command response could not be provided",
        (_, 0xcf) => "cannot execute duplicated request",
        (_, 0xd0) => "SDR repository in update mode",
        (_, 0xd1) => "device in firmware update mode",
        (_, 0xd2) => "BMC initialization in progress",
        (_, 0xd3) => "destination unavailable",
        (_, 0xd4) => "insufficient privilege level",
        (_, 0xd5) => "not supported in the present state",
        (_, 0xd6) => "sub-function disabled or unavailable",
        (_, 0xff) => "unspecified error",
        (_, 0x01..=0x7e) => "OEM-specific error",
        (_, 0x80..=0xbe) => "command-specific error",
        _ => "reserved completion code",
    }
}

/// Whether a completion code says the command itself is not implemented.
pub fn is_unsupported(code: u8) -> bool {
    matches!(code, 0xc1 | 0xc2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chassis_control_encodes_each_action() {
        let cases = [
            (PowerAction::Off, 0x00),
            (PowerAction::On, 0x01),
            (PowerAction::Cycle, 0x02),
            (PowerAction::Reset, 0x03),
            (PowerAction::SoftOff, 0x05),
        ];
        for (action, code) in cases {
            let r = chassis_control(action);
            assert_eq!(
                (r.netfn, r.cmd, r.data),
                (0x00, 0x02, vec![code]),
                "{action}"
            );
        }
    }

    #[test]
    fn set_session_privilege_encodes_level() {
        let r = set_session_privilege(PRIV_ADMINISTRATOR);
        assert_eq!((r.netfn, r.cmd, r.data), (0x06, 0x3b, vec![0x04]));
        let r = close_session(0x1234_5678);
        assert_eq!(
            (r.netfn, r.cmd, r.data),
            (0x06, 0x3c, vec![0x78, 0x56, 0x34, 0x12])
        );
    }

    #[test]
    fn get_chassis_status_has_no_data() {
        let r = get_chassis_status();
        assert_eq!((r.netfn, r.cmd, r.data.len()), (0x00, 0x01, 0));
    }

    #[test]
    fn chassis_status_decodes_power_and_faults() {
        // As ipmi_sim answers with power on: 0x01 (on), restore policy bits, no events.
        let s = parse_chassis_status(0, &[0x41, 0x00, 0x00]).unwrap();
        assert_eq!(s.power, PowerState::On);
        assert!(!s.overload && !s.interlock && !s.main_power_fault && !s.power_control_fault);
        let s = parse_chassis_status(0, &[0x1e, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(s.power, PowerState::Off);
        assert!(s.overload && s.interlock && s.main_power_fault && s.power_control_fault);
    }

    #[test]
    fn chassis_status_rejects_short_and_failed_responses() {
        assert_eq!(
            parse_chassis_status(0, &[0x01]),
            Err(ChassisError::Short {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            parse_chassis_status(0xc1, &[]),
            Err(ChassisError::Completion {
                cmd: CMD_GET_CHASSIS_STATUS,
                code: 0xc1
            })
        );
    }

    #[test]
    fn boot_flags_for_each_device_and_persistence() {
        // Byte 2 values as in IPMI 2.0 table 28-14 (and as ipmitool sends them).
        let devices = [
            (BootDevice::Pxe, 0x04),
            (BootDevice::Disk, 0x08),
            (BootDevice::Cdrom, 0x14),
            (BootDevice::Bios, 0x18),
        ];
        for (device, b2) in devices {
            assert_eq!(
                boot_flag_bytes(device, false, false),
                [0x80, b2, 0, 0, 0],
                "{device}"
            );
            assert_eq!(
                boot_flag_bytes(device, true, false),
                [0xc0, b2, 0, 0, 0],
                "{device}"
            );
            assert_eq!(
                boot_flag_bytes(device, true, true),
                [0xe0, b2, 0, 0, 0],
                "{device}"
            );
        }
    }

    #[test]
    fn set_boot_flags_request_bytes() {
        let r = set_boot_flags(BootDevice::Pxe, false, false);
        assert_eq!(
            (r.netfn, r.cmd, r.data),
            (0x00, 0x08, vec![0x05, 0x80, 0x04, 0, 0, 0])
        );
        let r = set_boot_flags(BootDevice::Disk, true, false);
        assert_eq!(r.data, vec![0x05, 0xc0, 0x08, 0, 0, 0]);
        assert_eq!(set_in_progress(true).data, vec![0x00, 0x01]);
        assert_eq!(set_in_progress(false).data, vec![0x00, 0x00]);
        assert_eq!(boot_info_ack().data, vec![0x04, 0x01, 0x01]);
        assert_eq!(get_boot_flags().data, vec![0x05, 0x00, 0x00]);
    }

    #[test]
    fn boot_flags_round_trip_through_get_boot_options() {
        for device in [
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
        ] {
            for persistent in [false, true] {
                let mut resp = vec![0x01, 0x05];
                resp.extend_from_slice(&boot_flag_bytes(device, persistent, false));
                let f = parse_boot_flags(0, &resp).unwrap();
                assert_eq!(
                    f,
                    BootFlags {
                        valid: true,
                        persistent,
                        efi: false,
                        device: Some(device)
                    }
                );
            }
        }
        // ipmi_sim's answer after it consumed a PXE override: valid bit cleared.
        let f = parse_boot_flags(0, &[0x01, 0x05, 0x00, 0x04, 0, 0, 0]).unwrap();
        assert!(!f.valid);
        assert_eq!(f.device, Some(BootDevice::Pxe));
    }

    #[test]
    fn completion_codes_have_meanings() {
        assert_eq!(
            completion_meaning(CMD_CHASSIS_CONTROL, 0xd4),
            "insufficient privilege level"
        );
        assert_eq!(
            completion_meaning(CMD_CHASSIS_CONTROL, 0xd5),
            "not supported in the present state"
        );
        assert_eq!(
            completion_meaning(CMD_SET_SYSTEM_BOOT_OPTIONS, 0x80),
            "boot option parameter not supported"
        );
        // 0x80 means nothing special for Chassis Control: generic command-specific.
        assert_eq!(
            completion_meaning(CMD_CHASSIS_CONTROL, 0x80),
            "command-specific error"
        );
        assert_eq!(completion_meaning(0, 0x42), "OEM-specific error");
        assert_eq!(completion_meaning(0, 0xe0), "reserved completion code");
        let e = ChassisError::Completion {
            cmd: CMD_CHASSIS_CONTROL,
            code: 0xcc,
        };
        assert_eq!(
            e.to_string(),
            "completion code 0xcc (invalid data field in request)"
        );
        assert!(is_unsupported(0xc1));
        assert!(!is_unsupported(0xd5));
    }
}
