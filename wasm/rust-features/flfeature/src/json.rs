//! Minimal JSON writing (no dependencies).
//!
//! Strings are escaped exactly as Python's `json.dumps` does with its default
//! `ensure_ascii=True`: `"` and `\` are backslash-escaped, `\n \r \t \b \f` use their short
//! forms, every other character outside printable ASCII (`0x20..=0x7e`) becomes `\uXXXX` with
//! lowercase hex, and characters beyond the BMP become a UTF-16 surrogate pair. The output is
//! therefore pure ASCII, and a manifest written with [`crate::manifest::manifest_json`] equals
//! `json.dumps(json.loads(m), separators=(",", ":"))` byte for byte.

use core::fmt::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xf) as usize] as char);
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_str_literal(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units).iter() {
                    push_u16_escape(out, *unit);
                }
            }
        }
    }
    out.push('"');
}

/// `s` as a JSON string literal, quotes included.
pub fn str_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str_literal(&mut out, s);
    out
}

/// Appends an unsigned integer.
pub fn push_uint(out: &mut String, v: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_is_kept() {
        assert_eq!(str_literal("Unix time, UTC (ms)"), "\"Unix time, UTC (ms)\"");
        assert_eq!(str_literal(""), "\"\"");
        assert_eq!(str_literal("~ /{}[]:'"), "\"~ /{}[]:'\"");
    }

    #[test]
    fn quotes_and_backslashes() {
        assert_eq!(str_literal(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(str_literal("/"), "\"/\"");
    }

    #[test]
    fn control_characters() {
        assert_eq!(str_literal("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(str_literal("\u{0}\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        assert_eq!(str_literal("\u{7f}"), r#""\u007f""#);
    }

    #[test]
    fn non_ascii_as_python_ensure_ascii() {
        // json.dumps("°") == '"\\u00b0"', json.dumps("µs") == '"\\u00b5s"'
        assert_eq!(str_literal("°"), r#""\u00b0""#);
        assert_eq!(str_literal("µs"), r#""\u00b5s""#);
        assert_eq!(str_literal("m/s²"), r#""m/s\u00b2""#);
        // json.dumps("\u20ac") == '"\\u20ac"'
        assert_eq!(str_literal("€"), r#""\u20ac""#);
        // json.dumps("\U0001F600") == '"\\ud83d\\ude00"'
        assert_eq!(str_literal("😀"), r#""\ud83d\ude00""#);
    }

    #[test]
    fn uints() {
        let mut s = String::new();
        push_uint(&mut s, 0);
        s.push(',');
        push_uint(&mut s, 18446744073709551615);
        assert_eq!(s, "0,18446744073709551615");
    }
}
