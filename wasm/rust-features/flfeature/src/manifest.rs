//! The module manifest (docs/feature-abi.md, "Manifest").

use crate::json::{push_str_literal, push_uint};

/// One column of the manifest, plus its element size (not part of the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Column name, `[a-z][a-z0-9_]{0,63}`.
    pub name: &'static str,
    /// `u8` .. `f64` or `ascii`.
    pub dtype: &'static str,
    /// `[]` or `[k]`.
    pub shape: &'static [usize],
    /// Free-form unit string (`""` when dimensionless).
    pub unit: &'static str,
    /// Free-form description.
    pub description: &'static str,
    /// Bytes per element (alignment required of the column address).
    pub elem_size: usize,
}

impl ColumnSpec {
    /// Elements per row.
    pub fn elems_per_row(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.elems_per_row() * self.elem_size
    }
}

fn push_column(out: &mut String, c: &ColumnSpec) {
    out.push_str("{\"name\":");
    push_str_literal(out, c.name);
    out.push_str(",\"dtype\":");
    push_str_literal(out, c.dtype);
    out.push_str(",\"shape\":[");
    for (i, d) in c.shape.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_uint(out, *d as u64);
    }
    out.push_str("],\"unit\":");
    push_str_literal(out, c.unit);
    out.push_str(",\"description\":");
    push_str_literal(out, c.description);
    out.push('}');
}

fn push_columns(out: &mut String, cols: &[ColumnSpec]) {
    out.push('[');
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_column(out, c);
    }
    out.push(']');
}

/// The manifest JSON: compact (no whitespace), keys in the order `abi_version, name, version,
/// description, inputs, outputs` and `name, dtype, shape, unit, description` per column, pure
/// ASCII (see [`crate::json`]). Equal to Python's
/// `json.dumps(manifest, separators=(",", ":"))`.
pub fn manifest_json(
    name: &str,
    version: &str,
    description: &str,
    inputs: &[ColumnSpec],
    outputs: &[ColumnSpec],
) -> String {
    let mut out = String::with_capacity(256 + 160 * (inputs.len() + outputs.len()));
    out.push_str("{\"abi_version\":");
    push_uint(&mut out, crate::ABI_VERSION as u64);
    out.push_str(",\"name\":");
    push_str_literal(&mut out, name);
    out.push_str(",\"version\":");
    push_str_literal(&mut out, version);
    out.push_str(",\"description\":");
    push_str_literal(&mut out, description);
    out.push_str(",\"inputs\":");
    push_columns(&mut out, inputs);
    out.push_str(",\"outputs\":");
    push_columns(&mut out, outputs);
    out.push('}');
    out
}

/// True for `[a-z][a-z0-9_]{0,63}` (module and column names).
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_numeric_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

fn dot_separated(s: &str, numeric_no_leading_zero: bool) -> bool {
    s.split('.').all(|id| {
        !id.is_empty()
            && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && (!numeric_no_leading_zero
                || !id.bytes().all(|c| c.is_ascii_digit())
                || is_numeric_identifier(id))
    })
}

/// True for a semantic version `MAJOR.MINOR.PATCH[-pre][+build]` (semver.org 2.0.0).
pub fn is_valid_version(s: &str) -> bool {
    let (rest, build) = match s.find('+') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (core, pre) = match rest.find('-') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| is_numeric_identifier(p))
        && pre.map_or(true, |p| dot_separated(p, true))
        && build.map_or(true, |b| dot_separated(b, false))
}

