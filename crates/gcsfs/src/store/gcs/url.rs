//! Percent-encoding of bucket and object names as URL path segments.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::store::{ErrorKind, ObjectKey, StoreError, StoreResult};

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded;
/// in particular `/`, `?`, `#`, `%`, `+` and spaces.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes `name` as one URL path segment.
pub(crate) fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// Encodes an object key as one path segment. `.` and `..` are refused: URL parsers
/// resolve them as dot segments, and GCS forbids those names anyway.
pub(crate) fn encode_key(key: &ObjectKey) -> StoreResult<String> {
    match key.as_str() {
        "." | ".." => Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!("object name {key:?} is not allowed by Cloud Storage"),
        )),
        name => Ok(encode_segment(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay() {
        assert_eq!(encode_segment("AZaz09-._~"), "AZaz09-._~");
    }

    #[test]
    fn reserved_and_unsafe_characters_are_encoded() {
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(encode_segment("a b+c"), "a%20b%2Bc");
        assert_eq!(encode_segment("q?x#y%z"), "q%3Fx%23y%25z");
        assert_eq!(
            encode_segment("&=;:@,$!*'()[]"),
            "%26%3D%3B%3A%40%2C%24%21%2A%27%28%29%5B%5D"
        );
        assert_eq!(encode_segment("\\\"<>{}|^`"), "%5C%22%3C%3E%7B%7D%7C%5E%60");
        assert_eq!(encode_segment("tab\tnl\n"), "tab%09nl%0A");
    }

    #[test]
    fn non_ascii_is_utf8_encoded() {
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment("日"), "%E6%97%A5");
    }

    #[test]
    fn dot_segments_are_refused() {
        for name in [".", ".."] {
            let e = encode_key(&ObjectKey::new(name).unwrap()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
        assert_eq!(encode_key(&ObjectKey::new("...").unwrap()).unwrap(), "...");
        assert_eq!(
            encode_key(&ObjectKey::new("a/..").unwrap()).unwrap(),
            "a%2F.."
        );
    }
}
