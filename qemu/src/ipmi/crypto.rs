//! RMCP+ key material and payload protection for cipher suites 0–3: RAKP-HMAC-SHA1
//! authentication, HMAC-SHA1-96 integrity and AES-CBC-128 confidentiality (IPMI v2.0 §13.28–13.31).
//!
//! Every function is a pure formula from the spec; the session state machine in `super::bmc`
//! decides when to call them.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Length of an HMAC-SHA1 output.
pub const SHA1_LEN: usize = 20;
/// Length of an HMAC-SHA1-96 integrity check value.
pub const SHA1_96_LEN: usize = 12;
/// AES block (and IV) length.
pub const AES_BLOCK: usize = 16;

/// HMAC-SHA1 of the concatenation of `parts` under `key`.
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; SHA1_LEN] {
    // HMAC zero-pads keys shorter than the block, so a password and the same password padded
    // to 20 bytes (what ipmitool uses) give the same MAC.
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// What both RAKP messages and the SIK are computed over: who asked for which role, by name.
#[derive(Debug, Clone)]
pub struct RakpInputs<'a> {
    /// Remote console session ID (SIDm).
    pub console_sid: u32,
    /// Managed system (BMC) session ID (SIDc).
    pub bmc_sid: u32,
    /// Remote console random number (Rm).
    pub console_rand: [u8; 16],
    /// Managed system random number (Rc).
    pub bmc_rand: [u8; 16],
    /// Managed system GUID (GUIDc).
    pub bmc_guid: [u8; 16],
    /// The whole requested-role byte from RAKP 1 (ROLEm), name-only-lookup bit included.
    pub role: u8,
    /// User name (UNAMEm); ULENGTHm is its length.
    pub username: &'a [u8],
}

