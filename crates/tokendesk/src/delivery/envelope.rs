//! The sealed envelope: how a token value travels from Canvas to its owner without the server
//! keeping anything that can open it (see DESIGN.md, "Delivery: the sealed envelope").
//!
//! - Each envelope gets a fresh random 256-bit [`EnvelopeKey`] and a fresh random 96-bit nonce.
//! - The token value (UTF-8) is encrypted with AES-256-GCM; the associated data is the UTF-8 bytes
//!   of the [`EnvelopeId`], so a ciphertext moved to another envelope row cannot be opened.
//! - The stored ciphertext has the 16-byte GCM tag appended — exactly what the browser's
//!   `crypto.subtle.decrypt({name: "AES-GCM", iv: nonce, additionalData: idBytes}, key, ciphertext)`
//!   expects (a known-answer test below was produced with WebCrypto in node).
//! - The key exists only in the link's fragment, base64url without padding (43 characters):
//!   `https://HOST/e/ENVELOPE_ID#KEY` (see [`delivery_link`]).
//!
//! Separately, [`AtRestKey`] with [`seal_at_rest`] / [`open_at_rest`] keeps a pending delivery
//! email (which contains the link, hence the key) encrypted in the database until it is sent.
//!
//! Nothing in this module prints key bytes or plaintext: `Debug` of keys is redacted and
//! [`EnvelopeError`] messages never contain secret material.
//!
//! Limitation: the AES key schedule inside `aes-gcm` is not zeroized on drop unless that crate's
//! `zeroize` feature is enabled; our own copies of keys and intermediate plaintext are.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rand::RngExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Number of random bytes in an [`EnvelopeId`].
const ID_BYTES: usize = 16;
/// Length of an [`EnvelopeId`] in characters (16 bytes, base64url, no padding).
pub const ID_LEN: usize = 22;
/// Length of the link fragment in characters (32 bytes, base64url, no padding).
pub const FRAGMENT_LEN: usize = 43;

