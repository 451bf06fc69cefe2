//! Mapping from Rust types to ABI column types.
//!
//! A column is one contiguous little-endian array in linear memory (docs/feature-abi.md,
//! "Data layout"). [`Column`] says, for one Rust type, which `dtype` and `shape` it has in the
//! manifest and how to read row `i` from / write row `i` to a column's address.
//!
//! | Rust type      | dtype     | shape | bytes per row   |
//! |----------------|-----------|-------|-----------------|
//! | `u8` .. `f64`  | the name  | `[]`  | size of the type|
//! | `[T; N]`       | `T`'s     | `[N]` | `N * size(T)`   |
//! | [`Ascii<N>`]   | `ascii`   | `[N]` | `N`             |

use core::ptr;

/// A Rust type that can be one row of an ABI column.
///
/// # Safety
/// Implementations must be plain old data for which all-zero bytes are a valid value
/// ([`Column::ZERO`]), must read/write exactly `ELEMS * ELEM_SIZE` bytes at
/// `col + row * ELEMS * ELEM_SIZE`, and must need no alignment stronger than `ELEM_SIZE`.
pub unsafe trait Column: Copy + 'static {
    /// The manifest `dtype`.
    const DTYPE: &'static str;
    /// The manifest `shape`: `[]` for a scalar, `[k]` for a vector or an ASCII string.
    const SHAPE: &'static [usize];
    /// Bytes per element; also the alignment `flf1_extract` demands of the column address.
    const ELEM_SIZE: usize;
    /// Elements per row (the product of `SHAPE`).
    const ELEMS: usize;
    /// All-zero value (what a row that is not `OK` gets).
    const ZERO: Self;

    /// Reads row `row` of the column at `col`.
    ///
    /// # Safety
    /// `col` must be non-null, aligned to `ELEM_SIZE`, and valid for reads of row `row`.
    unsafe fn read(col: *const u8, row: usize) -> Self;

    /// Writes `value` to row `row` of the column at `col`.
    ///
    /// # Safety
    /// `col` must be non-null, aligned to `ELEM_SIZE`, and valid for writes of row `row`.
    unsafe fn write(col: *mut u8, row: usize, value: &Self);

    /// Bytes per row.
    const ROW_BYTES: usize = Self::ELEM_SIZE * Self::ELEMS;
}

/// A scalar element type (`u8` .. `f64`): a column by itself, or the element of `[T; N]`.
pub trait Scalar: Column {
    /// Converts between little-endian (the ABI's byte order) and native order. Identity on
    /// little-endian targets (wasm32, x86_64, aarch64).
    fn swap_le(self) -> Self;
}

macro_rules! impl_int_scalar {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        unsafe impl Column for $t {
            const DTYPE: &'static str = $name;
            const SHAPE: &'static [usize] = &[];
            const ELEM_SIZE: usize = core::mem::size_of::<$t>();
            const ELEMS: usize = 1;
            const ZERO: Self = 0;
            #[inline(always)]
            unsafe fn read(col: *const u8, row: usize) -> Self {
                unsafe { <$t>::from_le(ptr::read((col as *const $t).add(row))) }
            }
            #[inline(always)]
            unsafe fn write(col: *mut u8, row: usize, value: &Self) {
                unsafe { ptr::write((col as *mut $t).add(row), value.to_le()) }
            }
        }
        impl Scalar for $t {
            #[inline(always)]
            fn swap_le(self) -> Self { <$t>::from_le(self) }
        }
    )*};
}

impl_int_scalar!(u8 => "u8", i8 => "i8", u16 => "u16", i16 => "i16", u32 => "u32", i32 => "i32",
                 u64 => "u64", i64 => "i64");

macro_rules! impl_float_scalar {
    ($($t:ty, $bits:ty => $name:literal),* $(,)?) => {$(
        unsafe impl Column for $t {
            const DTYPE: &'static str = $name;
            const SHAPE: &'static [usize] = &[];
            const ELEM_SIZE: usize = core::mem::size_of::<$t>();
            const ELEMS: usize = 1;
            const ZERO: Self = 0.0;
            #[inline(always)]
            unsafe fn read(col: *const u8, row: usize) -> Self {
                unsafe { ptr::read((col as *const $t).add(row)) }.swap_le()
            }
            #[inline(always)]
            unsafe fn write(col: *mut u8, row: usize, value: &Self) {
                unsafe { ptr::write((col as *mut $t).add(row), value.swap_le()) }
            }
        }
        impl Scalar for $t {
            #[inline(always)]
            fn swap_le(self) -> Self { <$t>::from_bits(<$bits>::from_le(self.to_bits())) }
        }
    )*};
}

