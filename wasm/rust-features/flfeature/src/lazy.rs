//! A value computed once, on first use, and kept in a `static` (rustc 1.63 has neither
//! `OnceCell` nor `LazyLock`).

use core::cell::UnsafeCell;
use std::sync::Once;

/// A lazily initialised static value.
///
/// ```
/// static TABLE: flfeature::Lazy<Vec<u32>> = flfeature::Lazy::new(|| (0..4).collect());
/// assert_eq!(TABLE.get()[3], 3);
/// ```
pub struct Lazy<T> {
    once: Once,
    init: fn() -> T,
    value: UnsafeCell<Option<T>>,
}

// `value` is written once, inside `call_once`, before any reader can see it.
unsafe impl<T: Sync + Send> Sync for Lazy<T> {}

impl<T> Lazy<T> {
    /// A value that `init` computes on the first [`Lazy::get`].
    pub const fn new(init: fn() -> T) -> Self {
        Lazy { once: Once::new(), init, value: UnsafeCell::new(None) }
    }

    /// The value, computed on the first call.
    #[inline]
    pub fn get(&'static self) -> &'static T {
        self.once.call_once(|| {
            let v = (self.init)();
            // Only this closure writes, and it runs at most once, before any read below.
            unsafe { *self.value.get() = Some(v) };
        });
        // Initialised by the call_once above (or an earlier one).
        match unsafe { &*self.value.get() } {
            Some(v) => v,
            None => unreachable!("Lazy initialiser did not complete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static VALUE: Lazy<Vec<u8>> = Lazy::new(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        b"hello".to_vec()
    });

    #[test]
    fn computed_once() {
        assert_eq!(VALUE.get(), b"hello");
        assert_eq!(VALUE.get(), b"hello");
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert!(core::ptr::eq(VALUE.get(), VALUE.get()));
    }
}
