//! Windowed predictive-maintenance features from one window of 256 accelerometer samples.
//!
//! - `rms = sqrt(sum x^2 / N)`;
//! - `peak_to_peak = max x - min x`;
//! - `crest_factor = max |x| / rms` (0 when `rms == 0`);
//! - `kurtosis = m4 / m2^2` about the mean, non-excess (0 when `m2 == 0`);
//! - `band_energy[b] = sum |X_k|^2 / N` over the non-DC bins `k = 1..=N/2` split into four
//!   contiguous bands of 32 bins (`1..=32`, `33..=64`, `65..=96`, `97..=128`), `X` the DFT of
//!   the window computed by a radix-2 real-input FFT;
//! - `dominant_hz = k * sample_rate_hz / N` for the non-DC bin `k` of largest `|X_k|`
//!   (the lowest such `k` on ties; 0 when every non-DC bin is 0).
//!
//! Everything is accumulated in f64 and rounded to f32 once at the end.
//!
//! Row status: a NaN or infinite sample or sample rate gives `NON_FINITE_INPUT`; a sample rate
//! `<= 0` gives `INVALID_INPUT`; an output that does not fit in f32 (samples near the f32 range
//! limit) gives `FEATURE_ERROR`.
//!
//! Determinism: the native and wasm builds give bit-identical outputs. The code uses only
//! `+ - * /`, `sqrt`, `abs` and comparisons on f64 (no libm call, no fused multiply-add), and
//! the FFT twiddle factors come from [`flfeature::math::sin_cos_turns`], a polynomial
//! evaluation with exact range reduction, instead of libm's `sin`/`cos`.

use flfeature::math::sin_cos_turns;
use flfeature::{Lazy, RowStatus};

/// Samples per window.
pub const N: usize = 256;
/// Size of the complex FFT that the real-input FFT runs.
const M: usize = N / 2;
/// Non-DC bins per band.
const BAND: usize = M / 4;

flfeature::feature! {
    inputs {
        samples: [f32; 256] [unit = "g", description = "One window of 256 accelerometer samples, oldest first"],
        sample_rate_hz: f32 [unit = "Hz", description = "Sampling rate of the window, > 0"],
    }
    outputs {
        rms: f32 [unit = "g", description = "Root mean square of the samples"],
        peak_to_peak: f32 [unit = "g", description = "Largest minus smallest sample"],
        crest_factor: f32 [unit = "", description = "Largest absolute sample divided by the RMS (0 when the RMS is 0)"],
        kurtosis: f32 [unit = "", description = "Fourth central moment over the squared variance, non-excess (0 for a constant window)"],
        band_energy: [f32; 4] [unit = "g^2", description = "Sum of |X_k|^2 / N over the non-DC DFT bins k = 1..=128 in four bands of 32 bins"],
        dominant_hz: f32 [unit = "Hz", description = "Frequency k * sample_rate_hz / N of the largest non-DC DFT bin (0 if all are 0)"],
    }
    row = vibration_row;
}

/// `W[k] = exp(-2 pi i k / N) = (cos, -sin)` of `k / N` turns, `k < N / 2`.
static TWIDDLES: Lazy<[[f64; 2]; M]> = Lazy::new(|| {
    let mut w = [[0.0; 2]; M];
    for (k, t) in w.iter_mut().enumerate() {
        let (s, c) = sin_cos_turns(k as u64, N as u64);
        *t = [c, -s];
    }
    w
});

/// Bit reversal of 7-bit indices (the permutation of a 128-point radix-2 FFT).
const BIT_REVERSE: [u8; M] = {
    let mut t = [0u8; M];
    let mut i = 0;
    while i < M {
        let mut r = 0;
        let mut b = 0;
        while b < 7 {
            r |= ((i >> b) & 1) << (6 - b);
            b += 1;
        }
        t[i] = r as u8;
        i += 1;
    }
    t
};

