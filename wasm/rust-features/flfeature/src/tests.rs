//! Tests of the macro, the column codecs and `flf1_extract`'s argument handling, on a toy
//! feature declared here (its exports exist only in this test binary).

use crate::testing::{Batch, POISON};
use crate::{batch_status, Ascii, Column, Row, RowStatus};

crate::feature! {
    inputs {
        a_u8: u8 [unit = "", description = "u8 in"],
        a_i8: i8 [unit = "", description = "i8 in"],
        a_u16: u16 [unit = "", description = "u16 in"],
        a_i16: i16 [unit = "", description = "i16 in"],
        a_u32: u32 [unit = "", description = "u32 in"],
        a_i32: i32 [unit = "", description = "i32 in"],
        a_u64: u64 [unit = "ms", description = "u64 in"],
        a_i64: i64 [unit = "", description = "i64 in"],
        a_f32: f32 [unit = "g", description = "f32 in"],
        a_f64: f64 [unit = "deg", description = "f64 \"quoted\" in\n"],
        v_f32: [f32; 3] [unit = "g", description = "vector in"],
        s_in: Ascii<4> [unit = "", description = "ascii in"],
    }
    outputs {
        sum: f64 [unit = "", description = "sum of the numeric inputs"],
        v_rev: [f32; 3] [unit = "g", description = "v_f32 reversed"],
        v_i16: [i16; 2] [unit = "", description = "a_i16 and -a_i16"],
        s_up: Ascii<4> [unit = "", description = "s_in upper-cased"],
        neg: i64 [unit = "", description = "-a_i64"],
        flag: u8 [unit = "", description = "1"],
    }
    row = toy_row;
}

/// Status from `a_u8`: 0 ok, 1..=3 that status (after filling the outputs with garbage, which
/// must not reach the columns).
fn toy_row(i: &Inputs, o: &mut Outputs) -> RowStatus {
    o.sum = i.a_u8 as f64
        + i.a_i8 as f64
        + i.a_u16 as f64
        + i.a_i16 as f64
        + i.a_u32 as f64
        + i.a_i32 as f64
        + i.a_u64 as f64
        + i.a_i64 as f64
        + i.a_f32 as f64
        + i.a_f64;
    o.v_rev = [i.v_f32[2], i.v_f32[1], i.v_f32[0]];
    o.v_i16 = [i.a_i16, i.a_i16.wrapping_neg()];
    o.s_up = Ascii(i.s_in.0.map(|b| b.to_ascii_uppercase()));
    o.neg = i.a_i64.wrapping_neg();
    o.flag = 1;
    match i.a_u8 {
        0 => RowStatus::Ok,
        1 => RowStatus::InvalidInput,
        2 => RowStatus::NonFiniteInput,
        _ => RowStatus::FeatureError,
    }
}

fn row(k: u8) -> Inputs {
    Inputs {
        a_u8: k,
        a_i8: -3,
        a_u16: 65535,
        a_i16: -300,
        a_u32: 4_000_000_000,
        a_i32: -2_000_000_000,
        a_u64: 1 << 40,
        a_i64: -(1 << 41),
        a_f32: 0.5,
        a_f64: 0.25,
        v_f32: [1.0, -2.5, 3.25],
        s_in: Ascii(*b"ab1z"),
    }
}

#[test]
fn column_types() {
    assert_eq!((u8::DTYPE, u8::SHAPE, u8::ELEM_SIZE, u8::ELEMS), ("u8", &[][..], 1, 1));
    assert_eq!((i16::DTYPE, i16::ELEM_SIZE), ("i16", 2));
    assert_eq!((u64::DTYPE, u64::ELEM_SIZE), ("u64", 8));
    assert_eq!((f32::DTYPE, f32::ELEM_SIZE), ("f32", 4));
    assert_eq!((f64::DTYPE, f64::ELEM_SIZE), ("f64", 8));
    assert_eq!(<[f32; 256]>::DTYPE, "f32");
    assert_eq!(<[f32; 256]>::SHAPE, &[256]);
    assert_eq!(<[f32; 256]>::ROW_BYTES, 1024);
    assert_eq!(<Ascii<5>>::DTYPE, "ascii");
    assert_eq!(<Ascii<5>>::SHAPE, &[5]);
    assert_eq!(<Ascii<5>>::ROW_BYTES, 5);
}

