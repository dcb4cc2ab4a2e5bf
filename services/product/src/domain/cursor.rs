//! Opaque page tokens: base64url of unit-separated parts. Their meaning is private to the
//! service, which checks every part when decoding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const SEPARATOR: char = '\u{1f}';

pub fn encode(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join(&SEPARATOR.to_string()))
}

/// The parts of a token, if it decodes to exactly `count` of them.
pub fn decode(token: &str, count: usize) -> Option<Vec<String>> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let parts: Vec<String> = text.split(SEPARATOR).map(str::to_owned).collect();
    (parts.len() == count).then_some(parts)
}
