//! Deterministic math helpers.
//!
//! The native and wasm builds of a module must produce bit-identical features. IEEE 754 makes
//! `+ - * /` and `sqrt` correctly rounded everywhere, and Rust never fuses `a * b + c` into an
//! FMA on its own, so code built from those operations gives the same bits on every target.
//! The libm transcendental functions (`sin`, `cos`, `exp`, `ln`, `powf`, ...) do not: the
//! host's libm and the one compiled into a wasm module may differ in the last bit. This module
//! replaces the ones features need with polynomial evaluations that use only `+ - * /`.

use core::f64::consts::{FRAC_1_SQRT_2, FRAC_PI_4};

/// `(sin x, cos x)` for `|x| <= pi/4`, by Taylor series in Horner form (only `+ - * /`;
/// error below 1e-16 in that range).
#[inline]
pub fn sin_cos_small(x: f64) -> (f64, f64) {
    let x2 = x * x;
    // sin x = x (1 - x^2/(2*3) (1 - x^2/(4*5) (1 - ...)))
    let mut s = 1.0;
    let mut c = 1.0;
    // Terms up to x^23 / 23! and x^22 / 22!; for |x| <= pi/4 the next terms are < 1e-25.
    let mut k = 22.0_f64;
    while k >= 2.0 {
        s = 1.0 - x2 / ((k + 0.0) * (k + 1.0)) * s;
        c = 1.0 - x2 / ((k - 1.0) * k) * c;
        k -= 2.0;
    }
    (x * s, c)
}

/// `(sin, cos)` of the angle `2 pi num / den` (that is, `num / den` turns), deterministic
/// across targets.
///
/// The range reduction is exact (integer arithmetic on `num` and `den`): the angle is split
/// into an octant and an offset `t` in `[0, pi/4]`, whose sine and cosine come from
/// [`sin_cos_small`] and are mapped back by symmetry. Angles on multiples of `pi/4` give exact
/// `0`, `+-1` and equal `sin`/`cos` at odd multiples of `pi/4`.
///
/// Panics if `den == 0`.
pub fn sin_cos_turns(num: u64, den: u64) -> (f64, f64) {
    assert!(den != 0, "sin_cos_turns: zero denominator");
    let num = (num % den) as u128;
    let den = den as u128;
    // angle = (pi/4) * (octant + r/den), r < den
    let eighths = num * 8;
    let octant = (eighths / den) as u32;
    let r = eighths % den;
    let t = if octant % 2 == 0 {
        FRAC_PI_4 * (r as f64 / den as f64)
    } else {
        FRAC_PI_4 * ((den - r) as f64 / den as f64)
    };
    let (s, c) = if octant % 2 == 1 && r == 0 {
        // t == pi/4 exactly: sin t == cos t
        (FRAC_1_SQRT_2, FRAC_1_SQRT_2)
    } else {
        sin_cos_small(t)
    };
    match octant {
        0 => (s, c),
        1 => (c, s),
        2 => (c, -s),
        3 => (s, -c),
        4 => (-s, -c),
        5 => (-c, -s),
        6 => (-c, s),
        _ => (-s, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_points() {
        assert_eq!(sin_cos_turns(0, 256), (0.0, 1.0));
        assert_eq!(sin_cos_turns(64, 256), (1.0, 0.0));
        assert_eq!(sin_cos_turns(128, 256).0, 0.0);
        assert_eq!(sin_cos_turns(128, 256).1, -1.0);
        assert_eq!(sin_cos_turns(192, 256).0, -1.0);
        assert_eq!(sin_cos_turns(256, 256), (0.0, 1.0));
        let (s, c) = sin_cos_turns(1, 8);
        assert_eq!(s, c);
        assert_eq!(s, FRAC_1_SQRT_2);
        // against the reduced-angle libm values, where libm's argument is exact enough
        for num in 0..=32u64 {
            let (s, c) = sin_cos_turns(num, 256);
            let a = core::f64::consts::PI * (num as f64) / 128.0;
            assert!((s - a.sin()).abs() <= 2.3e-16, "sin {}/256", num);
            assert!((c - a.cos()).abs() <= 2.3e-16, "cos {}/256", num);
        }
    }

    #[test]
    fn close_to_libm() {
        for den in [7u64, 12, 256, 1000, 4096] {
            for num in 0..(2 * den) {
                let (s, c) = sin_cos_turns(num, den);
                // libm's own argument 2*pi*x carries a rounding error of up to ~1.4e-15
                let a = 2.0 * core::f64::consts::PI * ((num % den) as f64) / (den as f64);
                assert!((s - a.sin()).abs() < 3e-15, "sin {}/{}: {} vs {}", num, den, s, a.sin());
                assert!((c - a.cos()).abs() < 3e-15, "cos {}/{}: {} vs {}", num, den, c, a.cos());
            }
        }
    }

    #[test]
    fn symmetric() {
        for num in 0..256u64 {
            let (s, c) = sin_cos_turns(num, 256);
            let (s2, c2) = sin_cos_turns(256 - num, 256);
            assert_eq!(s, -s2, "num {}", num);
            assert_eq!(c, c2);
            assert!((s * s + c * c - 1.0).abs() < 4e-16);
        }
    }
}
