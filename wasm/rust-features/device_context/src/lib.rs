//! Device-context features: hour of day, weekend flag, battery bucket and a geohash of the
//! location, from one row of raw device context.
//!
//! Reference semantics (what a Python implementation with `pygeohash.encode(lat, lon, 5)`
//! computes, bit for bit):
//! - `hour_of_day = (timestamp_ms / 3_600_000) % 24` (UTC);
//! - `is_weekend = ((timestamp_ms / 86_400_000) + 4) % 7 in {0, 6}` (1970-01-01 was a
//!   Thursday; 0 = Sunday);
//! - `battery_bucket = (battery_level * 10.0f32)` in f32, truncated toward zero (0.7 -> 7,
//!   1.0 -> 10);
//! - `location_hash` = geohash of precision 5 (13 longitude bits, 12 latitude bits).
//!
//! Row status: a NaN or infinite latitude, longitude or battery level gives
//! `NON_FINITE_INPUT` (checked first); a finite latitude outside `[-90, 90]`, longitude outside
//! `[-180, 180]` or battery level outside `[0, 1]` gives `INVALID_INPUT`.

use flfeature::{Ascii, RowStatus};

flfeature::feature! {
    inputs {
        timestamp_ms: u64 [unit = "ms", description = "Unix time in milliseconds, UTC"],
        location_lat: f64 [unit = "deg", description = "Latitude, WGS84, in [-90, 90]"],
        location_lon: f64 [unit = "deg", description = "Longitude, WGS84, in [-180, 180]"],
        battery_level: f32 [unit = "fraction", description = "Battery charge, in [0, 1]"],
    }
    outputs {
        hour_of_day: u8 [unit = "h", description = "Hour of day, UTC, 0..=23"],
        is_weekend: u8 [unit = "", description = "1 on Saturday and Sunday (UTC), else 0"],
        battery_bucket: u8 [unit = "", description = "floor(battery_level * 10) in f32, 0..=10"],
        location_hash: Ascii<5> [unit = "", description = "Geohash of the location, precision 5 (about 4.9 km x 4.9 km)"],
    }
    row = device_context_row;
}

/// The per-row feature function.
#[inline(always)]
pub fn device_context_row(i: &Inputs, o: &mut Outputs) -> RowStatus {
    let lat = i.location_lat;
    let lon = i.location_lon;
    let battery = i.battery_level;
    // One test for the common case, on the bit patterns: for a float with the sign bit cleared
    // the bits order like the values, and NaN and infinity sort above every finite value. The
    // battery bits are at most those of 1.0 exactly for +0.0 ..= 1.0 (negative values have the
    // sign bit set); -0.0 is let through separately. Integer compares branch more cheaply than
    // float ones in Cranelift's code, and this is the hot path ...
    let lat_bits = lat.to_bits() & !(1 << 63);
    let lon_bits = lon.to_bits() & !(1 << 63);
    let bat_bits = battery.to_bits();
    if !(lat_bits <= 90.0f64.to_bits()
        && lon_bits <= 180.0f64.to_bits()
        && (bat_bits <= 1.0f32.to_bits() || bat_bits == (-0.0f32).to_bits()))
    {
        // ... and the reason only for rows that fail it.
        return if lat.is_finite() && lon.is_finite() && battery.is_finite() {
            RowStatus::InvalidInput
        } else {
            RowStatus::NonFiniteInput
        };
    }
    let (days, ms_of_day) = split_days(i.timestamp_ms);
    // (ms / 3_600_000) % 24 == (ms % 86_400_000) / 3_600_000
    o.hour_of_day = hour_of_ms_of_day(ms_of_day);
    o.is_weekend = is_weekend_day(days) as u8;
    // battery is in [0, 1] (checked above), so battery * 10 is in [0, 10] and the cast, which
    // truncates toward zero, cannot overflow.
    o.battery_bucket = unsafe { (battery * 10.0f32).to_int_unchecked::<i32>() } as u8;
    o.location_hash = Ascii(geohash5(lat, lon));
    RowStatus::Ok
}