/// What can go wrong with envelopes. Messages never contain key bytes or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// An envelope id did not have the expected shape.
    #[error(
        "invalid envelope id: expected {ID_LEN} characters of base64url (A-Z, a-z, 0-9, '-', '_'), got {0}"
    )]
    InvalidId(String),
    /// The key from a link fragment was malformed.
    #[error("invalid envelope key: {0}")]
    InvalidKey(&'static str),
    /// The server's at-rest key from configuration was malformed.
    #[error("invalid at-rest key: {0}")]
    InvalidAtRestKey(&'static str),
    /// Decryption failed: wrong key, wrong envelope id, or the ciphertext was altered.
    #[error("the envelope could not be opened: wrong key, wrong envelope, or altered ciphertext")]
    Open,
    /// Decryption succeeded but the value was not UTF-8 (should never happen for our envelopes).
    #[error("the envelope opened but its content is not valid UTF-8")]
    NotUtf8,
    /// A stored at-rest blob was too short to contain a nonce and a tag.
    #[error("the encrypted data is truncated")]
    Truncated,
    /// Encryption failed (only possible for absurdly large inputs).
    #[error("encryption failed")]
    Seal,
}

// ---------------------------------------------------------------------------------------------
// EnvelopeId
// ---------------------------------------------------------------------------------------------

/// The public identifier of an envelope: 16 random bytes, base64url without padding
/// (22 characters). It appears in the link path and is the AES-GCM associated data.
///
/// Serde (de)serializes it as a string, validating the shape on the way in.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvelopeId(String);

impl EnvelopeId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let bytes: [u8; ID_BYTES] = rand::rng().random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Checks the shape: exactly 22 characters of the base64url alphabet.
    ///
    /// This is a shape check only (it does not insist on canonical trailing bits); an id that
    /// passes may still not exist.
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        if s.len() == ID_LEN && s.bytes().all(is_base64url_byte) {
            Ok(Self(s.to_owned()))
        } else {
            // Ids are not secret, but input can be anything: describe, don't echo.
            Err(EnvelopeError::InvalidId(describe_bad_input(s)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({})", self.0)
    }
}

impl FromStr for EnvelopeId {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EnvelopeId {
    type Error = EnvelopeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EnvelopeId> for String {
    fn from(id: EnvelopeId) -> Self {
        id.0
    }
}

fn is_base64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn describe_bad_input(s: &str) -> String {
    let chars = s.chars().count();
    if chars != ID_LEN {
        format!("{chars} characters")
    } else {
        "a character outside that alphabet".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// EnvelopeKey
// ---------------------------------------------------------------------------------------------

/// A per-envelope 256-bit AES key. Zeroized on drop; `Debug` prints `EnvelopeKey(REDACTED)`.
/// Deliberately not `Clone` and not serializable: it leaves the process only inside the link.
pub struct EnvelopeKey(Zeroizing<[u8; KEY_LEN]>);

impl EnvelopeKey {
    /// A fresh random key from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill(&mut key[..]);
        Self(key)
    }

    /// The key as it appears in the link fragment: base64url without padding, 43 characters.
    pub fn to_fragment(&self) -> SecretString {
        SecretString::from(URL_SAFE_NO_PAD.encode(&self.0[..]))
    }

    /// Parses a link fragment produced by [`EnvelopeKey::to_fragment`]. A single leading `#` is
    /// tolerated. Error messages never echo the input.
    pub fn from_fragment(fragment: &str) -> Result<Self, EnvelopeError> {
        let fragment = fragment.strip_prefix('#').unwrap_or(fragment);
        if fragment.len() != FRAGMENT_LEN {
            return Err(EnvelopeError::InvalidKey(
                "expected 43 characters of base64url without padding (the part of the link after '#')",
            ));
        }
        if !fragment.bytes().all(is_base64url_byte) {
            return Err(EnvelopeError::InvalidKey(
                "contains characters outside base64url (A-Z, a-z, 0-9, '-', '_')",
            ));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(fragment).map_err(|_| {
            EnvelopeError::InvalidKey("not canonical base64url (was the link altered?)")
        })?);
        if decoded.len() != KEY_LEN {
            return Err(EnvelopeError::InvalidKey("does not decode to 32 bytes"));
        }
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }

    /// For tests and known-answer vectors.
    #[cfg(test)]
    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> Result<Aes256Gcm, EnvelopeError> {
        Aes256Gcm::new_from_slice(&self.0[..])
            .map_err(|_| EnvelopeError::InvalidKey("not 32 bytes"))
    }
}

impl fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvelopeKey(REDACTED)")
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed
// ---------------------------------------------------------------------------------------------

/// A sealed envelope's stored parts: the nonce and the ciphertext with the GCM tag appended.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The 96-bit nonce (`iv` for WebCrypto).
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte authentication tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// The nonce, base64url without padding, as the API returns it.
    pub fn nonce_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.nonce)
    }

    /// The ciphertext (with tag), base64url without padding, as the API returns it.
    pub fn ciphertext_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.ciphertext)
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("nonce", &self.nonce_b64())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals a token value into an envelope with a fresh random nonce.
pub fn seal(
    id: &EnvelopeId,
    key: &EnvelopeKey,
    value: &SecretString,
) -> Result<Sealed, EnvelopeError> {
    let nonce: [u8; NONCE_LEN] = rand::rng().random();
    seal_with_nonce(id, key, value, nonce)
}

/// [`seal`] with a caller-chosen nonce. Internal: reusing a nonce with the same key breaks
/// AES-GCM, so only [`seal`] (random nonce) and known-answer tests call this.
fn seal_with_nonce(
    id: &EnvelopeId,
    key: &EnvelopeKey,
    value: &SecretString,
    nonce: [u8; NONCE_LEN],
) -> Result<Sealed, EnvelopeError> {
    let ciphertext = key
        .cipher()?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.expose_secret().as_bytes(),
                aad: id.as_str().as_bytes(),
            },
        )
        .map_err(|_| EnvelopeError::Seal)?;
    Ok(Sealed { nonce, ciphertext })
}

