//! Guest side of the feature ABI, version 1 (docs/feature-abi.md).
//!
//! A feature crate (`crate-type = ["cdylib", "rlib"]`) declares its columns and one per-row
//! function with [`feature!`]; the macro generates everything else: the `Inputs`/`Outputs`
//! structs, the manifest (name, version and description come from the feature crate's
//! `Cargo.toml`), and the `flf_abi_version`, `flf1_manifest_ptr`, `flf1_manifest_len`,
//! `flf1_alloc`, `flf1_free` and `flf1_extract` exports.
//!
//! ```
//! use flfeature::{Ascii, RowStatus};
//!
//! flfeature::feature! {
//!     inputs {
//!         timestamp_ms: u64 [unit = "ms", description = "Unix time in milliseconds, UTC"],
//!         samples: [f32; 4] [unit = "g", description = "four samples"],
//!     }
//!     outputs {
//!         hour_of_day: u8 [unit = "h", description = "hour of day, UTC, 0..=23"],
//!         peak: f32 [unit = "g", description = "largest sample"],
//!         code: Ascii<3> [unit = "", description = "a three-letter code"],
//!     }
//!     row = compute;
//! }
//!
//! fn compute(input: &Inputs, out: &mut Outputs) -> RowStatus {
//!     if !input.samples.iter().all(|x| x.is_finite()) {
//!         return RowStatus::NonFiniteInput; // outputs are zeroed for this row
//!     }
//!     out.hour_of_day = ((input.timestamp_ms / 3_600_000) % 24) as u8;
//!     out.peak = input.samples.iter().fold(f32::MIN, |a, b| a.max(*b));
//!     out.code = Ascii(*b"abc");
//!     RowStatus::Ok
//! }
//!
//! # fn main() {
//! // Native test helper: runs the real flf1_extract on Vec-backed columns.
//! let rows = [
//!     Inputs { timestamp_ms: 7_200_000, samples: [1.0, 3.0, 2.0, 0.0] },
//!     Inputs { timestamp_ms: 0, samples: [f32::NAN, 0.0, 0.0, 0.0] },
//! ];
//! let out = extract_rows(&rows).unwrap();
//! assert_eq!(out[0], (0, Outputs { hour_of_day: 2, peak: 3.0, code: Ascii(*b"abc") }));
//! assert_eq!(out[1], (2, Outputs::ZERO));
//! assert!(manifest_json().contains(r#"{"name":"samples","dtype":"f32","shape":[4],"unit":"g","#));
//! # }
//! ```
//!
//! The same crate builds for `wasm32-unknown-unknown` (the sandboxed module: pointers and sizes
//! are `i32`) and natively as a cdylib (pointers and sizes are `usize`; the table is an array of
//! `size_t`), so the native build can be called through ctypes for benchmarks and cross-checks.
//!
//! Determinism: a feature must compute bit-identical outputs on every device. Use only
//! `+ - * /`, `sqrt`, `abs`, `floor`, comparisons and integer arithmetic on floats; never the
//! libm transcendental functions (`sin`, `exp`, `powf`, ...), whose native and wasm
//! implementations may differ in the last bit. [`math`] has deterministic replacements.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod column;
pub mod json;
pub mod lazy;
mod macros;
pub mod manifest;
pub mod math;
pub mod testing;

pub use column::{column_ptr_ok, Ascii, Column, Scalar};
pub use lazy::Lazy;
pub use manifest::ColumnSpec;

/// The ABI version this crate implements (`flf_abi_version`).
pub const ABI_VERSION: i32 = 1;

/// Status of one row, written to the status column.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// The row's outputs are valid.
    Ok = 0,
    /// An input is outside its domain (e.g. latitude > 90).
    InvalidInput = 1,
    /// An input is NaN or infinite.
    NonFiniteInput = 2,
    /// The feature could not be computed for this row.
    FeatureError = 3,
}

/// Batch statuses returned by `flf1_extract`.
pub mod batch_status {
    /// Every row's status column entry was written.
    pub const OK: i32 = 0;
    /// `n_rows < 0`, a null table, or a null or misaligned column address. Nothing was written.
    pub const BAD_ARGUMENT: i32 = 1;
    /// The module failed as a whole; no output is meaningful.
    pub const INTERNAL: i32 = 2;
}

/// The row type of one side of a batch (all inputs, or all outputs): a struct with one field
/// per column. Implemented by [`feature!`] for the generated `Inputs` and `Outputs`.
///
/// # Safety
/// `COLUMNS` must list the fields in declaration order with their [`Column`] types' dtype,
/// shape and element size; `load_ptrs` must read exactly `COLUMNS.len()` table entries;
/// `ptrs_ok` must check every column address with [`column_ptr_ok`]; `read`/`write` must
/// access each column only through its [`Column`] implementation.
pub unsafe trait Row: Copy {
    /// The columns, in manifest order.
    const COLUMNS: &'static [ColumnSpec];
    /// All fields zero.
    const ZERO: Self;
    /// The column addresses, one per field.
    type Ptrs: Copy;

