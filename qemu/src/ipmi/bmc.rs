//! The BMC's RMCP+ session state machine and command handlers, sans-IO.
//!
//! `BmcCore::handle` takes one datagram, the time and whether the machine is powered, and
//! returns the reply datagram (if any) and the power action to carry out (if any). The caller
//! owns the socket, the clock and the machine.

use super::crypto::{self, RakpInputs};
use super::message::{self, payload, Frame, Malformed, Request};
use super::{BootDevice, BootOverride, PowerAction};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Privilege levels (§6.8).
pub const PRIV_ADMIN: u8 = 4;
/// A session idle this long is forgotten.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Most concurrent sessions (real BMCs allow a handful).
pub const MAX_SESSIONS: usize = 16;
/// Inbound sequence numbers accepted this far behind / ahead of the highest seen (§6.12.13
/// allows duplicates and reordering within a window; ipmitool retries with the same number).
const SEQ_WINDOW: u32 = 16;

// RMCP+ / RAKP status codes (§13.24).
const ST_OK: u8 = 0x00;
const ST_NO_RESOURCES: u8 = 0x01;
const ST_INVALID_SESSION: u8 = 0x02;
const ST_INVALID_ROLE: u8 = 0x09;
const ST_INVALID_NAME_LEN: u8 = 0x0c;
/// RAKP 2 status for an unknown user name.
pub const ST_UNAUTHORIZED_NAME: u8 = 0x0d;
/// RAKP 4 status when RAKP 3's auth code does not verify (wrong password).
pub const ST_INVALID_ICV: u8 = 0x0f;
const ST_NO_CIPHER_SUITE: u8 = 0x11;

// Completion codes (§5.2).
const CC_OK: u8 = 0x00;
const CC_PRIV_NOT_AVAILABLE: u8 = 0x81;
const CC_INVALID_CMD: u8 = 0xc1;
const CC_BAD_LENGTH: u8 = 0xc7;
const CC_INVALID_FIELD: u8 = 0xcc;
const CC_PARAM_UNSUPPORTED: u8 = 0x80;
const CC_INSUFFICIENT_PRIV: u8 = 0xd4;

const NETFN_CHASSIS: u8 = 0x00;
const NETFN_APP: u8 = 0x06;

/// Supported cipher suites 0–3: (id, authentication, integrity, confidentiality).
const SUITES: [(u8, u8, u8, u8); 4] = [(0, 0, 0, 0), (1, 1, 0, 0), (2, 1, 1, 0), (3, 1, 1, 1)];

/// Who may log in, and what the BMC calls itself.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    /// User name (at most 16 bytes).
    pub username: String,
    /// Password (at most 20 bytes); also the BMC key Kg.
    pub password: String,
    /// The system GUID sent in RAKP 2.
    pub guid: [u8; 16],
}

/// Result of handling one datagram.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// Datagram to send back to the sender.
    pub reply: Option<Vec<u8>>,
    /// What the machine should do (Chassis Control), to be done before replying.
    pub action: Option<PowerAction>,
    /// Why the datagram was dropped, when it was.
    pub dropped: Option<DropReason>,
}

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Unparseable.
    Malformed(Malformed),
    /// Unknown or not yet active session ID.
    UnknownSession,
    /// AuthCode or encryption check failed.
    Integrity,
    /// Sequence number outside the window.
    Sequence,
    /// A message not valid in this state (e.g. RAKP 3 with an error status).
    Protocol,
}

#[derive(Debug)]
enum State {
    Opened,
    Rakp2Sent {
        console_rand: [u8; 16],
        bmc_rand: [u8; 16],
        role: u8,
    },
    Active {
        k1: [u8; 20],
        k2: [u8; 20],
    },
}

#[derive(Debug)]
struct Session {
    console_id: u32,
    auth: bool,
    integrity: bool,
    confidential: bool,
    max_priv: u8,
    privilege: u8,
    state: State,
    out_seq: u32,
    in_seq: u32,
    last_seen: Instant,
}

/// The BMC core: sessions, boot options and command dispatch.
#[derive(Debug)]
pub struct BmcCore {
    config: BmcConfig,
    sessions: HashMap<u32, Session>,
    rng: StdRng,
    boot_params: HashMap<u8, Vec<u8>>,
}

fn rand16(rng: &mut StdRng) -> [u8; 16] {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b
}