/// In-place iterative radix-2 decimation-in-time FFT of 128 points, forward
/// (`Z_k = sum z_n exp(-2 pi i n k / 128)`).
fn fft128(re: &mut [f64; M], im: &mut [f64; M], w: &[[f64; 2]; M]) {
    for i in 0..M {
        let j = BIT_REVERSE[i] as usize;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= M {
        let half = len / 2;
        // W_len^k = W_N^(k * N / len)
        let step = N / len;
        let mut start = 0;
        while start < M {
            for k in 0..half {
                let [wr, wi] = w[k * step];
                let a = start + k;
                let b = a + half;
                let tr = re[b] * wr - im[b] * wi;
                let ti = re[b] * wi + im[b] * wr;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
            start += len;
        }
        len *= 2;
    }
}

/// `|X_k|^2` for `k = 0..=N/2` of the real window `x`, through one 128-point complex FFT of
/// `z_n = x_2n + i x_2n+1` and the usual split:
/// `X_k = E_k + W_N^k O_k`, `E_k = (Z_k + conj Z_(M-k)) / 2`, `O_k = -i (Z_k - conj Z_(M-k)) / 2`.
pub fn power_spectrum(x: &[f64; N]) -> [f64; M + 1] {
    let w = TWIDDLES.get();
    let mut re = [0.0f64; M];
    let mut im = [0.0f64; M];
    for n in 0..M {
        re[n] = x[2 * n];
        im[n] = x[2 * n + 1];
    }
    fft128(&mut re, &mut im, w);
    let mut p = [0.0f64; M + 1];
    for (k, pk) in p.iter_mut().enumerate() {
        let (a, b) = (re[k % M], im[k % M]);
        let (c, d) = (re[(M - k) % M], im[(M - k) % M]);
        let (er, ei) = ((a + c) * 0.5, (b - d) * 0.5);
        let (or, oi) = ((b + d) * 0.5, (c - a) * 0.5);
        // W_N^k; W_N^(N/2) = -1
        let [wr, wi] = if k < M { w[k] } else { [-1.0, 0.0] };
        let xr = er + (or * wr - oi * wi);
        let xi = ei + (or * wi + oi * wr);
        *pk = xr * xr + xi * xi;
    }
    p
}

/// All outputs of one window, in f64 (before the status checks and the rounding to f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features {
    /// RMS.
    pub rms: f64,
    /// max - min.
    pub peak_to_peak: f64,
    /// max |x| / rms.
    pub crest_factor: f64,
    /// m4 / m2^2.
    pub kurtosis: f64,
    /// Band energies.
    pub band_energy: [f64; 4],
    /// Index of the dominant non-DC bin (0 if none).
    pub dominant_bin: usize,
}

/// The features of a window of finite samples.
pub fn features(x: &[f64; N]) -> Features {
    let n = N as f64;
    let mut sum = 0.0;
    let mut sum_sq = 0.0;
    let mut min = x[0];
    let mut max = x[0];
    for &v in x.iter() {
        sum += v;
        sum_sq += v * v;
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let mean = sum / n;
    let rms = (sum_sq / n).sqrt();
    let peak = if max.abs() > min.abs() { max.abs() } else { min.abs() };
    let mut m2 = 0.0;
    let mut m4 = 0.0;
    for &v in x.iter() {
        let d = v - mean;
        let d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
    }
    m2 /= n;
    m4 /= n;

    let p = power_spectrum(x);
    let mut band_energy = [0.0f64; 4];
    let mut dominant_bin = 0;
    let mut dominant_power = 0.0;
    for k in 1..=M {
        band_energy[(k - 1) / BAND] += p[k] / n;
        if p[k] > dominant_power {
            dominant_power = p[k];
            dominant_bin = k;
        }
    }
    Features {
        rms,
        peak_to_peak: max - min,
        crest_factor: if rms == 0.0 { 0.0 } else { peak / rms },
        kurtosis: if m2 == 0.0 { 0.0 } else { m4 / (m2 * m2) },
        band_energy,
        dominant_bin,
    }
}

/// The per-row feature function.
pub fn vibration_row(i: &Inputs, o: &mut Outputs) -> RowStatus {
    let sr = i.sample_rate_hz;
    if !sr.is_finite() || !i.samples.iter().all(|v| v.is_finite()) {
        return RowStatus::NonFiniteInput;
    }
    if sr <= 0.0 {
        return RowStatus::InvalidInput;
    }
    let mut x = [0.0f64; N];
    for (d, s) in x.iter_mut().zip(i.samples.iter()) {
        *d = *s as f64;
    }
    let f = features(&x);
    o.rms = f.rms as f32;
    o.peak_to_peak = f.peak_to_peak as f32;
    o.crest_factor = f.crest_factor as f32;
    o.kurtosis = f.kurtosis as f32;
    for (d, s) in o.band_energy.iter_mut().zip(f.band_energy.iter()) {
        *d = *s as f32;
    }
    o.dominant_hz = (f.dominant_bin as f64 * sr as f64 / N as f64) as f32;
    // Samples near the f32 limit can give an energy or a range beyond it.
    let all_finite = o.rms.is_finite()
        && o.peak_to_peak.is_finite()
        && o.crest_factor.is_finite()
        && o.kurtosis.is_finite()
        && o.band_energy.iter().all(|v| v.is_finite())
        && o.dominant_hz.is_finite();
    if !all_finite {
        return RowStatus::FeatureError;
    }
    RowStatus::Ok
}

#[cfg(test)]
mod tests;