/// Opens an envelope. Fails with [`EnvelopeError::Open`] for a wrong key, a wrong id or any
/// change to nonce or ciphertext.
pub fn open(
    id: &EnvelopeId,
    key: &EnvelopeKey,
    sealed: &Sealed,
) -> Result<SecretString, EnvelopeError> {
    let plaintext = Zeroizing::new(
        key.cipher()?
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: id.as_str().as_bytes(),
                },
            )
            .map_err(|_| EnvelopeError::Open)?,
    );
    // Copy into an exact-size allocation (so `SecretString` never reallocates and leaves a
    // stray copy behind); the decrypted buffer is zeroized when `plaintext` drops.
    let text = std::str::from_utf8(&plaintext).map_err(|_| EnvelopeError::NotUtf8)?;
    Ok(SecretString::from(text.to_owned()))
}

/// The delivery link `{public_url}/e/{id}#{key}`.
///
/// `public_url` may have a trailing slash or a path prefix (`https://host/tokendesk/`); any
/// query or fragment on it is dropped. The result contains the key, hence a [`SecretString`].
pub fn delivery_link(public_url: &url::Url, id: &EnvelopeId, key: &EnvelopeKey) -> SecretString {
    let mut base = public_url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let base = base.as_str().trim_end_matches('/');
    let fragment = key.to_fragment();
    SecretString::from(format!("{base}/e/{id}#{}", fragment.expose_secret()))
}

// ---------------------------------------------------------------------------------------------
// At-rest encryption of pending emails
// ---------------------------------------------------------------------------------------------

/// The server's 32-byte at-rest key, from configuration. Used only to keep a pending delivery
/// email encrypted in the database until it has been handed to SMTP.
///
/// Accepted encodings (surrounding whitespace ignored): 64 hex digits, or base64 with the
/// standard or URL-safe alphabet, padded or not. Zeroized on drop; `Debug` is redacted.
/// Generate one with e.g. `openssl rand -base64 32`.
#[derive(Clone)]
pub struct AtRestKey(Zeroizing<[u8; KEY_LEN]>);

const B64_STD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl AtRestKey {
    /// Parses a configured key (hex or base64, see the type docs). Errors never echo the input.
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EnvelopeError::InvalidAtRestKey("empty"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if s.len() == 2 * KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (out, pair) in key.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
                *out = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
            }
            return Ok(Self(key));
        }
        let decoded = Zeroizing::new(
            B64_STD_ANY_PAD
                .decode(s)
                .or_else(|_| B64_URL_ANY_PAD.decode(s))
                .map_err(|_| {
                    EnvelopeError::InvalidAtRestKey(
                        "expected 32 bytes as 64 hex digits or as base64 (standard or URL-safe)",
                    )
                })?,
        );
        if decoded.len() != KEY_LEN {
            return Err(EnvelopeError::InvalidAtRestKey(
                "must be exactly 32 bytes (64 hex digits, or 43/44 base64 characters)",
            ));
        }
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }

    /// A fresh random key (for `demo` mode and tests).
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill(&mut key[..]);
        Self(key)
    }

    /// A keyed fingerprint of a token value (HMAC-SHA256 under this key, hex): what lets a
    /// pasted value be matched to the token it is without storing the value
    /// (`security.fingerprint_key`).
    pub fn fingerprint(&self, value: &str) -> String {
        use hmac::Mac as _;
        let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.0[..])
        else {
            return String::new();
        };
        mac.update(b"tokendesk-fingerprint-v1\0");
        mac.update(value.as_bytes());
        crate::domain::hex(&mac.finalize().into_bytes())
    }

    fn cipher(&self) -> Result<Aes256Gcm, EnvelopeError> {
        Aes256Gcm::new_from_slice(&self.0[..])
            .map_err(|_| EnvelopeError::InvalidAtRestKey("not 32 bytes"))
    }
}

impl FromStr for AtRestKey {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AtRestKey(REDACTED)")
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0, // unreachable: checked by is_ascii_hexdigit
    }
}

/// Encrypts `plaintext` under the at-rest key with a fresh random nonce; returns
/// `nonce (12 bytes) || ciphertext || tag (16 bytes)`. `aad` should bind the blob to its row
/// (e.g. `b"outbox:42"`), so a blob copied to another row does not open.
///
/// Returns a `Result` (rather than a bare `Vec`) because AES-GCM refuses inputs beyond 64 GiB;
/// the error cannot happen for an email.
pub fn seal_at_rest(
    key: &AtRestKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let nonce: [u8; NONCE_LEN] = rand::rng().random();
    let ciphertext = key
        .cipher()?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| EnvelopeError::Seal)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a blob from [`seal_at_rest`] with the same key and `aad`.