/// `(ms / 86_400_000, ms % 86_400_000)`, exact for every `u64`.
#[inline(always)]
pub fn split_days(ms: u64) -> (u64, u32) {
    #[cfg(target_arch = "wasm32")]
    {
        // wasm has no 64x64->128 multiply, so LLVM leaves a 64-bit division by a constant as
        // i64.div_u (slow); the f64 route below is several times faster there.
        split_days_f64(ms)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        (ms / 86_400_000, (ms % 86_400_000) as u32)
    }
}

/// [`split_days`] through an f64 estimate of the quotient, corrected with exact integer
/// arithmetic: the result is exact, so it is the same on every target.
///
/// `86_400_000 = 84_375 << 10`, so `ms / 86_400_000 = x / 84_375` with `x = ms >> 10 < 2^54`.
/// The estimate `q = trunc(f64(x) * f64(1 / 84_375))` carries three roundings of relative size
/// `2^-53` on a quotient below `2^38`, an absolute error below `2^-13`: `q` is the true
/// quotient or one off, and the remainder check fixes that.
#[inline(always)]
pub fn split_days_f64(ms: u64) -> (u64, u32) {
    const D: i64 = 84_375;
    let x = (ms >> 10) as i64;
    let estimate = x as f64 * (1.0 / D as f64);
    // 0 <= estimate < 2^38 + 1: in range of i64.
    let mut q = unsafe { estimate.to_int_unchecked::<i64>() };
    let mut r = x - q * D;
    if r < 0 {
        q -= 1;
        r += D;
    } else if r >= D {
        q += 1;
        r -= D;
    }
    // r < 84_375, so (r << 10) | low bits < 86_400_000 < 2^27.
    (q as u64, ((r as u32) << 10) | (ms as u32 & 1023))
}

/// `ms_of_day / 3_600_000` for `ms_of_day < 86_400_000`, as a multiply and a shift
/// (`39_093_747 = ceil(2^47 / 3_600_000)`; exact on that range, see the tests). LLVM leaves
/// divisions by constants as divisions on wasm, which has no high-half multiply.
#[inline(always)]
pub fn hour_of_ms_of_day(ms_of_day: u32) -> u8 {
    ((ms_of_day as u64 * 39_093_747) >> 47) as u8
}

/// Day number `days` since 1970-01-01 (a Thursday) is a Saturday or a Sunday:
/// `(days + 4) % 7` in `{0, 6}`, 0 = Sunday.
///
/// `days < 2^38` (it is `u64 / 86_400_000`), and `2^24 % 7 == 1`, so `days` is congruent to
/// `(days >> 24) + (days & 0xff_ffff)` mod 7, a number below `2^25`, which is divided by 7
/// with a multiply and a shift (`38_347_923 = ceil(2^28 / 7)`, exact below `2^25`).
#[inline(always)]
pub fn is_weekend_day(days: u64) -> bool {
    let x = (days >> 24) + (days & 0xff_ffff) + 4;
    let weekday = x - 7 * ((x * 38_347_923) >> 28); // 0 = Sunday
    weekday == 0 || weekday == 6
}

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Width of one precision-5 cell in degrees, in both directions: 360 / 2^13 == 180 / 2^12 ==
/// 45 / 2^10, exact in binary.
const CELL_DEG: f64 = 45.0 / 1024.0;

/// Index of the cell of `x` on the grid `lo + j * CELL_DEG`, `j` in `0..=max`, such that
/// `x >= lo + j * CELL_DEG` and (unless `j == max`) `x < lo + (j + 1) * CELL_DEG`: exactly
/// the `j` of a bisection that sends `x >= mid` to the upper half (the bisection midpoints
/// are the grid lines, all exact in f64).
///
/// The estimate `(x - lo) / CELL_DEG` rounds (twice), so it can be one off near a grid line;
/// the comparisons against the exact grid lines fix that. Requires `lo <= x <= lo + (max + 1)
/// * CELL_DEG`.
#[inline(always)]
fn cell_index(x: f64, lo: f64, max: i32) -> i32 {
    // x >= lo, so x - lo rounds to a value >= 0, and t is in [0, max + 1] up to rounding:
    // in range of i32 (and not NaN, x being finite).
    let t = (x - lo) * (1.0 / CELL_DEG);
    let j = unsafe { t.to_int_unchecked::<i32>() }.min(max);
    // The grid lines around the estimate are exact: j * CELL_DEG is (j * 45 < 2^19) / 2^10, and
    // lo + j * CELL_DEG is a multiple of 2^-10 below 2^9 in magnitude. (Branches beat a
    // branch-free version here: the corrections are rare.)
    if x < lo + j as f64 * CELL_DEG {
        j - 1
    } else if j < max && x >= lo + (j + 1) as f64 * CELL_DEG {
        j + 1
    } else {
        j
    }
}

