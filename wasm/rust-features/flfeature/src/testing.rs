//! Native test support: run a module's real `flf1_extract` on Vec-backed columns.

use crate::{Row, RowStatus};

/// The signature of `flf1_extract`.
pub type ExtractFn = unsafe extern "C" fn(i32, *const usize) -> i32;

/// Byte that output buffers are filled with before a call, so that a test notices any output
/// byte the module did not write.
pub const POISON: u8 = 0xa5;

/// An 8-byte aligned byte buffer holding `n_rows` rows of one column (at least 8 bytes, so
/// its address is never null even for zero rows).
pub struct ColumnBuf {
    words: Vec<u64>,
    len: usize,
}

impl ColumnBuf {
    /// A buffer of `bytes` bytes, each set to `fill`.
    pub fn new(bytes: usize, fill: u8) -> Self {
        let words = vec![u64::from_ne_bytes([fill; 8]); (bytes + 7) / 8 + 1];
        ColumnBuf { words, len: bytes }
    }

    /// Address of the first byte.
    pub fn ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr() as *mut u8
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // The Vec holds at least `len` bytes.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

/// The columns of one batch, laid out as the ABI wants them, and the table pointing at them.
pub struct Batch {
    /// Input columns, then output columns, then the status column.
    pub columns: Vec<ColumnBuf>,
    /// Addresses of `columns`, in order.
    pub table: Vec<usize>,
    /// Rows in the batch.
    pub n_rows: usize,
}

impl Batch {
    /// Input columns holding `rows`, output columns filled with [`POISON`], status column
    /// filled with `0xff`.
    pub fn new<I: Row, O: Row>(rows: &[I]) -> Self {
        let n = rows.len();
        let mut columns = Vec::new();
        for c in I::COLUMNS {
            columns.push(ColumnBuf::new(n * c.row_bytes(), 0));
        }
        for c in O::COLUMNS {
            columns.push(ColumnBuf::new(n * c.row_bytes(), POISON));
        }
        columns.push(ColumnBuf::new(n, 0xff));
        let table: Vec<usize> = columns.iter_mut().map(|c| c.ptr() as usize).collect();
        // SAFETY: the table holds I::COLUMNS.len() addresses of buffers sized for n rows and
        // aligned to 8 bytes.
        unsafe {
            let ip = I::load_ptrs(table.as_ptr());
            assert!(I::ptrs_ok(&ip));
            for (i, r) in rows.iter().enumerate() {
                r.write(&ip, i);
            }
        }
        Batch { columns, table, n_rows: n }
    }

    /// Calls `extract` on the whole batch; returns its batch status.
    pub fn run(&mut self, extract: ExtractFn) -> i32 {
        let n = i32::try_from(self.n_rows).expect("batch too large for the ABI");
        // SAFETY: every column holds n rows.
        unsafe { extract(n, self.table.as_ptr()) }
    }

    /// The status column.
    pub fn statuses(&self) -> &[u8] {
        self.columns[self.columns.len() - 1].bytes()
    }

    /// Reads every row's outputs back.
    pub fn outputs<I: Row, O: Row>(&self) -> Vec<O> {
        // SAFETY: the table holds addresses of buffers sized for n rows.
        unsafe {
            let op = O::load_ptrs(self.table.as_ptr().add(I::COLUMNS.len()));
            (0..self.n_rows).map(|i| O::read(&op, i)).collect()
        }
    }
}

/// Runs `extract` (a module's `flf1_extract`) on `rows`: packs them into columns, calls it,
/// and returns each row's status byte and outputs, or the batch status when it is not OK.
///
/// Panics if the module left an output byte of a non-OK row non-zero or did not write a
/// status byte (the output buffers start out filled with [`POISON`]).
pub fn extract_rows<I: Row, O: Row>(rows: &[I], extract: ExtractFn) -> Result<Vec<(u8, O)>, i32> {
    let mut batch = Batch::new::<I, O>(rows);
    let st = batch.run(extract);
    if st != crate::batch_status::OK {
        return Err(st);
    }
    let n_in = I::COLUMNS.len();
    for (k, c) in O::COLUMNS.iter().enumerate() {
        let col = batch.columns[n_in + k].bytes();
        let rb = c.row_bytes();
        for (i, &s) in batch.statuses().iter().enumerate() {
            assert!(s <= RowStatus::FeatureError as u8, "row {}: status byte {} not written", i, s);
            if s != RowStatus::Ok as u8 {
                assert!(
                    col[i * rb..(i + 1) * rb].iter().all(|b| *b == 0),
                    "row {} (status {}): output {} not zeroed",
                    i,
                    s,
                    c.name
                );
            }
        }
    }
    let outs = batch.outputs::<I, O>();
    Ok(batch.statuses().iter().copied().zip(outs).collect())
}
