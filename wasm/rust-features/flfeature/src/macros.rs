//! The [`feature!`](crate::feature) macro.

/// Declares a feature module: its input and output columns and its per-row function.
///
/// ```
/// use flfeature::{Ascii, RowStatus};
///
/// flfeature::feature! {
///     inputs {
///         timestamp_ms: u64 [unit = "ms", description = "Unix time in milliseconds, UTC"],
///         location_lat: f64 [unit = "deg", description = "latitude, WGS84"],
///     }
///     outputs {
///         hour_of_day: u8 [unit = "h", description = "hour of day, UTC"],
///         hemisphere: Ascii<1> [unit = "", description = "N or S"],
///     }
///     row = compute_row;
/// }
///
/// fn compute_row(input: &Inputs, out: &mut Outputs) -> RowStatus {
///     if !input.location_lat.is_finite() {
///         return RowStatus::NonFiniteInput;
///     }
///     out.hour_of_day = ((input.timestamp_ms / 3_600_000) % 24) as u8;
///     out.hemisphere = Ascii([if input.location_lat >= 0.0 { b'N' } else { b'S' }]);
///     RowStatus::Ok
/// }
/// # fn main() {
/// # let out = extract_rows(&[Inputs { timestamp_ms: 3_600_000, location_lat: -1.0 }]).unwrap();
/// # assert_eq!(out[0], (0, Outputs { hour_of_day: 1, hemisphere: Ascii(*b"S") }));
/// # }
/// ```
///
/// Column types: `u8 i8 u16 i16 u32 i32 u64 i64 f32 f64`, `[T; N]` of those, and
/// [`Ascii<N>`](crate::Ascii) (anything implementing [`Column`](crate::Column)). Columns appear
/// in the manifest, and in the `flf1_extract` table, in the order written here. The row
/// function gets `out` zeroed; whatever it leaves there is written when it returns
/// `RowStatus::Ok`, and all-zero outputs otherwise. It must not allocate.
///
/// Use it once per crate, at the crate root. It expands to:
/// - `pub struct Inputs` and `pub struct Outputs` (one `pub` field per column; `ZERO` consts),
///   and the [`Row`](crate::Row) impls behind them;
/// - `pub fn manifest_json() -> String` (name, version and description from the crate's
///   `Cargo.toml`) and `pub fn validate_manifest() -> Result<(), String>`, plus a unit test
///   calling it;
/// - `pub fn extract_rows(rows: &[Inputs]) -> Result<Vec<(u8, Outputs)>, i32>`, a safe wrapper
///   that runs the real `flf1_extract` on Vec-backed columns (for native tests);
/// - the `#[no_mangle] extern "C"` exports `flf_abi_version`, `flf1_manifest_ptr`,
///   `flf1_manifest_len`, `flf1_alloc`, `flf1_free` and `flf1_extract`.
#[macro_export]
macro_rules! feature {
    (
        inputs {
            $( $in_name:ident : $in_ty:ty [unit = $in_unit:literal, description = $in_desc:literal] ),* $(,)?
        }
        outputs {
            $( $out_name:ident : $out_ty:ty [unit = $out_unit:literal, description = $out_desc:literal] ),* $(,)?
        }
        row = $row_fn:path $(;)?
    ) => {
        $crate::__feature_row! { Inputs, __FlfInputsPtrs, "The input columns of one row.",
            $( $in_name : $in_ty [$in_unit, $in_desc] ),* }
        $crate::__feature_row! { Outputs, __FlfOutputsPtrs, "The output columns of one row.",
            $( $out_name : $out_ty [$out_unit, $out_desc] ),* }

        /// The manifest JSON of this module (what `flf1_manifest_ptr`/`len` expose).
        pub fn manifest_json() -> ::std::string::String {
            $crate::manifest::manifest_json(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_DESCRIPTION"),
                <Inputs as $crate::Row>::COLUMNS,
                <Outputs as $crate::Row>::COLUMNS,
            )
        }

        /// Checks the manifest rules (names, version, unique column names).
        pub fn validate_manifest() -> ::core::result::Result<(), ::std::string::String> {
            $crate::manifest::validate(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                <Inputs as $crate::Row>::COLUMNS,
                <Outputs as $crate::Row>::COLUMNS,
            )
        }

        static __FLF_MANIFEST: $crate::Lazy<::std::vec::Vec<u8>> =
            $crate::Lazy::new(|| manifest_json().into_bytes());

        /// Runs `flf1_extract` on `rows` through Vec-backed columns; returns each row's status
        /// byte and outputs, or the batch status if it was not OK.
        pub fn extract_rows(
            rows: &[Inputs],
        ) -> ::core::result::Result<::std::vec::Vec<(u8, Outputs)>, i32> {
            $crate::testing::extract_rows::<Inputs, Outputs>(rows, flf1_extract)
        }

        /// ABI version spoken by this module.
        #[no_mangle]
        pub extern "C" fn flf_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        /// Address of the manifest JSON (computed on the first call).
        #[no_mangle]
        pub extern "C" fn flf1_manifest_ptr() -> *const u8 {
            __FLF_MANIFEST.get().as_ptr()
        }

        /// Length of the manifest JSON in bytes.
        #[no_mangle]
        pub extern "C" fn flf1_manifest_len() -> usize {
            __FLF_MANIFEST.get().len()
        }

        /// Allocates `size` bytes, 8-byte aligned; null on failure.
        #[no_mangle]
        pub extern "C" fn flf1_alloc(size: usize) -> *mut u8 {
            $crate::alloc(size)
        }

        /// Releases a block from `flf1_alloc` (same size).
        ///
        /// # Safety
        /// `ptr` must come from `flf1_alloc(size)` and not have been freed.
        #[no_mangle]
        #[allow(unused_unsafe)]
        pub unsafe extern "C" fn flf1_free(ptr: *mut u8, size: usize) {
            unsafe { $crate::free(ptr, size) }
        }

        /// Computes one batch; returns a batch status.
        ///
        /// # Safety
        /// `table` must hold the addresses of the input columns, the output columns and the
        /// status column, each valid for `n_rows` rows.
        #[no_mangle]
        #[allow(unused_unsafe)]
        pub unsafe extern "C" fn flf1_extract(n_rows: i32, table: *const usize) -> i32 {
            unsafe { $crate::extract::<Inputs, Outputs, _>(n_rows, table, $row_fn) }
        }

        #[cfg(test)]
        mod __flfeature_generated_tests {
            #[test]
            fn manifest_is_valid() {
                if let Err(e) = super::validate_manifest() {
                    panic!("{}", e);
                }
            }

            #[test]
            fn manifest_matches_exports() {
                let m = super::manifest_json();
                let p = super::flf1_manifest_ptr();
                let n = super::flf1_manifest_len();
                let exported = unsafe { ::core::slice::from_raw_parts(p, n) };
                assert_eq!(exported, m.as_bytes());
                assert_eq!(super::flf_abi_version(), $crate::ABI_VERSION);
            }
        }
    };
}

