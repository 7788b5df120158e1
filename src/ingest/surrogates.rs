//! Lone UTF-16 surrogate escapes (`"ok \ud83d"`, an emoji cut in half by a
//! client that truncated a string) become `\ufffd` before a body is parsed.
//!
//! JSON allows such escapes, JavaScript produces them, and Segment (and Go's
//! `encoding/json`, behind LaunchDarkly's events service) takes them,
//! replacing each with U+FFFD; `serde_json` refuses them, which would refuse
//! the whole request. So a body is rewritten first, escape for escape, and
//! the replacement is what is stored and sent. Bodies without a lone
//! surrogate (nearly all) are passed through untouched: the scan is one
//! SIMD search for backslashes.

use std::borrow::Cow;

const REPLACEMENT: &[u8] = br"\ufffd";

/// `body` with every lone surrogate escape replaced by `\ufffd`; borrowed
/// when it has none. A properly paired `\uD83D\uDE00` is left as it is, and
/// so is anything that is not an escape (`\\u` is an escaped backslash
/// followed by `u`).
pub fn repair(body: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    // Bytes before `copied` are already in `out` (or need not be).
    let mut copied = 0;
    // Escapes below this offset were handled as the low half of a pair.
    let mut skip_to = 0;
    // One-byte search: the fastest memchr has, and JSON bodies hold few
    // backslashes.
    for at in memchr::memchr_iter(b'\\', body) {
        if at < skip_to || body.get(at + 1) != Some(&b'u') || !starts_escape(body, at) {
            continue;
        }
        let Some(unit) = hex4(body, at + 2) else {
            continue;
        };
        let lone = match unit {
            0xD800..=0xDBFF => match hex4_escape(body, at + 6) {
                Some(0xDC00..=0xDFFF) => {
                    skip_to = at + 12;
                    false
                }
                _ => true,
            },
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            out.extend_from_slice(&body[copied..at]);
            out.extend_from_slice(REPLACEMENT);
            copied = at + 6;
        }
    }
    match out {
        None => Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
    }
}

/// Whether the backslash at `at` begins an escape: it is preceded by an
/// even number of backslashes (each pair is one escaped backslash).
fn starts_escape(body: &[u8], at: usize) -> bool {
    let before = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
    before % 2 == 0
}

/// The four hex digits at `at` as a code unit.
fn hex4(body: &[u8], at: usize) -> Option<u16> {
    let digits = body.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

/// The code unit of a `\uXXXX` escape starting at `at`, if one does.
fn hex4_escape(body: &[u8], at: usize) -> Option<u16> {
    (body.get(at..at + 2)? == br"\u").then(|| hex4(body, at + 2))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> String {
        String::from_utf8(repair(text.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn a_lone_high_or_low_surrogate_becomes_the_replacement_character() {
        assert_eq!(fixed(r#"{"a":"ok \ud83d"}"#), r#"{"a":"ok \ufffd"}"#);
        assert_eq!(fixed(r#"{"a":"\uDE00 x"}"#), r#"{"a":"\ufffd x"}"#);
        assert_eq!(
            fixed(r#"["\ud83d\ud83d\ude00"]"#),
            r#"["\ufffd\ud83d\ude00"]"#
        );
        assert_eq!(fixed(r#"["\ud83d\u0041"]"#), r#"["\ufffd\u0041"]"#);
        let value: serde_json::Value =
            serde_json::from_str(&fixed(r#"{"a":"ok \ud83d"}"#)).unwrap();
        assert_eq!(value["a"], "ok \u{FFFD}");
    }

    #[test]
    fn pairs_other_escapes_and_escaped_backslashes_are_left_alone() {
        for text in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\u00e9 \n \\ud83d"}"#,
            r#"{"a":"\\\\ud83d"}"#,
            r#"{"a":"plain"}"#,
            r#"{"a":"\ud83"}"#,
        ] {
            assert!(
                matches!(repair(text.as_bytes()), Cow::Borrowed(_)),
                "{text}"
            );
        }
        // An odd run of backslashes ends in an escape.
        assert_eq!(fixed(r#"["\\\ud83d"]"#), r#"["\\\ufffd"]"#);
    }
}
