//! Opaque page tokens: base64url (unpadded) of unit-separated parts. What the parts mean is
//! private to the service that made the token, which checks every part when decoding; this
//! module only guarantees that a token decodes to the parts it was made from.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// ASCII unit separator: cannot appear in the ids, SKUs and numbers a cursor is made of.
const SEPARATOR: char = '\u{1f}';

/// The token of a cursor made of these parts.
pub fn encode(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join(&SEPARATOR.to_string()))
}

/// The parts of a token, if it is base64url of UTF-8 text with exactly `count` parts. The token
/// is taken as given: callers decide what an empty or padded token means.
pub fn decode(token: &str, count: usize) -> Option<Vec<String>> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let parts: Vec<String> = text.split(SEPARATOR).map(str::to_owned).collect();
    (parts.len() == count).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = encode(&["k1", "all", "SKU-1"]);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode(&token, 3).unwrap(), ["k1", "all", "SKU-1"]);
        assert_eq!(decode(&encode(&["s1", ""]), 2).unwrap(), ["s1", ""]);
    }

    #[test]
    fn a_single_part_is_plain_base64url() {
        let id = "0190b6a4-7d2e-7c3a-9f1e-5a6b7c8d9e0f";
        let token = encode(&[id]);
        assert_eq!(token, URL_SAFE_NO_PAD.encode(id));
        assert_eq!(decode(&token, 1).unwrap(), [id]);
    }

    #[test]
    fn malformed_tokens_decode_to_nothing() {
        let token = encode(&["a", "b"]);
        assert_eq!(decode(&token, 3), None);
        assert_eq!(decode(&token, 1), None);
        assert_eq!(decode("!!!", 1), None);
        assert_eq!(decode(&format!("{token}="), 2), None);
        assert_eq!(decode(&format!(" {token}"), 2), None);
        // Valid base64url, but not UTF-8.
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode([0xff, 0xfe]), 1), None);
    }
}