    /// Reads `COLUMNS.len()` column addresses starting at `table` (unaligned reads).
    ///
    /// # Safety
    /// `table` must be valid for reads of `COLUMNS.len()` `usize`s.
    unsafe fn load_ptrs(table: *const usize) -> Self::Ptrs;

    /// Every address non-null and aligned to its element size.
    fn ptrs_ok(ptrs: &Self::Ptrs) -> bool;

    /// Reads row `row` of every column.
    ///
    /// # Safety
    /// `ptrs` must have passed `ptrs_ok`, and every column must hold at least `row + 1` rows.
    unsafe fn read(ptrs: &Self::Ptrs, row: usize) -> Self;

    /// Writes `self` to row `row` of every column.
    ///
    /// # Safety
    /// As for [`Row::read`], for writes.
    unsafe fn write(&self, ptrs: &Self::Ptrs, row: usize);
}

/// `flf1_extract`: validates the arguments, then for each row reads the inputs, calls `f` with
/// zeroed outputs, writes the outputs (zeroed again if `f` returned a status other than `Ok`)
/// and the status byte.
///
/// Returns [`batch_status::BAD_ARGUMENT`], writing nothing, for `n_rows < 0`, a null `table`, or
/// a null column address or one not aligned to its element size; else [`batch_status::OK`].
/// Never allocates (the ABI forbids growing memory inside `flf1_extract`).
///
/// # Safety
/// `table` must point to `I::COLUMNS.len() + O::COLUMNS.len() + 1` addresses (the inputs, the
/// outputs, the status column), each column valid for `n_rows` rows.
#[inline(always)]
pub unsafe fn extract<I: Row, O: Row, F: Fn(&I, &mut O) -> RowStatus>(n_rows: i32, table: *const usize, f: F) -> i32 {
    if n_rows < 0 || table.is_null() {
        return batch_status::BAD_ARGUMENT;
    }
    let n_in = I::COLUMNS.len();
    let n_out = O::COLUMNS.len();
    // SAFETY: the caller guarantees the table length; entries are read unaligned.
    let (ip, op, sp) = unsafe {
        (
            I::load_ptrs(table),
            O::load_ptrs(table.add(n_in)),
            core::ptr::read_unaligned(table.add(n_in + n_out)) as *mut u8,
        )
    };
    if !I::ptrs_ok(&ip) || !O::ptrs_ok(&op) || sp.is_null() {
        return batch_status::BAD_ARGUMENT;
    }
    for i in 0..n_rows as usize {
        // On wasm, LLVM's loop strength reduction turns `col + i * size` into one pointer
        // induction variable per column; with a dozen columns Cranelift then spills most of them
        // to the stack on every row. Reading the row index through a volatile load hides the
        // induction from LLVM, which keeps one index instead (measured: ~8% faster on
        // device_context). The load is from a local and cannot change the value.
        #[cfg(target_arch = "wasm32")]
        // SAFETY: reads a live local.
        let i = unsafe { core::ptr::read_volatile(&i) };
        // SAFETY: addresses checked above; the caller guarantees n_rows rows per column.
        unsafe {
            let input = I::read(&ip, i);
            let mut out = O::ZERO;
            let st = f(&input, &mut out);
            if st != RowStatus::Ok {
                out = O::ZERO;
            }
            out.write(&op, i);
            *sp.add(i) = st as u8;
        }
    }
    batch_status::OK
}

/// `flf1_alloc`: `size` bytes (at least 8), 8-byte aligned; null on failure.
#[inline]
pub fn alloc(size: usize) -> *mut u8 {
    let size = if size == 0 { 8 } else { size };
    // Layouts must not exceed isize::MAX once rounded up to the alignment (rustc 1.63's
    // Layout::from_size_align does not check that yet).
    if size > isize::MAX as usize - 7 {
        return core::ptr::null_mut();
    }
    match std::alloc::Layout::from_size_align(size, 8) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { std::alloc::alloc(layout) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// `flf1_free`: releases a block from [`alloc`] of the same `size`. A null `ptr` is ignored.
///
/// # Safety
/// `ptr` must come from [`alloc`] with the same `size`, and not be freed twice.
#[inline]
pub unsafe fn free(ptr: *mut u8, size: usize) {
    if ptr.is_null() {
        return;
    }
    let size = if size == 0 { 8 } else { size };
    if let Ok(layout) = std::alloc::Layout::from_size_align(size, 8) {
        // SAFETY: the caller guarantees ptr/size come from `alloc`.
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests;
