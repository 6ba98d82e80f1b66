//! Making text that came from disk safe to print.
//!
//! File names, paths inside error messages and record payloads are bytes someone else chose. A
//! name holding `ESC [ 2 J` would clear the user's terminal, and a newline would forge a line of
//! output. Everything the tool prints that did not come from its own string literals goes
//! through [`text`] or [`path`] (human output) or [`json`] (machine output).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

/// `s` with every control character (C0, DEL and C1) replaced by a `\u{..}` escape and every
/// backslash doubled, so the escaped form cannot be confused with a real escape. Text without
/// either is returned as is.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    Cow::Owned(out)
}

/// A path as printable text: control characters escaped as in [`text`], and bytes that are
/// not UTF-8 shown as `\xNN` rather than replaced, so two different names never print alike.
pub fn path(p: &Path) -> String {
    bytes(p.as_os_str().as_encoded_bytes())
}

/// Arbitrary bytes (a payload, a raw name) as printable text, as [`path`] does.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Serialised JSON with the control characters serde_json leaves raw (DEL and C1, which JSON
/// allows inside strings) escaped as `\uXXXX`. The result denotes the same JSON value: those
/// characters can only occur inside strings, where the escape means the same character.
pub fn json(serialised: String) -> String {
    if !serialised.chars().any(char::is_control) {
        return serialised;
    }
    let mut out = String::with_capacity(serialised.len() + 8);
    for c in serialised.chars() {
        // Whitespace between tokens (newlines of pretty printing) stays as it is; serde_json
        // already escaped every C0 character inside strings.
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn controls_and_backslashes_are_escaped_and_nothing_else() {
        assert_eq!(text("plain ünïcode"), "plain ünïcode");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        assert_eq!(text("a\x1b[2Jb\nc\u{7f}\u{9b}d\\"), "a\\u{1b}[2Jb\\u{a}c\\u{7f}\\u{9b}d\\\\");
        // The escaped form of a literal backslash-u text differs from that of the control.
        assert_ne!(text("\\u{1b}"), text("\x1b"));
    }

    #[test]
    fn non_utf8_path_bytes_are_shown_not_replaced() {
        let p = Path::new(OsStr::from_bytes(b"/tmp/a\xff\x1bb"));
        assert_eq!(path(p), "/tmp/a\\xff\\u{1b}b");
        assert_ne!(bytes(b"\xfe"), bytes(b"\xff"));
    }

    #[test]
    fn json_keeps_its_value_and_loses_raw_controls() {
        let value = serde_json::json!({ "name": "x\u{1b}y\u{7f}z\u{85}" });
        let raw = serde_json::to_string_pretty(&value).unwrap();
        let safe = json(raw);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'), "{safe:?}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