/// Checks the rules of docs/feature-abi.md that the code, not the ABI, can break: module name,
/// version, column names (valid, unique across inputs and outputs, not `status`), and shapes
/// (`ascii` always `[k]`; `k >= 1`).
pub fn validate(name: &str, version: &str, inputs: &[ColumnSpec], outputs: &[ColumnSpec]) -> Result<(), String> {
    if !is_valid_name(name) {
        return Err(format!("module name {:?} is not [a-z][a-z0-9_]{{0,63}}", name));
    }
    if !is_valid_version(version) {
        return Err(format!("version {:?} is not MAJOR.MINOR.PATCH[-pre][+build]", version));
    }
    let all: Vec<&ColumnSpec> = inputs.iter().chain(outputs.iter()).collect();
    for (i, c) in all.iter().enumerate() {
        if !is_valid_name(c.name) {
            return Err(format!("column name {:?} is not [a-z][a-z0-9_]{{0,63}}", c.name));
        }
        if c.name == "status" {
            return Err("a column may not be named \"status\"".to_string());
        }
        if all[..i].iter().any(|o| o.name == c.name) {
            return Err(format!("column name {:?} is used twice", c.name));
        }
        if c.shape.len() > 1 || c.shape.iter().any(|d| *d == 0) {
            return Err(format!("column {:?}: shape must be [] or [k] with k >= 1", c.name));
        }
        if c.dtype == "ascii" && c.shape.len() != 1 {
            return Err(format!("column {:?}: ascii columns have shape [k]", c.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: ColumnSpec = ColumnSpec {
        name: "timestamp_ms",
        dtype: "u64",
        shape: &[],
        unit: "ms",
        description: "Unix time, UTC",
        elem_size: 8,
    };
    const HASH: ColumnSpec = ColumnSpec {
        name: "location_hash",
        dtype: "ascii",
        shape: &[5],
        unit: "",
        description: "geohash, \"5\" chars",
        elem_size: 1,
    };

    #[test]
    fn manifest_layout_and_key_order() {
        let m = manifest_json("device_context", "1.0.0", "Time \u{b0}", &[TS], &[HASH]);
        assert_eq!(
            m,
            concat!(
                r#"{"abi_version":1,"name":"device_context","version":"1.0.0","description":"Time \u00b0","#,
                r#""inputs":[{"name":"timestamp_ms","dtype":"u64","shape":[],"unit":"ms","description":"Unix time, UTC"}],"#,
                r#""outputs":[{"name":"location_hash","dtype":"ascii","shape":[5],"unit":"","description":"geohash, \"5\" chars"}]}"#
            )
        );
        assert!(m.is_ascii());
    }

    #[test]
    fn empty_column_lists() {
        assert_eq!(
            manifest_json("x", "0.1.0", "", &[], &[]),
            r#"{"abi_version":1,"name":"x","version":"0.1.0","description":"","inputs":[],"outputs":[]}"#
        );
    }

    #[test]
    fn names() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("device_context"));
        assert!(is_valid_name("x9_"));
        assert!(is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("9a"));
        assert!(!is_valid_name("_a"));
        assert!(!is_valid_name("device-context"));
        assert!(!is_valid_name("Device"));
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "0.1.10", "1.0.0-alpha.1", "1.0.0+build.5", "1.0.0-rc.1+sha.abc", "1.0.0-0a"] {
            assert!(is_valid_version(ok), "{}", ok);
        }
        for bad in ["1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0+", "1.0.0-01", "a.b.c", "1..0", ""] {
            assert!(!is_valid_version(bad), "{}", bad);
        }
    }

    #[test]
    fn validation() {
        assert!(validate("device_context", "1.0.0", &[TS], &[HASH]).is_ok());
        assert!(validate("device-context", "1.0.0", &[TS], &[HASH]).is_err());
        assert!(validate("d", "1.0", &[TS], &[HASH]).is_err());
        assert!(validate("d", "1.0.0", &[TS], &[TS]).is_err());
        let status = ColumnSpec { name: "status", ..TS };
        assert!(validate("d", "1.0.0", &[TS], &[status]).is_err());
        let bad_ascii = ColumnSpec { shape: &[], ..HASH };
        assert!(validate("d", "1.0.0", &[TS], &[bad_ascii]).is_err());
    }
}