pub fn open_at_rest(
    key: &AtRestKey,
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Truncated);
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    let mut plaintext = key
        .cipher()?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| EnvelopeError::Open)?;
    // Exact-size copy so the returned buffer never reallocates; wipe the original.
    let out = Zeroizing::new(plaintext.as_slice().to_vec());
    plaintext.zeroize();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    const TOKEN: &str = "7~AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

    #[test]
    fn round_trip() {
        let id = EnvelopeId::generate();
        let key = EnvelopeKey::generate();
        let sealed = seal(&id, &key, &secret(TOKEN)).unwrap();
        assert_eq!(sealed.ciphertext.len(), TOKEN.len() + TAG_LEN);
        assert!(
            !sealed
                .ciphertext
                .windows(8)
                .any(|w| TOKEN.as_bytes().windows(8).any(|t| t == w)),
            "plaintext must not appear in the ciphertext"
        );
        let opened = open(&id, &key, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), TOKEN);
    }

    #[test]
    fn fresh_nonce_and_key_each_time() {
        let id = EnvelopeId::generate();
        let key = EnvelopeKey::generate();
        let a = seal(&id, &key, &secret(TOKEN)).unwrap();
        let b = seal(&id, &key, &secret(TOKEN)).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(
            EnvelopeKey::generate().to_fragment().expose_secret(),
            EnvelopeKey::generate().to_fragment().expose_secret()
        );
        assert_ne!(EnvelopeId::generate(), EnvelopeId::generate());
    }

    #[test]
    fn wrong_id_fails() {
        let id = EnvelopeId::generate();
        let other = EnvelopeId::generate();
        let key = EnvelopeKey::generate();
        let sealed = seal(&id, &key, &secret(TOKEN)).unwrap();
        assert!(matches!(
            open(&other, &key, &sealed),
            Err(EnvelopeError::Open)
        ));
    }

    #[test]
    fn tampered_ciphertext_or_nonce_fails() {
        let id = EnvelopeId::generate();
        let key = EnvelopeKey::generate();
        let sealed = seal(&id, &key, &secret(TOKEN)).unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(
                matches!(open(&id, &key, &t), Err(EnvelopeError::Open)),
                "byte {i}"
            );
        }
        let mut t = sealed.clone();
        t.nonce[0] ^= 0x80;
        assert!(open(&id, &key, &t).is_err());
        let mut t = sealed.clone();
        t.ciphertext.truncate(TAG_LEN - 1);
        assert!(open(&id, &key, &t).is_err());
    }

    #[test]
    fn wrong_key_fails() {
        let id = EnvelopeId::generate();
        let sealed = seal(&id, &EnvelopeKey::generate(), &secret(TOKEN)).unwrap();
        let err = open(&id, &EnvelopeKey::generate(), &sealed).unwrap_err();
        assert!(matches!(err, EnvelopeError::Open));
        assert!(!err.to_string().contains(TOKEN));
    }

    #[test]
    fn fragment_shape_and_round_trip() {
        for _ in 0..50 {
            let key = EnvelopeKey::generate();
            let frag = key.to_fragment();
            let f = frag.expose_secret();
            assert_eq!(f.len(), FRAGMENT_LEN);
            assert!(f.bytes().all(is_base64url_byte), "{f}");
            assert!(!f.contains('='));
            let back = EnvelopeKey::from_fragment(f).unwrap();
            assert_eq!(*back.0, *key.0);
            let with_hash = EnvelopeKey::from_fragment(&format!("#{f}")).unwrap();
            assert_eq!(*with_hash.0, *key.0);
        }
    }

    #[test]
    fn fragment_rejects_bad_input_without_echoing_it() {
        let good = EnvelopeKey::generate()
            .to_fragment()
            .expose_secret()
            .to_owned();
        let cases = [
            String::new(),
            good[..42].to_owned(),
            format!("{good}A"),
            format!("{good}="),
            format!("{}+", &good[..42]),
            format!("{}/", &good[..42]),
            format!("{}é", &good[..41]),
            // 43 chars whose last one carries non-zero trailing bits: not canonical.
            format!("{}B", &good[..42]),
        ];
        for bad in &cases[..7] {
            let err = EnvelopeKey::from_fragment(bad).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, EnvelopeError::InvalidKey(_)), "{bad:?}");
            if !bad.is_empty() {
                assert!(!msg.contains(bad.as_str()), "{msg}");
            }
        }
        // The last character of a 32-byte base64url string encodes 4 bits + 2 zero bits;
        // 'B' (000001) sets a trailing bit, so it must be rejected as non-canonical.
        let err = EnvelopeKey::from_fragment(&cases[7]).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
    }

    #[test]
    fn envelope_id_shape() {
        let id = EnvelopeId::generate();
        assert_eq!(id.as_str().len(), ID_LEN);
        assert!(id.as_str().bytes().all(is_base64url_byte));
        assert_eq!(EnvelopeId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.to_string(), id.as_str());
        assert!(EnvelopeId::parse("").is_err());
        assert!(EnvelopeId::parse("AAECAwQFBgcICQoLDA0OD").is_err());
        assert!(EnvelopeId::parse("AAECAwQFBgcICQoLDA0ODwA").is_err());
        assert!(EnvelopeId::parse("AAECAwQFBgcICQoLDA0OD/").is_err());
        assert!(EnvelopeId::parse("AAECAwQFBgcICQoLDA0OD=").is_err());
        assert!(EnvelopeId::parse("AAECAwQFBgcICQoLDA0O\u{e9}").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<EnvelopeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EnvelopeId>("\"nope\"").is_err());
    }

    #[test]
    fn link_shape_for_various_public_urls() {
        let id = EnvelopeId::parse("AAECAwQFBgcICQoLDA0ODw").unwrap();
        let key = EnvelopeKey::from_bytes(std::array::from_fn(|i| i as u8));
        let frag = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let cases = [
            (
                "https://tokens.example.edu",
                "https://tokens.example.edu/e/",
            ),
            (
                "https://tokens.example.edu/",
                "https://tokens.example.edu/e/",
            ),
            (
                "https://host.example/tokendesk",
                "https://host.example/tokendesk/e/",
            ),
            (
                "https://host.example/tokendesk/",
                "https://host.example/tokendesk/e/",
            ),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/e/"),
            (
                "https://host.example/a/b/?x=1#old",
                "https://host.example/a/b/e/",
            ),
        ];
        for (public, prefix) in cases {
            let url = url::Url::parse(public).unwrap();
            let link = delivery_link(&url, &id, &key);
            assert_eq!(
                link.expose_secret(),
                format!("{prefix}{id}#{frag}"),
                "{public}"
            );
            let parsed = url::Url::parse(link.expose_secret()).unwrap();
            assert_eq!(parsed.fragment(), Some(frag));
            let back = EnvelopeKey::from_fragment(parsed.fragment().unwrap()).unwrap();
            assert_eq!(*back.0, *key.0);
        }
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = EnvelopeKey::from_bytes([0xAB; KEY_LEN]);
        let frag = key.to_fragment().expose_secret().to_owned();
        let dbg = format!("{key:?} {:?}", key.to_fragment());
        assert_eq!(format!("{key:?}"), "EnvelopeKey(REDACTED)");
        assert!(!dbg.contains(&frag));
        assert!(!dbg.to_lowercase().contains("abab"));
        assert!(!dbg.contains("171"));

        let rest = AtRestKey::parse(&"ab".repeat(32)).unwrap();
        let dbg = format!("{rest:?}");
        assert_eq!(dbg, "AtRestKey(REDACTED)");

        let sealed = seal(&EnvelopeId::generate(), &key, &secret(TOKEN)).unwrap();
        assert!(!format!("{sealed:?}").contains(TOKEN));
    }

    /// Known-answer vector produced by WebCrypto (node 20, `crypto.webcrypto.subtle`):
    ///
    /// ```js
    /// const keyBytes = Uint8Array.from({length:32}, (_, i) => i);
    /// const iv = Uint8Array.from({length:12}, (_, i) => 0xa0 + i);
    /// const aad = new TextEncoder().encode("AAECAwQFBgcICQoLDA0ODw");
    /// const pt = new TextEncoder().encode("7~AbCdEfGhIjKlMnOpQrStUvWxYz0123456789");
    /// const key = await subtle.importKey("raw", keyBytes, {name:"AES-GCM"}, false, ["encrypt","decrypt"]);
    /// const ct = await subtle.encrypt({name:"AES-GCM", iv, additionalData: aad}, key, pt);
    /// Buffer.from(ct).toString("base64url");
    /// ```
    #[test]
    fn webcrypto_known_answer() {
        const NODE_CT_HEX: &str = "d1663d4f06af47d9250dceb94c168db03fdc0862c1c3171acb767ffc4f9a\
                                   4732e64371c8971b1e74e23d0492a3ca8f9d047b8216830c";
        const NODE_CT_B64URL: &str =
            "0WY9TwavR9klDc65TBaNsD_cCGLBwxcay3Z__E-aRzLmQ3HIlxsedOI9BJKjyo-dBHuCFoMM";
        let id = EnvelopeId::parse("AAECAwQFBgcICQoLDA0ODw").unwrap();
        let key =
            EnvelopeKey::from_fragment("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
        assert_eq!(*key.0, std::array::from_fn::<u8, 32, _>(|i| i as u8));
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);

        let node_ct: Vec<u8> = NODE_CT_HEX
            .as_bytes()
            .chunks_exact(2)
            .map(|p| (hex_val(p[0]) << 4) | hex_val(p[1]))
            .collect();
        assert_eq!(node_ct.len(), TOKEN.len() + TAG_LEN);

        let ours = seal_with_nonce(&id, &key, &secret(TOKEN), nonce).unwrap();
        assert_eq!(ours.ciphertext, node_ct);
        assert_eq!(ours.ciphertext_b64(), NODE_CT_B64URL);
        assert_eq!(ours.nonce_b64(), URL_SAFE_NO_PAD.encode(nonce));

        let theirs = Sealed {
            nonce,
            ciphertext: node_ct,
        };
        assert_eq!(open(&id, &key, &theirs).unwrap().expose_secret(), TOKEN);
    }

    #[test]
    fn b64_accessors_are_url_safe_without_padding() {
        let sealed = Sealed {
            nonce: [0xfb; NONCE_LEN],
            ciphertext: vec![0xff; 17],
        };
        assert_eq!(sealed.nonce_b64(), "-_v7-_v7-_v7-_v7");
        assert!(!sealed.ciphertext_b64().contains('='));
        assert!(!sealed.ciphertext_b64().contains('+'));
        assert!(!sealed.ciphertext_b64().contains('/'));
    }

    #[test]
    fn at_rest_key_parsing() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(250));
        let std_pad = base64::engine::general_purpose::STANDARD.encode(bytes);
        let std_nopad = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        let url_pad = base64::engine::general_purpose::URL_SAFE.encode(bytes);
        let url_nopad = URL_SAFE_NO_PAD.encode(bytes);
        let hex_lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let hex_upper = hex_lower.to_uppercase();
        assert!(
            std_pad.contains('+') || std_pad.contains('/'),
            "vector should exercise the alphabet"
        );
        for s in [
            &std_pad, &std_nopad, &url_pad, &url_nopad, &hex_lower, &hex_upper,
        ] {
            let k = AtRestKey::parse(&format!("  {s}\n")).unwrap();
            assert_eq!(*k.0, bytes, "{s}");
        }
        for bad in [
            "",
            "abc",
            &hex_lower[..62],
            &std_pad[..40],
            "!!!!",
            &"A".repeat(60),
        ] {
            let err = AtRestKey::parse(bad).unwrap_err();
            assert!(matches!(err, EnvelopeError::InvalidAtRestKey(_)));
            if bad.len() > 3 {
                assert!(!err.to_string().contains(bad));
            }
        }
    }

    #[test]
    fn at_rest_round_trip_and_failures() {
        let key = AtRestKey::generate();
        let msg = br#"{"to":"a@example.edu","text":"https://x/e/id#key"}"#;
        let blob = seal_at_rest(&key, b"outbox:1", msg).unwrap();
        assert_eq!(blob.len(), NONCE_LEN + msg.len() + TAG_LEN);
        assert_eq!(
            open_at_rest(&key, b"outbox:1", &blob).unwrap().as_slice(),
            msg
        );
        assert_ne!(seal_at_rest(&key, b"outbox:1", msg).unwrap(), blob);
        assert!(matches!(
            open_at_rest(&key, b"outbox:2", &blob),
            Err(EnvelopeError::Open)
        ));
        assert!(matches!(
            open_at_rest(&AtRestKey::generate(), b"outbox:1", &blob),
            Err(EnvelopeError::Open)
        ));
        let mut t = blob.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open_at_rest(&key, b"outbox:1", &t).is_err());
        assert!(matches!(
            open_at_rest(&key, b"outbox:1", &blob[..NONCE_LEN + TAG_LEN - 1]),
            Err(EnvelopeError::Truncated)
        ));
        // Empty plaintext is fine.
        let empty = seal_at_rest(&key, b"", b"").unwrap();
        assert!(open_at_rest(&key, b"", &empty).unwrap().is_empty());
    }
}