impl BmcCore {
    /// A BMC with no sessions; `seed` seeds its random numbers (session IDs, RAKP randoms, IVs).
    pub fn new(config: BmcConfig, seed: u64) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            boot_params: HashMap::new(),
        }
    }

    /// Number of sessions open or being opened.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The boot override currently set (boot flags valid), without consuming it.
    pub fn boot_override(&self) -> Option<BootOverride> {
        let f = self.boot_params.get(&5)?;
        if f.len() < 2 || f[0] & 0x80 == 0 {
            return None;
        }
        Some(BootOverride {
            device: BootDevice::from_selector(f[1])?,
            persistent: f[0] & 0x40 != 0,
            efi: f[0] & 0x20 != 0,
        })
    }

    /// The boot device for a power-on happening now. A next-boot-only override is used up
    /// (its valid bit cleared), as a real BMC does once the firmware has read it.
    pub fn take_boot_device(&mut self) -> Option<BootDevice> {
        let o = self.boot_override()?;
        if !o.persistent {
            if let Some(f) = self.boot_params.get_mut(&5) {
                f[0] &= !0x80;
            }
        }
        Some(o.device)
    }

    /// Handle one datagram received at `now`; `powered` is whether the machine is on.
    pub fn handle(&mut self, datagram: &[u8], now: Instant, powered: bool) -> Output {
        self.sessions
            .retain(|_, s| now.duration_since(s.last_seen) < SESSION_TIMEOUT);
        let frame = match message::parse(datagram) {
            Ok(f) => f,
            Err(e) => return dropped(DropReason::Malformed(e)),
        };
        match frame {
            Frame::Ping { tag } => reply(message::pong(tag)),
            Frame::V15 { session_id, msg } => {
                if session_id != 0 {
                    return dropped(DropReason::UnknownSession);
                }
                let rq = match message::parse_request(msg) {
                    Ok(r) => r,
                    Err(e) => return dropped(DropReason::Malformed(e)),
                };
                let (rsp, action) = self.command(&rq, None, powered);
                Output {
                    reply: Some(message::build_v15(&rsp)),
                    action,
                    dropped: None,
                }
            }
            Frame::V20 {
                ptype,
                session_id,
                seq,
                payload,
                trailer,
                session_part,
            } => {
                if session_id == 0 {
                    self.presession(ptype, payload, now, powered)
                } else {
                    self.in_session(
                        ptype,
                        session_id,
                        seq,
                        payload,
                        trailer,
                        session_part,
                        powered,
                        now,
                    )
                }
            }
        }
    }

    fn presession(&mut self, ptype: u8, p: &[u8], now: Instant, powered: bool) -> Output {
        if ptype & (payload::ENCRYPTED | payload::AUTHENTICATED) != 0 {
            return dropped(DropReason::Protocol);
        }
        match ptype & 0x3f {
            payload::IPMI => {
                let rq = match message::parse_request(p) {
                    Ok(r) => r,
                    Err(e) => return dropped(DropReason::Malformed(e)),
                };
                let (rsp, action) = self.command(&rq, None, powered);
                Output {
                    reply: Some(message::build_v20(payload::IPMI, 0, 0, &rsp, None)),
                    action,
                    dropped: None,
                }
            }
            payload::OPEN_REQ => self.open_session(p, now),
            payload::RAKP1 => self.rakp1(p, now),
            payload::RAKP3 => self.rakp3(p, now),
            _ => dropped(DropReason::Protocol),
        }
    }

    fn open_session(&mut self, p: &[u8], now: Instant) -> Output {
        if p.len() < 32 {
            return dropped(DropReason::Malformed(Malformed::Truncated));
        }
        let tag = p[0];
        let console_id = u32::from_le_bytes(p[4..8].try_into().expect("4"));
        let fail = |status: u8| {
            let mut r = vec![tag, status, 0, 0];
            r.extend_from_slice(&console_id.to_le_bytes());
            reply(message::build_v20(payload::OPEN_RSP, 0, 0, &r, None))
        };
        let (a, i, c) = (p[12] & 0x3f, p[20] & 0x3f, p[28] & 0x3f);
        if !SUITES.iter().any(|s| (s.1, s.2, s.3) == (a, i, c)) {
            return fail(ST_NO_CIPHER_SUITE);
        }
        let max_priv = match p[1] & 0x0f {
            0 => PRIV_ADMIN,
            r @ 1..=PRIV_ADMIN => r,
            _ => return fail(ST_INVALID_ROLE),
        };
        if console_id == 0 {
            return fail(ST_INVALID_SESSION);
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return fail(ST_NO_RESOURCES);
        }
        let bmc_id = loop {
            let id = self.rng.next_u32();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(
            bmc_id,
            Session {
                console_id,
                auth: a != 0,
                integrity: i != 0,
                confidential: c != 0,
                max_priv,
                privilege: 0,
                state: State::Opened,
                out_seq: 0,
                in_seq: 0,
                last_seen: now,
            },
        );
        let mut r = vec![tag, ST_OK, max_priv, 0];
        r.extend_from_slice(&console_id.to_le_bytes());
        r.extend_from_slice(&bmc_id.to_le_bytes());
        r.extend_from_slice(&[0x00, 0, 0, 0x08, a, 0, 0, 0]);
        r.extend_from_slice(&[0x01, 0, 0, 0x08, i, 0, 0, 0]);
        r.extend_from_slice(&[0x02, 0, 0, 0x08, c, 0, 0, 0]);
        reply(message::build_v20(payload::OPEN_RSP, 0, 0, &r, None))
    }

    fn rakp1(&mut self, p: &[u8], now: Instant) -> Output {
        if p.len() < 28 {
            return dropped(DropReason::Malformed(Malformed::Truncated));
        }
        let tag = p[0];
        let bmc_id = u32::from_le_bytes(p[4..8].try_into().expect("4"));
        let Some(s) = self.sessions.get_mut(&bmc_id) else {
            return dropped(DropReason::UnknownSession);
        };
        let console_id = s.console_id;
        let fail = |status: u8| {
            let mut r = vec![tag, status, 0, 0];
            r.extend_from_slice(&console_id.to_le_bytes());
            reply(message::build_v20(payload::RAKP2, 0, 0, &r, None))
        };
        if !matches!(s.state, State::Opened) {
            return dropped(DropReason::Protocol);
        }
        let console_rand: [u8; 16] = p[8..24].try_into().expect("16");
        let role = p[24];
        let ulen = p[27] as usize;
        if ulen > 16 || p.len() < 28 + ulen {
            self.sessions.remove(&bmc_id);
            return fail(ST_INVALID_NAME_LEN);
        }
        let username = &p[28..28 + ulen];
        if username != self.config.username.as_bytes() {
            self.sessions.remove(&bmc_id);
            return fail(ST_UNAUTHORIZED_NAME);
        }
        if role & 0x0f > s.max_priv || role & 0x0f == 0 {
            self.sessions.remove(&bmc_id);
            return fail(ST_INVALID_ROLE);
        }
        let bmc_rand = rand16(&mut self.rng);
        s.state = State::Rakp2Sent {
            console_rand,
            bmc_rand,
            role,
        };
        s.last_seen = now;
        let mut r = vec![tag, ST_OK, 0, 0];
        r.extend_from_slice(&console_id.to_le_bytes());
        r.extend_from_slice(&bmc_rand);
        r.extend_from_slice(&self.config.guid);
        if s.auth {
            let inputs = RakpInputs {
                console_sid: console_id,
                bmc_sid: bmc_id,
                console_rand,
                bmc_rand,
                bmc_guid: self.config.guid,
                role,
                username,
            };
            r.extend_from_slice(&inputs.rakp2_auth_code(self.config.password.as_bytes()));
        }
        reply(message::build_v20(payload::RAKP2, 0, 0, &r, None))
    }

    fn rakp3(&mut self, p: &[u8], now: Instant) -> Output {
        if p.len() < 8 {
            return dropped(DropReason::Malformed(Malformed::Truncated));
        }
        let tag = p[0];
        let bmc_id = u32::from_le_bytes(p[4..8].try_into().expect("4"));
        let Some(s) = self.sessions.get_mut(&bmc_id) else {
            return dropped(DropReason::UnknownSession);
        };
        let State::Rakp2Sent {
            console_rand,
            bmc_rand,
            role,
        } = s.state
        else {
            return dropped(DropReason::Protocol);
        };
        let console_id = s.console_id;
        if p[1] != ST_OK {
            // The console gave up (e.g. our RAKP 2 did not verify against its password).
            self.sessions.remove(&bmc_id);
            return dropped(DropReason::Protocol);
        }
        let inputs = RakpInputs {
            console_sid: console_id,
            bmc_sid: bmc_id,
            console_rand,
            bmc_rand,
            bmc_guid: self.config.guid,
            role,
            username: self.config.username.as_bytes(),
        };
        let kuid = self.config.password.as_bytes();
        let mut r = vec![tag, ST_OK, 0, 0];
        r.extend_from_slice(&console_id.to_le_bytes());
        let (k1, k2) = if s.auth {
            if p[8..] != inputs.rakp3_auth_code(kuid) {
                self.sessions.remove(&bmc_id);
                r[1] = ST_INVALID_ICV;
                return reply(message::build_v20(payload::RAKP4, 0, 0, &r, None));
            }
            let sik = inputs.sik(kuid);
            r.extend_from_slice(&inputs.rakp4_icv(&sik));
            (crypto::derive_k(&sik, 1), crypto::derive_k(&sik, 2))
        } else {
            ([0; 20], [0; 20])
        };
        s.state = State::Active { k1, k2 };
        s.privilege = (role & 0x0f).min(s.max_priv);
        s.last_seen = now;
        reply(message::build_v20(payload::RAKP4, 0, 0, &r, None))
    }

    #[allow(clippy::too_many_arguments)]
    fn in_session(
        &mut self,
        ptype: u8,
        bmc_id: u32,
        seq: u32,
        p: &[u8],
        trailer: &[u8],
        session_part: &[u8],
        powered: bool,
        now: Instant,
    ) -> Output {
        let Some(s) = self.sessions.get_mut(&bmc_id) else {
            return dropped(DropReason::UnknownSession);
        };
        let State::Active { k1, k2 } = s.state else {
            return dropped(DropReason::UnknownSession);
        };
        if ptype & 0x3f != payload::IPMI {
            return dropped(DropReason::Protocol);
        }
        if s.integrity {
            if ptype & payload::AUTHENTICATED == 0 || trailer.len() < 14 {
                return dropped(DropReason::Integrity);
            }
            let pad = trailer[trailer.len() - 14] as usize;
            let signed = &session_part[..session_part.len() - 12];
            if pad != trailer.len() - 14
                || trailer[trailer.len() - 13] != 0x07
                || crypto::integrity_sha1_96(&k1, signed) != trailer[trailer.len() - 12..]
            {
                return dropped(DropReason::Integrity);
            }
        }
        let plain;
        let msg = if s.confidential {
            if ptype & payload::ENCRYPTED == 0 {
                return dropped(DropReason::Integrity);
            }
            match crypto::aes_decrypt(&k2, p) {
                Some(m) => {
                    plain = m;
                    &plain[..]
                }
                None => return dropped(DropReason::Integrity),
            }
        } else {
            p
        };
        if seq == 0
            || seq.saturating_add(SEQ_WINDOW) <= s.in_seq
            || seq > s.in_seq.saturating_add(SEQ_WINDOW)
        {
            return dropped(DropReason::Sequence);
        }
        s.in_seq = s.in_seq.max(seq);
        s.last_seen = now;
        let rq = match message::parse_request(msg) {
            Ok(r) => r,
            Err(e) => return dropped(DropReason::Malformed(e)),
        };
        let (rsp, action) = self.command(&rq, Some(bmc_id), powered);
        // Close Session removes the session; its reply still goes out under its keys.
        let s = match self.sessions.get_mut(&bmc_id) {
            Some(s) => s,
            None => return dropped(DropReason::UnknownSession),
        };
        s.out_seq = s.out_seq.wrapping_add(1).max(1);
        let (out_seq, console_id) = (s.out_seq, s.console_id);
        let (body, mut pt) = if s.confidential {
            let iv = rand16(&mut self.rng);
            (
                crypto::aes_encrypt(&k2, iv, &rsp),
                payload::IPMI | payload::ENCRYPTED,
            )
        } else {
            (rsp, payload::IPMI)
        };
        let integrity = s.integrity;
        if rq.netfn == NETFN_APP && rq.cmd == 0x3c && closes(&rq, bmc_id) {
            self.sessions.remove(&bmc_id);
        }
        if !integrity {
            pt &= !payload::AUTHENTICATED;
        }
        Output {
            reply: Some(message::build_v20(
                pt,
                console_id,
                out_seq,
                &body,
                integrity.then_some(&k1[..]),
            )),
            action,
            dropped: None,
        }
    }

    /// Run one command. `session` is the BMC session ID, or `None` outside a session (then
    /// only discovery commands are allowed). Returns the response message and any action.
    fn command(
        &mut self,
        rq: &Request<'_>,
        session: Option<u32>,
        powered: bool,
    ) -> (Vec<u8>, Option<PowerAction>) {
        let privilege = session
            .and_then(|id| self.sessions.get(&id))
            .map_or(0, |s| s.privilege);
        let d = rq.data;
        let ok = |data: &[u8]| message::build_response(rq, CC_OK, data);
        let err = |cc: u8| message::build_response(rq, cc, &[]);
        let sessionless = matches!((rq.netfn, rq.cmd), (NETFN_APP, 0x38 | 0x54 | 0x01));
        if session.is_none() && !sessionless {
            return (err(CC_INSUFFICIENT_PRIV), None);
        }
        let rsp = match (rq.netfn, rq.cmd) {
            // Get Device ID.
            (NETFN_APP, 0x01) => ok(&[
                0x20, 0x81, 0x01, 0x00, 0x02, 0x80, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0,
            ]),
            // Get Channel Authentication Capabilities: IPMI v2.0 extended data, non-null user
            // names, RMCP+ supported.
            (NETFN_APP, 0x38) => {
                if d.len() < 2 {
                    err(CC_BAD_LENGTH)
                } else {
                    ok(&[0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0])
                }
            }
            // Get Channel Cipher Suites: 16-byte slices of the record list.
            (NETFN_APP, 0x54) => {
                if d.len() < 3 {
                    err(CC_BAD_LENGTH)
                } else {
                    let records: Vec<u8> = SUITES
                        .iter()
                        .flat_map(|&(id, a, i, c)| [0xc0, id, a, 0x40 | i, 0x80 | c])
                        .collect();
                    let start = ((d[2] & 0x3f) as usize * 16).min(records.len());
                    let end = (start + 16).min(records.len());
                    let mut r = vec![0x01];
                    r.extend_from_slice(&records[start..end]);
                    ok(&r)
                }
            }
            // Set Session Privilege Level.
            (NETFN_APP, 0x3b) => {
                let s = session.and_then(|id| self.sessions.get_mut(&id));
                match (d.first(), s) {
                    (Some(&0), Some(s)) => ok(&[s.privilege]),
                    (Some(&l), Some(s)) if (1..=s.max_priv).contains(&(l & 0x0f)) => {
                        s.privilege = l & 0x0f;
                        ok(&[s.privilege])
                    }
                    (Some(_), Some(_)) => err(CC_PRIV_NOT_AVAILABLE),
                    _ => err(CC_BAD_LENGTH),
                }
            }
            // Close Session.
            (NETFN_APP, 0x3c) => {
                if d.len() < 4 {
                    err(CC_BAD_LENGTH)
                } else {
                    let id = u32::from_le_bytes(d[..4].try_into().expect("4"));
                    if Some(id) == session
                        || (privilege >= PRIV_ADMIN && self.sessions.remove(&id).is_some())
                    {
                        ok(&[])
                    } else {
                        err(0x87)
                    }
                }
            }
            // Get Chassis Status: power state, last event, misc, front panel.
            (NETFN_CHASSIS, 0x01) => ok(&[u8::from(powered), 0, 0, 0]),
            // Chassis Control (operator privilege).
            (NETFN_CHASSIS, 0x02) => {
                if privilege < 3 {
                    err(CC_INSUFFICIENT_PRIV)
                } else {
                    match d.first().and_then(|&b| PowerAction::from_control(b)) {
                        Some(a) => return (ok(&[]), Some(a)),
                        None if d.is_empty() => err(CC_BAD_LENGTH),
                        None => err(CC_INVALID_FIELD),
                    }
                }
            }
            // Set System Boot Options.
            (NETFN_CHASSIS, 0x08) => {
                if privilege < 3 {
                    err(CC_INSUFFICIENT_PRIV)
                } else if d.is_empty() {
                    err(CC_BAD_LENGTH)
                } else {
                    let param = d[0] & 0x7f;
                    match param {
                        5 if d.len() < 6 => err(CC_BAD_LENGTH),
                        0..=7 => {
                            self.boot_params.insert(param, d[1..].to_vec());
                            ok(&[])
                        }
                        _ => err(CC_PARAM_UNSUPPORTED),
                    }
                }
            }
            // Get System Boot Options: parameter version 1, selector, data.
            (NETFN_CHASSIS, 0x09) => {
                if d.is_empty() {
                    err(CC_BAD_LENGTH)
                } else {
                    let param = d[0] & 0x7f;
                    let default: &[u8] = match param {
                        0 => &[0],
                        3 => &[0x1f],
                        4 => &[0, 0],
                        5 => &[0, 0, 0, 0, 0],
                        _ => &[],
                    };
                    if default.is_empty() {
                        err(CC_PARAM_UNSUPPORTED)
                    } else {
                        let mut r = vec![0x01, param];
                        r.extend_from_slice(self.boot_params.get(&param).map_or(default, |v| v));
                        ok(&r)
                    }
                }
            }
            _ => err(CC_INVALID_CMD),
        };
        (rsp, None)
    }
}