impl RakpInputs<'_> {
    /// RAKP 2 key exchange auth code:
    /// HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp2_auth_code(&self, kuid: &[u8]) -> [u8; SHA1_LEN] {
        hmac_sha1(
            kuid,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// RAKP 3 key exchange auth code: HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_auth_code(&self, kuid: &[u8]) -> [u8; SHA1_LEN] {
        hmac_sha1(
            kuid,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// Session integrity key: HMAC_Kg(Rm, Rc, ROLEm, ULENGTHm, UNAMEm). Kg is the user's
    /// password when no BMC key is set (as here).
    pub fn sik(&self, kg: &[u8]) -> [u8; SHA1_LEN] {
        hmac_sha1(
            kg,
            &[
                &self.console_rand,
                &self.bmc_rand,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// RAKP 4 integrity check value: HMAC_SIK(Rm, SIDc, GUIDc), truncated to 96 bits.
    pub fn rakp4_icv(&self, sik: &[u8]) -> [u8; SHA1_96_LEN] {
        let full = hmac_sha1(
            sik,
            &[
                &self.console_rand,
                &self.bmc_sid.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        full[..SHA1_96_LEN].try_into().expect("12 of 20 bytes")
    }
}

/// Additional key material: K1 = HMAC_SIK(0x01 × 20) keys integrity, K2 = HMAC_SIK(0x02 × 20)
/// keys confidentiality (its first 16 bytes are the AES-128 key).
pub fn derive_k(sik: &[u8], n: u8) -> [u8; SHA1_LEN] {
    hmac_sha1(sik, &[&[n; SHA1_LEN]])
}

/// HMAC-SHA1-96 over `data` with K1.
pub fn integrity_sha1_96(k1: &[u8], data: &[u8]) -> [u8; SHA1_96_LEN] {
    hmac_sha1(k1, &[data])[..SHA1_96_LEN]
        .try_into()
        .expect("12 of 20 bytes")
}

/// Encrypt an IPMI payload for AES-CBC-128 (§13.29): IV, then the cipher text of
/// payload ‖ pad bytes 1, 2, 3 … ‖ pad length, padded to whole blocks.
pub fn aes_encrypt(k2: &[u8], iv: [u8; AES_BLOCK], payload: &[u8]) -> Vec<u8> {
    let pad = (AES_BLOCK - (payload.len() + 1) % AES_BLOCK) % AES_BLOCK;
    let mut buf = Vec::with_capacity(payload.len() + pad + 1);
    buf.extend_from_slice(payload);
    buf.extend((1..=pad as u8).collect::<Vec<_>>());
    buf.push(pad as u8);
    let len = buf.len();
    let enc = Aes128CbcEnc::new(k2[..AES_BLOCK].into(), &iv.into());
    enc.encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("whole blocks");
    let mut out = Vec::with_capacity(AES_BLOCK + len);
    out.extend_from_slice(&iv);
    out.extend_from_slice(&buf);
    out
}

/// Decrypt what [`aes_encrypt`] produced; `None` when it is not whole blocks or its padding is
/// inconsistent (a wrong key shows up here).
pub fn aes_decrypt(k2: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 2 * AES_BLOCK || !data.len().is_multiple_of(AES_BLOCK) {
        return None;
    }
    let (iv, body) = data.split_at(AES_BLOCK);
    let mut buf = body.to_vec();
    let dec = Aes128CbcDec::new(k2[..AES_BLOCK].into(), iv.into());
    dec.decrypt_padded_mut::<NoPadding>(&mut buf).ok()?;
    let pad = *buf.last()? as usize;
    if pad >= AES_BLOCK || pad + 1 > buf.len() {
        return None;
    }
    let end = buf.len() - pad - 1;
    if buf[end..end + pad]
        .iter()
        .enumerate()
        .any(|(i, &b)| b as usize != i + 1)
    {
        return None;
    }
    buf.truncate(end);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn inputs() -> RakpInputs<'static> {
        RakpInputs {
            console_sid: 0xa0a1_a2a3,
            bmc_sid: 0x0200_0001,
            console_rand: core::array::from_fn(|i| i as u8),
            bmc_rand: core::array::from_fn(|i| 16 + i as u8),
            bmc_guid: core::array::from_fn(|i| 0x40 + i as u8),
            role: 0x14,
            username: b"admin",
        }
    }

    // Expected values computed independently (Python's hmac/hashlib) from the spec formulas.
    #[test]
    fn rakp_codes_match_spec_formulas() {
        let i = inputs();
        let kuid = b"password";
        assert_eq!(
            i.rakp2_auth_code(kuid).to_vec(),
            h("8aed08c9c6744fff2601a0c9187c80414f516862")
        );
        assert_eq!(
            i.rakp3_auth_code(kuid).to_vec(),
            h("7fc6db6b1f57b356a4a457a8df87c8d2d6aecdd9")
        );
        let sik = i.sik(kuid);
        assert_eq!(sik.to_vec(), h("122c77c4b11ccd93251cbae6c34a9cb6310da154"));
        assert_eq!(i.rakp4_icv(&sik).to_vec(), h("546555b5c361f4229a44ce5e"));
        assert_eq!(
            derive_k(&sik, 1).to_vec(),
            h("e4472be78f9a81fa68297aab696a7be8c97fc9f8")
        );
        assert_eq!(
            derive_k(&sik, 2).to_vec(),
            h("2b6552012a2517cb3b5713901d757a6efc7d8301")
        );
        // A password padded to 20 bytes (ipmitool's key buffer) is the same key.
        let mut padded = [0u8; 20];
        padded[..8].copy_from_slice(kuid);
        assert_eq!(i.rakp2_auth_code(&padded), i.rakp2_auth_code(kuid));
        assert_ne!(i.rakp2_auth_code(b"wrong"), i.rakp2_auth_code(kuid));
    }

    #[test]
    fn aes_matches_openssl_and_round_trips() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let iv: [u8; 16] = core::array::from_fn(|i| 0x10 + i as u8);
        let payload: Vec<u8> = (1..=10).collect();
        let enc = aes_encrypt(&key, iv, &payload);
        // `openssl enc -aes-128-cbc -nopad` of payload ‖ 01..05 ‖ 05.
        assert_eq!(enc[..16], iv);
        assert_eq!(enc[16..].to_vec(), h("1c118a4d537aa992a31e2aa1f4070c8c"));
        assert_eq!(aes_decrypt(&key, &enc).unwrap(), payload);
        for len in [0, 1, 15, 16, 17, 40] {
            let p: Vec<u8> = (0..len as u8).collect();
            let e = aes_encrypt(&key, iv, &p);
            assert_eq!(e.len() % 16, 0);
            assert_eq!(aes_decrypt(&key, &e).unwrap(), p, "len {len}");
        }
        let mut other = key;
        other[0] ^= 1;
        // A wrong key almost always yields inconsistent padding; this vector does.
        assert_eq!(aes_decrypt(&other, &enc), None);
        assert_eq!(aes_decrypt(&key, &enc[..20]), None);
    }
}