/// Implementation detail of [`feature!`]: one row struct, its pointer struct and its
/// [`Row`](crate::Row) impl.
#[doc(hidden)]
#[macro_export]
macro_rules! __feature_row {
    ($row:ident, $ptrs:ident, $doc:literal, $( $name:ident : $ty:ty [$unit:literal, $desc:literal] ),*) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $row {
            $(
                #[doc = $desc]
                pub $name: $ty,
            )*
        }

        impl $row {
            /// Every field zero (what a row that is not OK gets).
            pub const ZERO: Self = $row { $( $name: <$ty as $crate::Column>::ZERO, )* };
        }

        #[doc(hidden)]
        #[derive(Clone, Copy)]
        pub struct $ptrs {
            $( $name: *mut u8, )*
        }

        unsafe impl $crate::Row for $row {
            const COLUMNS: &'static [$crate::ColumnSpec] = &[
                $(
                    $crate::ColumnSpec {
                        name: stringify!($name),
                        dtype: <$ty as $crate::Column>::DTYPE,
                        shape: <$ty as $crate::Column>::SHAPE,
                        unit: $unit,
                        description: $desc,
                        elem_size: <$ty as $crate::Column>::ELEM_SIZE,
                    },
                )*
            ];
            const ZERO: Self = $row::ZERO;
            type Ptrs = $ptrs;

            #[inline(always)]
            #[allow(unused_assignments, unused_mut, unused_variables, unused_unsafe)]
            unsafe fn load_ptrs(table: *const usize) -> $ptrs {
                let mut k = 0usize;
                $ptrs {
                    $(
                        $name: {
                            let p = unsafe { ::core::ptr::read_unaligned(table.add(k)) } as *mut u8;
                            k += 1;
                            p
                        },
                    )*
                }
            }

            #[inline(always)]
            #[allow(unused_variables)]
            fn ptrs_ok(ptrs: &$ptrs) -> bool {
                true $( && $crate::column_ptr_ok::<$ty>(ptrs.$name) )*
            }

            #[inline(always)]
            #[allow(unused_variables, unused_unsafe)]
            unsafe fn read(ptrs: &$ptrs, row: usize) -> Self {
                $row { $( $name: unsafe { <$ty as $crate::Column>::read(ptrs.$name, row) }, )* }
            }

            #[inline(always)]
            #[allow(unused_variables, unused_unsafe)]
            unsafe fn write(&self, ptrs: &$ptrs, row: usize) {
                $( unsafe { <$ty as $crate::Column>::write(ptrs.$name, row, &self.$name) }; )*
            }
        }
    };
}
