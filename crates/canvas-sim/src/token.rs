//! Token values, their hints and how the simulator stores them (only a keyed hash, like Canvas).

use hmac::{Hmac, Mac};
use rand::RngExt;
use sha2::Sha256;

/// Canvas token values are 64 characters long.
pub const TOKEN_LENGTH: usize = 64;
/// The hint is the first 5 characters of the value.
pub const HINT_LENGTH: usize = 5;

/// The alphabet of generated values: digits and letters without look-alikes
/// (`canvas-api.md` §2).
const ALPHABET: &[u8] = b"2346789acefhkmnrtuvwxyzABCDEFGHJKLMNPQRTUVWXYZ";

/// A fresh random token value, as Canvas makes one.
pub fn generate_token_value() -> String {
    let mut rng = rand::rng();
    (0..TOKEN_LENGTH)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A fresh random key for hashing token values and for sessions.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// The value without a hosted instance's shard prefix (`12345~`).
fn unprefixed(value: &str) -> &str {
    match value.split_once('~') {
        Some((shard, rest)) if !shard.is_empty() && shard.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        _ => value,
    }
}

/// The 5-character hint Canvas shows and accepts in place of an id.
pub(crate) fn hint_of(value: &str) -> String {
    unprefixed(value).chars().take(HINT_LENGTH).collect()
}

/// The keyed hash under which a value is stored; the clear value is never kept.
pub(crate) fn hash_value(key: &str, value: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(value.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a seed-supplied value looks like a Canvas token: an optional `digits~` shard prefix,
/// then at least 16 ASCII letters or digits.
pub(crate) fn plausible_value(value: &str) -> bool {
    let body = unprefixed(value);
    body.len() >= 16 && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_canvas_shape() {
        let v = generate_token_value();
        assert_eq!(v.len(), TOKEN_LENGTH);
        assert!(v.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(v, generate_token_value());
        assert!(plausible_value(&v));
    }

    #[test]
    fn hints_ignore_the_shard_prefix() {
        assert_eq!(hint_of("abcdefghij"), "abcde");
        assert_eq!(hint_of("12345~abcdefghij"), "abcde");
        assert_eq!(hint_of("x~abcdefg"), "x~abc");
    }

    #[test]
    fn hashes_depend_on_key_and_value() {
        assert_eq!(hash_value("k", "v"), hash_value("k", "v"));
        assert_ne!(hash_value("k", "v"), hash_value("k2", "v"));
        assert_ne!(hash_value("k", "v"), hash_value("k", "w"));
        assert_eq!(hash_value("k", "v").len(), 64);
    }
}
