//! Strings as the child cache keeps them: one record per child, so every allocation saved here is
//! saved 50,000 times. The apiserver's own tokens (resourceVersions, UIDs) are kept as numbers,
//! and the few values thousands of children share (label keys, a bundle's name, ESO's reasons)
//! are kept once.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// A resourceVersion, UID or other token, in as few bytes as its shape allows. Only a shape
/// that formats back to exactly the same text is used, so the text is never changed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Token {
    Decimal(u64),
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Token {
    pub fn new(text: &str) -> Self {
        if let Ok(n) = text.parse::<u64>()
            && n.to_string() == text
        {
            return Token::Decimal(n);
        }
        if let Some(bytes) = uuid(text) {
            return Token::Uuid(bytes);
        }
        Token::Text(text.into())
    }

    /// The number, when it is one (resourceVersions compare so).
    pub fn decimal(&self) -> Option<u64> {
        match self {
            Token::Decimal(n) => Some(*n),
            Token::Uuid(_) | Token::Text(_) => None,
        }
    }
}

/// Lowercase hex in the 8-4-4-4-12 form the apiserver writes.
fn uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    lower_hex(&hex)
}

/// Exactly `2 * N` lowercase hex digits, as bytes.
fn lower_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let [hi, lo] = pair else { return None };
        *byte = digit(*hi)? << 4 | digit(*lo)?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// An annotation's value. The applied hash every child carries (`sha256:` and 64 lowercase hex
/// digits) is kept as its 32 bytes, inline: 71 bytes of text and an allocation less per child.
/// Any other text is kept as it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Annotation {
    Sha256([u8; 32]),
    Text(Box<str>),
}

const SHA256: &str = "sha256:";

impl Annotation {
    pub fn new(text: String) -> Self {
        match sha256(&text) {
            Some(bytes) => Annotation::Sha256(bytes),
            None => Annotation::Text(text.into_boxed_str()),
        }
    }

    /// Whether this is `text`, without formatting it.
    pub fn is(&self, text: &str) -> bool {
        match self {
            Annotation::Text(t) => **t == *text,
            Annotation::Sha256(b) => sha256(text) == Some(*b),
        }
    }
}

fn sha256(text: &str) -> Option<[u8; 32]> {
    lower_hex(text.strip_prefix(SHA256)?.as_bytes())
}

impl fmt::Display for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Annotation::Text(t) => f.write_str(t),
            Annotation::Sha256(b) => {
                f.write_str(SHA256)?;
                write_hex(f, b)
            }
        }
    }
}

impl fmt::Debug for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Decimal(n) => write!(f, "{n}"),
            Token::Text(t) => f.write_str(t),
            Token::Uuid(b) => {
                for (i, part) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        f.write_str("-")?;
                    }
                    write_hex(f, part)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Values many children share, kept once. What no child holds any longer is dropped whenever
/// the set has doubled since it was last swept, so it stays proportional to what is cached.
pub struct Pool<T: ?Sized + 'static>(Mutex<Option<Kept<T>>>);

struct Kept<T: ?Sized> {
    set: HashSet<Arc<T>>,
    swept_at: usize,
}

impl<T: ?Sized + Hash + Eq> Pool<T> {
    pub const fn new() -> Self {
        Pool(Mutex::new(None))
    }

    /// `value` as the one shared copy (`make` makes it when there is none yet).
    pub fn share(&self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = guard.get_or_insert_with(|| Kept {
            set: HashSet::new(),
            swept_at: 0,
        });
        if let Some(s) = kept.set.get(value) {
            return s.clone();
        }
        if kept.set.len() >= 2 * kept.swept_at.max(512) {
            kept.set.retain(|s| Arc::strong_count(s) > 1);
            kept.swept_at = kept.set.len();
        }
        let s = make();
        kept.set.insert(s.clone());
        s
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |k| k.set.len())
    }
}

static STRINGS: Pool<str> = Pool::new();

/// `text` as a shared string: the same allocation as every other holder of the same text.
pub fn shared(text: &str) -> Arc<str> {
    STRINGS.share(text, || Arc::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_exact_text() {
        for text in [
            "12345",
            "0",
            "007",
            "",
            "18446744073709551616",
            "3f1d2c4e-0a9b-4c7d-8e6f-1234567890ab",
            "3F1D2C4E-0A9B-4C7D-8E6F-1234567890AB",
            "3f1d2c4e-0a9b-4c7d-8e6f-1234567890a",
            "1-abc",
        ] {
            assert_eq!(Token::new(text).to_string(), text);
        }
        assert_eq!(Token::new("12").decimal(), Some(12));
        assert_eq!(Token::new("007").decimal(), None);
        assert!(matches!(
            Token::new("3f1d2c4e-0a9b-4c7d-8e6f-1234567890ab"),
            Token::Uuid(_)
        ));
    }

    #[test]
    fn annotations_keep_their_exact_text_and_a_hash_is_kept_as_bytes() {
        let hash = format!("sha256:{}", "0123456789abcdef".repeat(4));
        for text in [
            hash.as_str(),
            "sha256:0123",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
            "sha1:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "",
            "any text",
        ] {
            let a = Annotation::new(text.into());
            assert_eq!(a.to_string(), text);
            assert!(a.is(text), "{text}");
            assert!(!a.is("other"), "{text}");
        }
        let a = Annotation::new(hash.clone());
        assert!(matches!(a, Annotation::Sha256(_)));
        assert!(!a.is(&hash.replace('f', "e")));
        assert!(!Annotation::Text(hash.as_str().into()).is("x"));
    }

    #[test]
    fn shared_text_is_one_allocation_and_unheld_text_is_swept() {
        let a = shared("fleet-00");
        let b = shared(&String::from("fleet-00"));
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..5000 {
            drop(shared(&format!("gone-{i}")));
        }
        assert!(STRINGS.len() < 2500, "{} entries kept", STRINGS.len());
        assert!(Arc::ptr_eq(&a, &shared("fleet-00")), "still held");
    }
}