/// `EVEN[a << 2 | b]`: the base32 character whose 5 bits interleave the 3 bits of `a` and the
/// 2 bits of `b` as `a2 b1 a1 b0 a0`.
const EVEN: [u8; 32] = interleave_table(3, 2);
/// `ODD[a << 3 | b]`, `a` 2 bits, `b` 3 bits: `b2 a1 b1 a0 b0`.
const ODD: [u8; 32] = interleave_table(2, 3);

/// Table of the characters `c(x)` for 5-bit `x = a << n_b | b`, where the bits of `c` are, from
/// the top, the bits of `a` and `b` alternating and starting with `a` if `n_a == 3`, `b` if
/// `n_a == 2`.
const fn interleave_table(n_a: u32, n_b: u32) -> [u8; 32] {
    let mut t = [0u8; 32];
    let mut x = 0;
    while x < 32 {
        let a = (x >> n_b) as u32;
        let b = (x & ((1 << n_b) - 1)) as u32;
        let v = if n_a == 3 {
            ((a >> 2) & 1) << 4 | ((b >> 1) & 1) << 3 | ((a >> 1) & 1) << 2 | (b & 1) << 1 | (a & 1)
        } else {
            ((b >> 2) & 1) << 4 | ((a >> 1) & 1) << 3 | ((b >> 1) & 1) << 2 | (a & 1) << 1 | (b & 1)
        };
        t[x] = BASE32[v as usize];
        x += 1;
    }
    t
}

/// Geohash of precision 5 (what `pygeohash.encode(lat, lon, 5)` returns), for
/// `lat` in `[-90, 90]` and `lon` in `[-180, 180]`.
///
/// The bit string is 13 longitude bits `x12..x0` and 12 latitude bits `y11..y0` interleaved
/// longitude first: `x12 y11 x11 y10 x10 | y9 x9 y8 x8 y7 | x7 y6 x6 y5 x5 | y4 x4 y3 x3 y2 |
/// x2 y1 x1 y0 x0`, five characters that alternate 3+2 and 2+3 bits of (lon, lat).
#[inline(always)]
pub fn geohash5(lat: f64, lon: f64) -> [u8; 5] {
    let x = cell_index(lon, -180.0, (1 << 13) - 1) as usize;
    let y = cell_index(lat, -90.0, (1 << 12) - 1) as usize;
    // (every index is masked to 5 bits, so no bounds check is emitted)
    [
        EVEN[((x >> 10) & 7) << 2 | ((y >> 10) & 3)],
        ODD[((x >> 8) & 3) << 3 | ((y >> 7) & 7)],
        EVEN[((x >> 5) & 7) << 2 | ((y >> 5) & 3)],
        ODD[((x >> 3) & 3) << 3 | ((y >> 2) & 7)],
        EVEN[(x & 7) << 2 | (y & 3)],
    ]
}

/// Geohash by plain bisection (the textbook algorithm, as pygeohash runs it): the reference
/// that [`geohash5`] is tested against.
pub fn geohash_bisect(lat: f64, lon: f64, precision: usize) -> Vec<u8> {
    let (mut lat_lo, mut lat_hi) = (-90.0f64, 90.0f64);
    let (mut lon_lo, mut lon_hi) = (-180.0f64, 180.0f64);
    let mut out = Vec::with_capacity(precision);
    let mut even = true;
    for _ in 0..precision {
        let mut ch = 0usize;
        for _ in 0..5 {
            ch <<= 1;
            if even {
                let mid = (lon_lo + lon_hi) * 0.5;
                if lon >= mid {
                    ch |= 1;
                    lon_lo = mid;
                } else {
                    lon_hi = mid;
                }
            } else {
                let mid = (lat_lo + lat_hi) * 0.5;
                if lat >= mid {
                    ch |= 1;
                    lat_lo = mid;
                } else {
                    lat_hi = mid;
                }
            }
            even = !even;
        }
        out.push(BASE32[ch]);
    }
    out
}

#[cfg(test)]
mod tests;