#[test]
fn scalar_columns_are_little_endian() {
    let mut buf = [0u8; 24];
    unsafe {
        u16::write(buf.as_mut_ptr(), 1, &0x0102);
        assert_eq!(&buf[2..4], &[0x02, 0x01]);
        i32::write(buf.as_mut_ptr(), 1, &-2);
        assert_eq!(&buf[4..8], &[0xfe, 0xff, 0xff, 0xff]);
        u64::write(buf.as_mut_ptr(), 2, &0x0102030405060708);
        assert_eq!(&buf[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(u64::read(buf.as_ptr(), 2), 0x0102030405060708);
        f32::write(buf.as_mut_ptr(), 0, &1.0);
        assert_eq!(&buf[0..4], &[0, 0, 0x80, 0x3f]);
        assert_eq!(f32::read(buf.as_ptr(), 0), 1.0);
        f64::write(buf.as_mut_ptr(), 1, &-2.0);
        assert_eq!(&buf[8..16], &[0, 0, 0, 0, 0, 0, 0, 0xc0]);
        assert_eq!(f64::read(buf.as_ptr(), 1), -2.0);
    }
}

#[test]
fn vector_and_ascii_columns_are_row_major() {
    let mut buf = [0u64; 4];
    let p = buf.as_mut_ptr() as *mut u8;
    unsafe {
        <[u16; 3]>::write(p, 1, &[0x0a0b, 2, 3]);
        let bytes = core::slice::from_raw_parts(p, 32);
        assert_eq!(&bytes[0..12], &[0, 0, 0, 0, 0, 0, 0x0b, 0x0a, 2, 0, 3, 0]);
        assert_eq!(<[u16; 3]>::read(p, 1), [0x0a0b, 2, 3]);
        assert_eq!(<[u16; 3]>::read(p, 0), [0, 0, 0]);
        <Ascii<5>>::write(p, 2, &Ascii(*b"u4pru"));
        let bytes = core::slice::from_raw_parts(p, 32);
        assert_eq!(&bytes[10..15], b"u4pru");
        assert_eq!(<Ascii<5>>::read(p, 2).as_str(), Some("u4pru"));
    }
}

#[test]
fn ascii_helpers() {
    assert_eq!(Ascii::<4>::from_str_padded("ab"), Some(Ascii(*b"ab\0\0")));
    assert_eq!(Ascii::<2>::from_str_padded("abc"), None);
    assert_eq!(Ascii::<2>::from_str_padded("é"), None);
    assert_eq!(format!("{:?}", Ascii(*b"a\"\0")), "Ascii(b\"a\\\"\\x00\")");
}

#[test]
fn generated_columns() {
    let names: Vec<&str> = Inputs::COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(names[0], "a_u8");
    assert_eq!(names[11], "s_in");
    assert_eq!(Inputs::COLUMNS[10].shape, &[3]);
    assert_eq!(Inputs::COLUMNS[10].elem_size, 4);
    assert_eq!(Outputs::COLUMNS.len(), 6);
    assert_eq!(Outputs::COLUMNS[3].dtype, "ascii");
}

#[test]
fn manifest() {
    let m = manifest_json();
    assert!(m.starts_with(concat!(
        r#"{"abi_version":1,"name":"flfeature","version":""#,
        env!("CARGO_PKG_VERSION"),
        r#"","description":"#
    )));
    assert!(m.contains(
        r#""inputs":[{"name":"a_u8","dtype":"u8","shape":[],"unit":"","description":"u8 in"},"#
    ));
    assert!(m.contains(
        r#"{"name":"a_f64","dtype":"f64","shape":[],"unit":"deg","description":"f64 \"quoted\" in\n"}"#
    ));
    assert!(m.contains(r#"{"name":"v_f32","dtype":"f32","shape":[3],"unit":"g","description":"vector in"}"#));
    assert!(m.contains(r#"{"name":"s_in","dtype":"ascii","shape":[4],"unit":"","description":"ascii in"}]"#));
    assert!(m.ends_with(r#"{"name":"flag","dtype":"u8","shape":[],"unit":"","description":"1"}]}"#));
}

#[test]
fn extract_ok_rows() {
    let rows = vec![row(0), row(0)];
    let out = extract_rows(&rows).unwrap();
    for (st, o) in out {
        assert_eq!(st, 0);
        let expected = 0.0 + -3.0 + 65535.0 + -300.0 + 4e9 + -2e9 + (1u64 << 40) as f64 - (1u64 << 41) as f64 + 0.5 + 0.25;
        assert_eq!(o.sum, expected);
        assert_eq!(o.v_rev, [3.25, -2.5, 1.0]);
        assert_eq!(o.v_i16, [-300, 300]);
        assert_eq!(o.s_up, Ascii(*b"AB1Z"));
        assert_eq!(o.neg, 1 << 41);
        assert_eq!(o.flag, 1);
    }
}

#[test]
fn non_ok_rows_are_zeroed() {
    let rows: Vec<Inputs> = (0..8).map(|k| row(k % 4)).collect();
    // extract_rows also asserts that every output byte of a non-OK row is 0.
    let out = extract_rows(&rows).unwrap();
    for (k, (st, o)) in out.iter().enumerate() {
        assert_eq!(*st as usize, k % 4);
        if k % 4 == 0 {
            assert_eq!(o.flag, 1);
        } else {
            assert_eq!(*o, Outputs::ZERO);
        }
    }
}

#[test]
fn zero_rows() {
    assert_eq!(extract_rows(&[]).unwrap(), vec![]);
}

fn poisoned(batch: &Batch) -> bool {
    let n_in = Inputs::COLUMNS.len();
    batch.columns[n_in..batch.columns.len() - 1].iter().all(|c| c.bytes().iter().all(|b| *b == POISON))
        && batch.statuses().iter().all(|b| *b == 0xff)
}

#[test]
fn bad_arguments_write_nothing() {
    let rows = vec![row(0), row(1), row(0)];
    let n_cols = Inputs::COLUMNS.len() + Outputs::COLUMNS.len() + 1;

    // negative row count, null table
    let mut b = Batch::new::<Inputs, Outputs>(&rows);
    assert_eq!(b.table.len(), n_cols);
    assert_eq!(unsafe { flf1_extract(-1, b.table.as_ptr()) }, batch_status::BAD_ARGUMENT);
    assert_eq!(unsafe { flf1_extract(i32::MIN, b.table.as_ptr()) }, batch_status::BAD_ARGUMENT);
    assert_eq!(unsafe { flf1_extract(3, core::ptr::null()) }, batch_status::BAD_ARGUMENT);
    assert!(poisoned(&b));
    assert_eq!(b.run(flf1_extract), batch_status::OK);
    assert!(!poisoned(&b));

    // a null address in every position (inputs, outputs, status)
    for k in 0..n_cols {
        let mut b = Batch::new::<Inputs, Outputs>(&rows);
        b.table[k] = 0;
        assert_eq!(b.run(flf1_extract), batch_status::BAD_ARGUMENT, "null column {}", k);
        assert!(poisoned(&b), "null column {}", k);
    }

    // a misaligned address: rejected for columns whose element is wider than one byte
    let all = Inputs::COLUMNS.iter().chain(Outputs::COLUMNS.iter());
    for (k, c) in all.enumerate() {
        for off in 1..8usize {
            let mut b = Batch::new::<Inputs, Outputs>(&rows);
            let base = b.table[k];
            // keep the shifted column inside its buffer: only row 0 could be touched
            b.table[k] = base + off;
            let st = b.run(flf1_extract);
            if off % c.elem_size != 0 {
                assert_eq!(st, batch_status::BAD_ARGUMENT, "column {} offset {}", c.name, off);
                assert!(poisoned(&b), "column {} offset {}", c.name, off);
            } else {
                assert_eq!(st, batch_status::OK, "column {} offset {}", c.name, off);
            }
        }
    }
}

#[test]
fn unaligned_table_is_accepted() {
    let rows = vec![row(0), row(2)];
    let mut b = Batch::new::<Inputs, Outputs>(&rows);
    let n = b.table.len();
    let mut raw = vec![0u8; n * core::mem::size_of::<usize>() + 1];
    for (k, a) in b.table.iter().enumerate() {
        let at = 1 + k * core::mem::size_of::<usize>();
        raw[at..at + core::mem::size_of::<usize>()].copy_from_slice(&a.to_ne_bytes());
    }
    let st = unsafe { flf1_extract(2, raw.as_ptr().add(1) as *const usize) };
    assert_eq!(st, batch_status::OK);
    assert_eq!(b.statuses(), &[0, 2]);
    let outs = b.outputs::<Inputs, Outputs>();
    assert_eq!(outs[0].flag, 1);
    assert_eq!(outs[1], Outputs::ZERO);
    let _ = b.run(flf1_extract);
}

#[test]
fn alloc_and_free() {
    for size in [0usize, 1, 7, 8, 9, 1000, 1 << 20] {
        let p = flf1_alloc(size);
        assert!(!p.is_null());
        assert_eq!(p as usize % 8, 0);
        unsafe {
            core::ptr::write_bytes(p, 0x5a, size.max(8));
            flf1_free(p, size);
        }
    }
    // Let the pointers escape (volatile store), or LLVM may elide an allocation whose result
    // is only compared with null.
    for size in [usize::MAX, usize::MAX - 16, isize::MAX as usize] {
        let mut sink = core::ptr::null_mut();
        unsafe {
            core::ptr::write_volatile(&mut sink, flf1_alloc(size));
            assert!(core::ptr::read_volatile(&sink).is_null(), "size {}", size);
        }
    }
    unsafe { flf1_free(core::ptr::null_mut(), 16) };
}