/// Fuzz target: the envelope decoder. Ids, link keys and at-rest keys of any text parse or are
/// refused (never echoing the input); whatever is sealed opens to itself; any change to the
/// nonce, the ciphertext, the id or the key refuses to open; any stored blob opens or is refused.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_is_an_id_a_key_or_a_refusal(text in "\\PC{0,60}") {
            match EnvelopeId::parse(&text) {
                Ok(id) => prop_assert_eq!(id.as_str(), text.as_str()),
                Err(e) => {
                    prop_assert!(text.len() != ID_LEN || !text.bytes().all(is_base64url_byte));
                    if text.len() > 3 {
                        prop_assert!(!e.to_string().contains(text.as_str()), "{}", e);
                    }
                }
            }
            if let Err(e) = EnvelopeKey::from_fragment(&text) && text.len() > 3 {
                prop_assert!(!e.to_string().contains(text.as_str()), "{}", e);
            }
            if let Err(e) = AtRestKey::parse(&text) && text.len() > 3 {
                prop_assert!(!e.to_string().contains(text.as_str()), "{}", e);
            }
        }

        #[test]
        fn what_is_sealed_opens_to_itself_and_nothing_else(
            value in "\\PC{0,200}",
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            part in 0usize..4,
        ) {
            let id = EnvelopeId::generate();
            let key = EnvelopeKey::generate();
            let sealed = seal(&id, &key, &SecretString::from(value.clone())).unwrap();
            // The key as the link carries it works as well as the key itself.
            let from_link = EnvelopeKey::from_fragment(key.to_fragment().expose_secret()).unwrap();
            let opened = open(&id, &from_link, &sealed).unwrap();
            prop_assert_eq!(opened.expose_secret(), value.as_str());

            let mut changed = sealed.clone();
            let refused = match part {
                0 => {
                    changed.nonce[flip.index(NONCE_LEN)] ^= 1 << bit;
                    open(&id, &key, &changed)
                }
                1 => {
                    let at = flip.index(changed.ciphertext.len());
                    changed.ciphertext[at] ^= 1 << bit;
                    open(&id, &key, &changed)
                }
                2 => open(&EnvelopeId::generate(), &key, &sealed),
                _ => open(&id, &EnvelopeKey::generate(), &sealed),
            };
            prop_assert!(matches!(refused, Err(EnvelopeError::Open)), "{:?}", refused.map(|_| ()));
        }

        #[test]
        fn any_stored_blob_opens_or_is_refused(
            blob in proptest::collection::vec(any::<u8>(), 0..100),
            aad in proptest::collection::vec(any::<u8>(), 0..20),
            plaintext in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let key = AtRestKey::generate();
            prop_assert!(open_at_rest(&key, &aad, &blob).is_err());
            let sealed = seal_at_rest(&key, &aad, &plaintext).unwrap();
            let opened = open_at_rest(&key, &aad, &sealed).unwrap();
            prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
            prop_assert!(open_at_rest(&key, b"another row", &sealed).is_err() || aad == b"another row");
            // Cut anywhere, it no longer opens.
            for cut in [0, 1, NONCE_LEN, sealed.len() - 1] {
                prop_assert!(open_at_rest(&key, &aad, &sealed[..cut]).is_err());
            }
        }
    }
}
