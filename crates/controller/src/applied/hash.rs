//! The applied-hash annotation's value. It decides whether a child is rewritten, so it must not
//! depend on the compiler or the release: SHA-256 over a canonical JSON form (object keys
//! sorted, no whitespace), written `sha256:<64 hex digits>`.
//!
//! v0.1.0 wrote the standard library's `DefaultHasher` (SipHash-1-3 with zero keys, today) of
//! the object's serde_json bytes, as 16 hex digits. That algorithm is frozen here in
//! [`legacy`], so a child an older release applied is still recognised whatever compiler built
//! this one: an operator upgrade then leaves converged children alone instead of rewriting
//! every one of them (and making ESO refetch every secret).

use kube::api::DynamicObject;
use serde_json::Value;

use crate::error::Error;

/// Marks the current algorithm, so a later change of it is told apart as easily as this one.
pub const PREFIX: &str = "sha256:";

fn serialize(source: serde_json::Error) -> Error {
    Error::Serialize {
        what: "child",
        source,
    }
}

/// The hash of `obj` (which must not carry the annotation yet).
pub fn current(obj: &DynamicObject) -> Result<String, Error> {
    let value = serde_json::to_value(obj).map_err(serialize)?;
    let mut bytes = Vec::with_capacity(1024);
    canonical(&value, &mut bytes)?;
    Ok(sha256_hex(PREFIX, &bytes))
}

/// `prefix` followed by the SHA-256 of `bytes` in 64 lowercase hex digits.
pub(crate) fn sha256_hex(prefix: &str, bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// JSON with every object's keys in byte order, whatever map type serde_json was built with
/// (its `preserve_order` feature, enabled by any crate in the build, keeps insertion order).
fn canonical(v: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).map_err(serialize)?;
                out.push(b':');
                canonical(&map[k], out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(serialize)?,
    }
    Ok(())
}

/// Whether an annotation value is in v0.1.0's format (16 lowercase hex digits).
pub fn is_legacy(value: &str) -> bool {
    value.len() == 16
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hash v0.1.0 wrote for `obj` (which must not carry the annotation): `DefaultHasher` fed
/// the serde_json bytes as `Vec<u8>::hash` does (length as a 64-bit little-endian prefix, as on
/// every target that release was built for, then the bytes).
pub fn legacy(obj: &DynamicObject) -> Result<String, Error> {
    let bytes = serde_json::to_vec(obj).map_err(serialize)?;
    let mut input = Vec::with_capacity(8 + bytes.len());
    input.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    input.extend_from_slice(&bytes);
    Ok(format!("{:016x}", siphash13(&input)))
}

/// SipHash-1-3 with both keys zero (what `DefaultHasher::new()` is as of Rust 1.95), from the
/// SipHash paper: one compression round per 8-byte word, three finalisation rounds.
fn siphash13(data: &[u8]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575_u64,
        0x646f_7261_6e64_6f6d,
        0x6c79_6765_6e65_7261,
        0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        round(v);
        v[0] ^= m;
    };
    let mut words = data.chunks_exact(8);
    for w in words.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        compress(&mut v, u64::from_le_bytes(b));
    }
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    // The message length's low byte fills the last word's top byte.
    last[7] = data.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
#[path = "hash_tests.rs"]
mod tests;
