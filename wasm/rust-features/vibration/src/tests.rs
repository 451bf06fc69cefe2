use super::*;

fn input(samples: [f32; N], sample_rate_hz: f32) -> Inputs {
    Inputs { samples, sample_rate_hz }
}

fn run(i: &Inputs) -> (RowStatus, Outputs) {
    let mut o = Outputs::ZERO;
    let st = vibration_row(i, &mut o);
    (st, o)
}

/// `amp * sin(2 pi k n / N)` with the crate's own deterministic sine.
fn sine(k: usize, amp: f64) -> [f32; N] {
    let mut x = [0.0f32; N];
    for (n, v) in x.iter_mut().enumerate() {
        *v = (amp * sin_cos_turns((k * n) as u64, N as u64).0) as f32;
    }
    x
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn twiddles_are_unit_roots() {
    let w = TWIDDLES.get();
    assert_eq!(w[0], [1.0, -0.0]);
    assert_eq!(w[64], [0.0, -1.0]);
    assert_eq!(w[32][0], -w[32][1]);
    for (k, t) in w.iter().enumerate() {
        let a = -2.0 * core::f64::consts::PI * k as f64 / N as f64;
        assert!((t[0] - a.cos()).abs() < 1e-15 && (t[1] - a.sin()).abs() < 1e-15, "k {}", k);
    }
}

#[test]
fn fft_matches_direct_dft() {
    let mut rng = Rng(42);
    let mut x = [0.0f64; N];
    for v in x.iter_mut() {
        *v = rng.unit() * 2.0 - 1.0;
    }
    let p = power_spectrum(&x);
    for (k, pk) in p.iter().enumerate() {
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (n, v) in x.iter().enumerate() {
            let a = -2.0 * core::f64::consts::PI * ((k * n) % N) as f64 / N as f64;
            re += v * a.cos();
            im += v * a.sin();
        }
        let direct = re * re + im * im;
        assert!((pk - direct).abs() <= 1e-10 * (1.0 + direct), "bin {}: {} vs {}", k, pk, direct);
    }
    // Parseval: sum over all N bins of |X_k|^2 == N sum x^2 (bins N/2+1.. mirror 1..N/2-1)
    let total = p[0] + p[M] + 2.0 * p[1..M].iter().sum::<f64>();
    let energy: f64 = x.iter().map(|v| v * v).sum::<f64>() * N as f64;
    assert!((total - energy).abs() < 1e-10 * energy);
}

#[test]
fn sine_at_a_bin_frequency() {
    for &(k, amp) in &[(1usize, 1.0f64), (5, 2.0), (32, 0.5), (33, 1.0), (64, 1.5), (100, 3.0), (127, 1.0)] {
        let (st, o) = run(&input(sine(k, amp), 1000.0));
        assert_eq!(st, RowStatus::Ok);
        // dominant frequency exactly k * fs / N
        assert_eq!(o.dominant_hz, (k as f64 * 1000.0 / 256.0) as f32, "k {}", k);
        // all energy in the band of bin k: |X_k|^2 / N = (amp N / 2)^2 / N = amp^2 N / 4
        let band = (k - 1) / 32;
        let expected = amp * amp * N as f64 / 4.0;
        for b in 0..4 {
            if b == band {
                assert!((o.band_energy[b] as f64 - expected).abs() < 1e-4 * expected, "k {} band {}: {}", k, b, o.band_energy[b]);
            } else {
                assert!((o.band_energy[b] as f64) < 1e-9 * expected, "k {} band {}: {}", k, b, o.band_energy[b]);
            }
        }
        // rms of a sine: amp / sqrt 2; kurtosis 1.5 when a period has at least 8 samples
        // (k = 64 samples 0, 1, 0, -1: m4 / m2^2 = (1/2) / (1/4) = 2)
        assert!((o.rms as f64 - amp / 2f64.sqrt()).abs() < 1e-6 * amp, "k {} rms {}", k, o.rms);
        let kurtosis = if k == 64 { 2.0 } else { 1.5 };
        assert!((o.kurtosis - kurtosis).abs() < 1e-5, "k {} kurtosis {}", k, o.kurtosis);
    }
    let (_, o) = run(&input(sine(1, 1.0), 256.0));
    assert_eq!(o.dominant_hz, 1.0);
    assert!((o.crest_factor - core::f32::consts::SQRT_2).abs() < 1e-6);
    assert!((o.peak_to_peak - 2.0).abs() < 1e-6);
}

#[test]
fn nyquist_bin_is_band_four() {
    let mut x = [0.0f32; N];
    for (n, v) in x.iter_mut().enumerate() {
        *v = if n % 2 == 0 { 1.0 } else { -1.0 };
    }
    let (st, o) = run(&input(x, 512.0));
    assert_eq!(st, RowStatus::Ok);
    // X_128 = N, |X|^2 / N = N
    assert_eq!(o.band_energy, [0.0, 0.0, 0.0, 256.0]);
    assert_eq!(o.dominant_hz, 256.0);
    assert_eq!((o.rms, o.peak_to_peak, o.crest_factor, o.kurtosis), (1.0, 2.0, 1.0, 1.0));
}

#[test]
fn constant_signal() {
    for &c in &[0.0f32, 1.0, -2.5, 1e-3, 3e5] {
        let (st, o) = run(&input([c; N], 100.0));
        assert_eq!(st, RowStatus::Ok);
        assert_eq!(o.rms, c.abs(), "c {}", c);
        assert_eq!(o.peak_to_peak, 0.0);
        assert_eq!(o.kurtosis, 0.0);
        assert_eq!(o.crest_factor, if c == 0.0 { 0.0 } else { 1.0 });
        assert_eq!(o.band_energy, [0.0; 4]);
        assert_eq!(o.dominant_hz, 0.0);
    }
}

#[test]
fn statuses() {
    let ok = sine(3, 1.0);
    assert_eq!(run(&input(ok, 100.0)).0, RowStatus::Ok);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = ok;
        x[200] = bad;
        assert_eq!(run(&input(x, 100.0)).0, RowStatus::NonFiniteInput);
        assert_eq!(run(&input(ok, bad)).0, RowStatus::NonFiniteInput);
        // non-finite wins over an invalid rate
        assert_eq!(run(&input(x, -1.0)).0, RowStatus::NonFiniteInput);
    }
    assert_eq!(run(&input(ok, 0.0)).0, RowStatus::InvalidInput);
    assert_eq!(run(&input(ok, -0.0)).0, RowStatus::InvalidInput);
    assert_eq!(run(&input(ok, -100.0)).0, RowStatus::InvalidInput);
    // outputs beyond f32: peak-to-peak of +-3e38, energy of 1e30-sized samples
    let mut x = [0.0f32; N];
    x[0] = 3e38;
    x[1] = -3e38;
    assert_eq!(run(&input(x, 100.0)).0, RowStatus::FeatureError);
    assert_eq!(run(&input(sine(7, 1e30), 100.0)).0, RowStatus::FeatureError);
    // the largest finite window that still fits
    assert_eq!(run(&input(sine(7, 1e15), 100.0)).0, RowStatus::Ok);
}

#[test]
fn through_the_abi() {
    let rows = vec![
        input(sine(10, 1.0), 1000.0),
        input([f32::NAN; N], 1000.0),
        input([2.0; N], 50.0),
        input(sine(10, 1.0), 0.0),
    ];
    let out = extract_rows(&rows).unwrap();
    assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 2, 0, 1]);
    assert_eq!(out[0].1, run(&rows[0]).1);
    assert_eq!(out[0].1.dominant_hz, (10.0f64 * 1000.0 / 256.0) as f32);
    assert_eq!(out[1].1, Outputs::ZERO);
    assert_eq!(out[2].1.rms, 2.0);
    assert_eq!(out[3].1, Outputs::ZERO);
}

#[test]
fn manifest_columns() {
    let m = manifest_json();
    assert!(m.starts_with(r#"{"abi_version":1,"name":"vibration","version":"1.0.0","#));
    assert!(m.contains(r#"{"name":"samples","dtype":"f32","shape":[256],"unit":"g","#));
    assert!(m.contains(r#"{"name":"band_energy","dtype":"f32","shape":[4],"unit":"g^2","#));
}
