//! The HTTP `Range` header parser (netboot::http::range): any header value, any body length.
//! Input: eight bytes of body length (big-endian; shorter inputs use what is there), then the
//! header value. A partial answer must lie inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netboot::http::range::{parse, ByteRange};

fuzz_target!(|data: &[u8]| {
    let (len, header) = data.split_at(data.len().min(8));
    let mut b = [0u8; 8];
    b[8 - len.len()..].copy_from_slice(len);
    let len = u64::from_be_bytes(b);
    let header = seed_fuzz::text(header);
    for body_len in [len, len % 4096] {
        if let ByteRange::Partial { start, end } = parse(Some(&*header), body_len) {
            assert!(
                start <= end && end < body_len,
                "{header:?} on {body_len}: {start}-{end}"
            );
        }
    }
});