fn closes(rq: &Request<'_>, bmc_id: u32) -> bool {
    rq.data.len() >= 4 && u32::from_le_bytes(rq.data[..4].try_into().expect("4")) == bmc_id
}

fn reply(d: Vec<u8>) -> Output {
    Output {
        reply: Some(d),
        ..Output::default()
    }
}

fn dropped(why: DropReason) -> Output {
    Output {
        dropped: Some(why),
        ..Output::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE_ID: u32 = 0xa0a1_a2a3;

    fn core() -> BmcCore {
        BmcCore::new(
            BmcConfig {
                username: "admin".into(),
                password: "password".into(),
                guid: [0x42; 16],
            },
            7,
        )
    }

    fn v20_payload(d: &[u8]) -> (u8, u32, u32, Vec<u8>) {
        match message::parse(d).unwrap() {
            Frame::V20 {
                ptype,
                session_id,
                seq,
                payload,
                ..
            } => (ptype, session_id, seq, payload.to_vec()),
            f => panic!("not v2: {f:?}"),
        }
    }

    /// A minimal remote console, the way ipmitool does it.
    struct Console {
        bmc_id: u32,
        k1: [u8; 20],
        k2: [u8; 20],
        seq: u32,
        suite: (u8, u8, u8),
    }

    fn open(
        bmc: &mut BmcCore,
        suite: (u8, u8, u8),
        user: &str,
        password: &str,
    ) -> Result<Console, (u8, u8)> {
        let now = Instant::now();
        let mut req = vec![1, 0, 0, 0];
        req.extend_from_slice(&CONSOLE_ID.to_le_bytes());
        req.extend_from_slice(&[
            0, 0, 0, 8, suite.0, 0, 0, 0, 1, 0, 0, 8, suite.1, 0, 0, 0, 2, 0, 0, 8, suite.2, 0, 0,
            0,
        ]);
        let out = bmc.handle(
            &message::build_v20(payload::OPEN_REQ, 0, 0, &req, None),
            now,
            false,
        );
        let (pt, _, _, r) = v20_payload(&out.reply.unwrap());
        assert_eq!(pt, payload::OPEN_RSP);
        if r[1] != 0 {
            return Err((payload::OPEN_RSP, r[1]));
        }
        assert_eq!(r[2], PRIV_ADMIN);
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), CONSOLE_ID);
        let bmc_id = u32::from_le_bytes(r[8..12].try_into().unwrap());

        let rm = [0x11u8; 16];
        let role = 0x14;
        let mut r1 = vec![2, 0, 0, 0];
        r1.extend_from_slice(&bmc_id.to_le_bytes());
        r1.extend_from_slice(&rm);
        r1.extend_from_slice(&[role, 0, 0, user.len() as u8]);
        r1.extend_from_slice(user.as_bytes());
        let out = bmc.handle(
            &message::build_v20(payload::RAKP1, 0, 0, &r1, None),
            now,
            false,
        );
        let (pt, _, _, r2) = v20_payload(&out.reply.unwrap());
        assert_eq!(pt, payload::RAKP2);
        if r2[1] != 0 {
            return Err((payload::RAKP2, r2[1]));
        }
        let inputs = RakpInputs {
            console_sid: CONSOLE_ID,
            bmc_sid: bmc_id,
            console_rand: rm,
            bmc_rand: r2[8..24].try_into().unwrap(),
            bmc_guid: r2[24..40].try_into().unwrap(),
            role,
            username: user.as_bytes(),
        };
        let kuid = password.as_bytes();
        if suite.0 == 1 {
            // The console checks the BMC's RAKP 2 code; with a wrong password it would not match.
            let matches = r2[40..] == inputs.rakp2_auth_code(kuid);
            assert_eq!(matches, password == "password");
        }
        let mut r3 = vec![3, 0, 0, 0];
        r3.extend_from_slice(&bmc_id.to_le_bytes());
        if suite.0 == 1 {
            r3.extend_from_slice(&inputs.rakp3_auth_code(kuid));
        }
        let out = bmc.handle(
            &message::build_v20(payload::RAKP3, 0, 0, &r3, None),
            now,
            false,
        );
        let (pt, _, _, r4) = v20_payload(&out.reply.unwrap());
        assert_eq!(pt, payload::RAKP4);
        if r4[1] != 0 {
            return Err((payload::RAKP4, r4[1]));
        }
        let (k1, k2) = if suite.0 == 1 {
            let sik = inputs.sik(kuid);
            assert_eq!(r4[8..], inputs.rakp4_icv(&sik));
            (crypto::derive_k(&sik, 1), crypto::derive_k(&sik, 2))
        } else {
            ([0; 20], [0; 20])
        };
        Ok(Console {
            bmc_id,
            k1,
            k2,
            seq: 0,
            suite,
        })
    }

    impl Console {
        fn packet(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
            self.seq += 1;
            self.packet_seq(self.seq, netfn, cmd, data)
        }

        fn packet_seq(&self, seq: u32, netfn: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
            let msg = message::build_request(netfn, cmd, 1, data);
            let (body, pt) = if self.suite.2 == 1 {
                (
                    crypto::aes_encrypt(&self.k2, [5; 16], &msg),
                    payload::ENCRYPTED,
                )
            } else {
                (msg, 0)
            };
            let k1 = (self.suite.1 == 1).then_some(&self.k1[..]);
            message::build_v20(pt, self.bmc_id, seq, &body, k1)
        }

        /// Completion code and data of a reply, after checking its AuthCode.
        fn read(&self, d: &[u8]) -> (u8, Vec<u8>, u32) {
            let Frame::V20 {
                ptype,
                session_id,
                seq,
                payload,
                trailer,
                session_part,
            } = message::parse(d).unwrap()
            else {
                panic!()
            };
            assert_eq!(session_id, CONSOLE_ID);
            if self.suite.1 == 1 {
                assert_ne!(ptype & payload::AUTHENTICATED, 0);
                let signed = &session_part[..session_part.len() - 12];
                assert_eq!(
                    crypto::integrity_sha1_96(&self.k1, signed),
                    trailer[trailer.len() - 12..]
                );
            }
            let msg = if self.suite.2 == 1 {
                crypto::aes_decrypt(&self.k2, payload).unwrap()
            } else {
                payload.to_vec()
            };
            (msg[6], msg[7..msg.len() - 1].to_vec(), seq)
        }

        fn call(
            &mut self,
            bmc: &mut BmcCore,
            netfn: u8,
            cmd: u8,
            data: &[u8],
            powered: bool,
        ) -> (u8, Vec<u8>, Option<PowerAction>) {
            let p = self.packet(netfn, cmd, data);
            let out = bmc.handle(&p, Instant::now(), powered);
            let (cc, d, _) = self.read(&out.reply.expect("a reply"));
            (cc, d, out.action)
        }
    }

    #[test]
    fn suite3_session_runs_chassis_commands() {
        let mut bmc = core();
        let mut c = open(&mut bmc, (1, 1, 1), "admin", "password").unwrap();
        assert_eq!(c.call(&mut bmc, NETFN_APP, 0x3b, &[4], false).0, 0);
        let (cc, d, _) = c.call(&mut bmc, NETFN_CHASSIS, 0x01, &[], true);
        assert_eq!((cc, d[0] & 1), (0, 1));
        let (cc, _, a) = c.call(&mut bmc, NETFN_CHASSIS, 0x02, &[1], false);
        assert_eq!((cc, a), (0, Some(PowerAction::On)));
        for (b, want) in [
            (0, PowerAction::Off),
            (2, PowerAction::Cycle),
            (3, PowerAction::Reset),
            (5, PowerAction::Soft),
        ] {
            assert_eq!(
                c.call(&mut bmc, NETFN_CHASSIS, 0x02, &[b], true).2,
                Some(want)
            );
        }
        let (cc, _, a) = c.call(&mut bmc, NETFN_CHASSIS, 0x02, &[4], true);
        assert_eq!((cc, a), (CC_INVALID_FIELD, None));
        let id = c.bmc_id.to_le_bytes();
        assert_eq!(c.call(&mut bmc, NETFN_APP, 0x3c, &id, false).0, 0);
        assert_eq!(bmc.session_count(), 0);
        // The closed session is gone.
        let p = c.packet(NETFN_CHASSIS, 0x01, &[]);
        assert_eq!(
            bmc.handle(&p, Instant::now(), false).dropped,
            Some(DropReason::UnknownSession)
        );
    }

    #[test]
    fn suites_0_to_2_work_too() {
        for suite in [(0, 0, 0), (1, 0, 0), (1, 1, 0)] {
            let mut bmc = core();
            let mut c = open(&mut bmc, suite, "admin", "password").unwrap();
            let (cc, d, _) = c.call(&mut bmc, NETFN_CHASSIS, 0x01, &[], false);
            assert_eq!((cc, d[0]), (0, 0), "{suite:?}");
        }
        assert_eq!(
            open(&mut core(), (1, 2, 1), "admin", "password").err(),
            Some((payload::OPEN_RSP, ST_NO_CIPHER_SUITE))
        );
    }

    #[test]
    fn wrong_user_and_wrong_password_get_the_rakp_status_codes() {
        let mut bmc = core();
        assert_eq!(
            open(&mut bmc, (1, 1, 1), "root", "password").err(),
            Some((payload::RAKP2, ST_UNAUTHORIZED_NAME))
        );
        assert_eq!(
            open(&mut bmc, (1, 1, 1), "admin", "hunter2").err(),
            Some((payload::RAKP4, ST_INVALID_ICV))
        );
        assert_eq!(bmc.session_count(), 0, "failed logins leave no session");
    }

    #[test]
    fn sequence_numbers_window_and_reply_counter() {
        let mut bmc = core();
        let c = open(&mut bmc, (1, 1, 1), "admin", "password").unwrap();
        let now = Instant::now();
        let mut seqs = vec![];
        for seq in [1, 2, 2, 5] {
            // A retry (same number) and a gap are accepted.
            let out = bmc.handle(&c.packet_seq(seq, NETFN_CHASSIS, 0x01, &[]), now, false);
            seqs.push(c.read(&out.reply.unwrap()).2);
        }
        assert_eq!(seqs, [1, 2, 3, 4], "the BMC numbers its replies 1, 2, 3 …");
        for seq in [0, 5 + SEQ_WINDOW + 1] {
            let out = bmc.handle(&c.packet_seq(seq, NETFN_CHASSIS, 0x01, &[]), now, false);
            assert_eq!(out.dropped, Some(DropReason::Sequence), "seq {seq}");
        }
        let out = bmc.handle(&c.packet_seq(30, NETFN_CHASSIS, 0x01, &[]), now, false);
        assert!(out.reply.is_none());
        let out = bmc.handle(&c.packet_seq(21, NETFN_CHASSIS, 0x01, &[]), now, false);
        assert!(out.reply.is_some());
        // Now 1 is far behind.
        let out = bmc.handle(&c.packet_seq(1, NETFN_CHASSIS, 0x01, &[]), now, false);
        assert_eq!(out.dropped, Some(DropReason::Sequence));
    }

    #[test]
    fn tampered_packets_are_dropped() {
        let mut bmc = core();
        let mut c = open(&mut bmc, (1, 1, 1), "admin", "password").unwrap();
        let mut p = c.packet(NETFN_CHASSIS, 0x02, &[0]);
        p[20] ^= 1;
        let out = bmc.handle(&p, Instant::now(), true);
        assert_eq!(
            (out.dropped, out.action),
            (Some(DropReason::Integrity), None)
        );
        // Unauthenticated packets into an integrity-protected session are refused too.
        let msg = message::build_request(NETFN_CHASSIS, 0x02, 1, &[0]);
        let p = message::build_v20(0, c.bmc_id, 9, &msg, None);
        assert_eq!(
            bmc.handle(&p, Instant::now(), true).dropped,
            Some(DropReason::Integrity)
        );
        // Session-less, only discovery commands work.
        let p = message::build_v20(0, 0, 0, &msg, None);
        let out = bmc.handle(&p, Instant::now(), true);
        assert_eq!(
            (out.reply.unwrap()[16 + 6], out.action),
            (CC_INSUFFICIENT_PRIV, None)
        );
    }

    #[test]
    fn boot_options_decode_and_next_boot_is_used_once() {
        let mut bmc = core();
        let mut c = open(&mut bmc, (1, 1, 1), "admin", "password").unwrap();
        // What `ipmitool chassis bootdev pxe` sends.
        assert_eq!(
            c.call(&mut bmc, NETFN_CHASSIS, 0x08, &[0x00, 0x01], false)
                .0,
            0
        );
        assert_eq!(
            c.call(&mut bmc, NETFN_CHASSIS, 0x08, &[0x04, 0x01, 0x01], false)
                .0,
            0
        );
        assert_eq!(
            c.call(
                &mut bmc,
                NETFN_CHASSIS,
                0x08,
                &[0x05, 0x80, 0x04, 0, 0, 0],
                false
            )
            .0,
            0
        );
        assert_eq!(
            c.call(&mut bmc, NETFN_CHASSIS, 0x08, &[0x00, 0x00], false)
                .0,
            0
        );
        assert_eq!(
            bmc.boot_override(),
            Some(BootOverride {
                device: BootDevice::Pxe,
                persistent: false,
                efi: false
            })
        );
        let (cc, d, _) = c.call(&mut bmc, NETFN_CHASSIS, 0x09, &[0x05, 0, 0], false);
        assert_eq!((cc, d), (0, vec![0x01, 0x05, 0x80, 0x04, 0, 0, 0]));
        assert_eq!(bmc.take_boot_device(), Some(BootDevice::Pxe));
        assert_eq!(
            bmc.take_boot_device(),
            None,
            "next-boot override is used once"
        );
        // Persistent disk (`chassis bootdev disk options=persistent`).
        c.call(
            &mut bmc,
            NETFN_CHASSIS,
            0x08,
            &[0x05, 0xc0, 0x08, 0, 0, 0],
            false,
        );
        assert_eq!(bmc.take_boot_device(), Some(BootDevice::Disk));
        assert_eq!(bmc.take_boot_device(), Some(BootDevice::Disk));
        for (sel, dev) in [(0x14, BootDevice::Cdrom), (0x18, BootDevice::Bios)] {
            c.call(
                &mut bmc,
                NETFN_CHASSIS,
                0x08,
                &[0x05, 0x80, sel, 0, 0, 0],
                false,
            );
            assert_eq!(bmc.take_boot_device(), Some(dev));
        }
        assert_eq!(
            c.call(&mut bmc, NETFN_CHASSIS, 0x08, &[0x05, 0x80], false)
                .0,
            CC_BAD_LENGTH
        );
    }

    #[test]
    fn presession_discovery_commands() {
        let mut bmc = core();
        let now = Instant::now();
        // Get Channel Auth Capabilities over IPMI v1.5, as ipmitool sends it.
        let m = message::build_request(NETFN_APP, 0x38, 0, &[0x8e, 0x04]);
        let out = bmc.handle(&message::build_v15(&m), now, false);
        let Frame::V15 { msg, .. } = message::parse(out.reply.as_ref().unwrap()).unwrap() else {
            panic!()
        };
        assert_eq!(msg[6], 0);
        assert_eq!(msg[8] & 0x80, 0x80, "IPMI v2.0 extended data");
        assert_eq!(msg[10] & 0x02, 0x02, "RMCP+ supported");
        // Cipher suites, in 16-byte slices.
        let mut all = vec![];
        for i in 0.. {
            let m = message::build_request(NETFN_APP, 0x54, 0, &[0x0e, 0x00, 0x80 | i]);
            let out = bmc.handle(&message::build_v20(0, 0, 0, &m, None), now, false);
            let (_, _, _, p) = v20_payload(&out.reply.unwrap());
            let data = &p[8..p.len() - 1];
            all.extend_from_slice(data);
            if data.len() < 16 {
                break;
            }
        }
        assert_eq!(all[15..20], [0xc0, 3, 0x01, 0x41, 0x81]);
        // A presence ping gets a pong.
        let ping = [0x06, 0, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 9, 0, 0];
        let pong = bmc.handle(&ping, now, false).reply.unwrap();
        assert_eq!((pong[8], pong[9]), (0x40, 9));
        assert!(bmc.handle(&[1, 2, 3], now, false).dropped.is_some());
    }

    #[test]
    fn idle_sessions_expire() {
        let mut bmc = core();
        let mut c = open(&mut bmc, (1, 1, 1), "admin", "password").unwrap();
        let p = c.packet(NETFN_CHASSIS, 0x01, &[]);
        let later = Instant::now() + SESSION_TIMEOUT + Duration::from_secs(1);
        assert_eq!(
            bmc.handle(&p, later, false).dropped,
            Some(DropReason::UnknownSession)
        );
    }
}