impl_float_scalar!(f32, u32 => "f32", f64, u64 => "f64");

/// A fixed-length vector column: `dtype` of `T`, `shape` `[N]`; row `i` is elements
/// `i*N .. i*N+N`.
unsafe impl<T: Scalar, const N: usize> Column for [T; N] {
    const DTYPE: &'static str = T::DTYPE;
    const SHAPE: &'static [usize] = &[N];
    const ELEM_SIZE: usize = T::ELEM_SIZE;
    const ELEMS: usize = N;
    const ZERO: Self = [T::ZERO; N];

    #[inline(always)]
    unsafe fn read(col: *const u8, row: usize) -> Self {
        #[cfg(target_endian = "little")]
        {
            unsafe { ptr::read((col as *const [T; N]).add(row)) }
        }
        #[cfg(not(target_endian = "little"))]
        {
            let mut v = [T::ZERO; N];
            for (j, x) in v.iter_mut().enumerate() {
                *x = unsafe { T::read(col, row * N + j) };
            }
            v
        }
    }

    #[inline(always)]
    unsafe fn write(col: *mut u8, row: usize, value: &Self) {
        #[cfg(target_endian = "little")]
        {
            unsafe { ptr::write((col as *mut [T; N]).add(row), *value) }
        }
        #[cfg(not(target_endian = "little"))]
        {
            for (j, x) in value.iter().enumerate() {
                unsafe { T::write(col, row * N + j, x) };
            }
        }
    }
}

/// A fixed-width ASCII string column (`dtype` `"ascii"`, `shape` `[N]`): exactly `N` bytes per
/// row, no terminator. numpy sees it as `S<N>`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ascii<const N: usize>(pub [u8; N]);

impl<const N: usize> Ascii<N> {
    /// All-zero bytes.
    pub const ZERO: Self = Ascii([0; N]);

    /// Wraps `N` bytes.
    pub const fn new(bytes: [u8; N]) -> Self {
        Ascii(bytes)
    }

    /// Copies `s` (at most `N` bytes; shorter strings are zero-padded). `None` if `s` is longer
    /// than `N` bytes or not ASCII.
    pub fn from_str_padded(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() > N || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; N];
        out[..b.len()].copy_from_slice(b);
        Some(Ascii(out))
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The bytes as `&str` when they are ASCII (zero padding included), else `None`.
    pub fn as_str(&self) -> Option<&str> {
        if self.0.is_ascii() {
            core::str::from_utf8(&self.0).ok()
        } else {
            None
        }
    }
}

impl<const N: usize> Default for Ascii<N> {
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const N: usize> core::fmt::Debug for Ascii<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ascii(b\"")?;
        for &b in self.0.iter() {
            for c in core::ascii::escape_default(b) {
                write!(f, "{}", c as char)?;
            }
        }
        write!(f, "\")")
    }
}

unsafe impl<const N: usize> Column for Ascii<N> {
    const DTYPE: &'static str = "ascii";
    const SHAPE: &'static [usize] = &[N];
    const ELEM_SIZE: usize = 1;
    const ELEMS: usize = N;
    const ZERO: Self = Ascii([0; N]);

    #[inline(always)]
    unsafe fn read(col: *const u8, row: usize) -> Self {
        unsafe { ptr::read((col as *const Ascii<N>).add(row)) }
    }

    #[inline(always)]
    unsafe fn write(col: *mut u8, row: usize, value: &Self) {
        unsafe { ptr::write((col as *mut Ascii<N>).add(row), *value) }
    }
}

/// True when `col` is a usable address for a column of `T`: non-null and aligned to
/// `T::ELEM_SIZE`.
#[inline(always)]
pub fn column_ptr_ok<T: Column>(col: *const u8) -> bool {
    !col.is_null() && (col as usize) % T::ELEM_SIZE == 0
}
