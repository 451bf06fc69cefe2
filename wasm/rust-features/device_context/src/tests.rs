use super::*;

fn row(timestamp_ms: u64, lat: f64, lon: f64, battery: f32) -> Inputs {
    Inputs { timestamp_ms, location_lat: lat, location_lon: lon, battery_level: battery }
}

fn run(r: Inputs) -> (RowStatus, Outputs) {
    let mut o = Outputs::ZERO;
    let st = device_context_row(&r, &mut o);
    (st, o)
}

fn hash(lat: f64, lon: f64) -> String {
    String::from_utf8(geohash5(lat, lon).to_vec()).unwrap()
}

#[test]
fn geohash_known_values() {
    // pygeohash 3.5.1
    assert_eq!(hash(0.0, 0.0), "s0000");
    assert_eq!(hash(90.0, 180.0), "zzzzz");
    assert_eq!(hash(-90.0, -180.0), "00000");
    assert_eq!(hash(45.0, 0.0), "u0000");
    // the classic examples (Wikipedia: u4pruydqqvj, ezs42)
    assert_eq!(hash(57.64911, 10.40744), "u4pru");
    assert_eq!(hash(42.6, -5.6), "ezs42");
    // -0.0 >= 0.0, like the bisection
    assert_eq!(hash(-0.0, -0.0), "s0000");
    assert_eq!(hash(-90.0, 180.0), "pbpbp");
    assert_eq!(hash(90.0, -180.0), "bpbpb");
}

/// xorshift64*: deterministic pseudo-random numbers without dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        return f64::from_bits(1);
    }
    if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

#[test]
fn geohash_grid_matches_bisection_on_cell_edges() {
    let mut lons = Vec::new();
    for j in 0..=(1u32 << 13) {
        let e = -180.0 + j as f64 * CELL_DEG;
        lons.extend_from_slice(&[e, next_up(e), next_down(e)]);
    }
    let mut lats = Vec::new();
    for j in 0..=(1u32 << 12) {
        let e = -90.0 + j as f64 * CELL_DEG;
        lats.extend_from_slice(&[e, next_up(e), next_down(e)]);
    }
    let lons: Vec<f64> = lons.into_iter().filter(|x| (-180.0..=180.0).contains(x)).collect();
    let lats: Vec<f64> = lats.into_iter().filter(|x| (-90.0..=90.0).contains(x)).collect();
    for (k, &lon) in lons.iter().enumerate() {
        let lat = lats[(k * 7919) % lats.len()];
        assert_eq!(geohash5(lat, lon).to_vec(), geohash_bisect(lat, lon, 5), "lat {} lon {}", lat, lon);
    }
    for (k, &lat) in lats.iter().enumerate() {
        let lon = lons[(k * 104_729) % lons.len()];
        assert_eq!(geohash5(lat, lon).to_vec(), geohash_bisect(lat, lon, 5), "lat {} lon {}", lat, lon);
    }
}

#[test]
fn geohash_grid_matches_bisection_random() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        let lat = -90.0 + 180.0 * rng.unit();
        let lon = -180.0 + 360.0 * rng.unit();
        assert_eq!(geohash5(lat, lon).to_vec(), geohash_bisect(lat, lon, 5), "lat {} lon {}", lat, lon);
    }
}

#[test]
fn time_features() {
    let cases: &[(u64, u8, u8)] = &[
        (0, 0, 0),                     // 1970-01-01 00:00 Thursday
        (3_599_999, 0, 0),             // 00:59:59.999
        (3_600_000, 1, 0),             // 01:00
        (86_399_999, 23, 0),           // Thu 23:59:59.999
        (86_400_000, 0, 0),            // Fri 1970-01-02
        (172_799_999, 23, 0),          // Fri 23:59:59.999
        (172_800_000, 0, 1),           // Sat 1970-01-03
        (259_200_000, 0, 1),           // Sun 1970-01-04
        (345_599_999, 23, 1),          // Sun 23:59:59.999
        (345_600_000, 0, 0),           // Mon 1970-01-05
        (1_704_063_600_000, 23, 1),    // 2023-12-31 23:00 Sunday
        (1_704_067_200_000, 0, 0),     // 2024-01-01 00:00 Monday
        (1_718_454_896_000, 12, 1),    // 2024-06-15 12:34:56 Saturday
        (u64::MAX, 14, 0),             // about 584.5 million years on: a Wednesday
    ];
    for &(ms, hour, weekend) in cases {
        let (st, o) = run(row(ms, 0.0, 0.0, 0.5));
        assert_eq!(st, RowStatus::Ok);
        assert_eq!((o.hour_of_day, o.is_weekend), (hour, weekend), "ms {}", ms);
        assert_eq!(o.hour_of_day as u64, (ms / 3_600_000) % 24);
        let dow = (ms / 86_400_000 + 4) % 7;
        assert_eq!(o.is_weekend == 1, dow == 0 || dow == 6);
    }
}

#[test]
fn battery_bucket() {
    let cases: &[(f32, u8)] =
        &[(0.0, 0), (-0.0, 0), (0.05, 0), (0.0999, 0), (0.1, 1), (0.3, 3), (0.7, 7), (0.99, 9), (0.9999999, 9), (1.0, 10)];
    for &(b, bucket) in cases {
        let (st, o) = run(row(0, 0.0, 0.0, b));
        assert_eq!(st, RowStatus::Ok);
        assert_eq!(o.battery_bucket, bucket, "battery {}", b);
    }
    // f32 arithmetic, not f64: 0.7f32 as f64 * 10 == 6.99999988...
    assert_eq!((0.7f32 as f64 * 10.0) as u8, 6);
}

#[test]
fn statuses() {
    let ok = row(0, 10.0, 20.0, 0.5);
    assert_eq!(run(ok).0, RowStatus::Ok);
    let bad = |lat: f64, lon: f64, b: f32| run(row(0, lat, lon, b)).0;
    assert_eq!(bad(f64::NAN, 0.0, 0.5), RowStatus::NonFiniteInput);
    assert_eq!(bad(0.0, f64::INFINITY, 0.5), RowStatus::NonFiniteInput);
    assert_eq!(bad(0.0, f64::NEG_INFINITY, 0.5), RowStatus::NonFiniteInput);
    assert_eq!(bad(0.0, 0.0, f32::NAN), RowStatus::NonFiniteInput);
    assert_eq!(bad(f64::INFINITY, 0.0, 0.5), RowStatus::NonFiniteInput);
    // non-finite wins over out-of-range
    assert_eq!(bad(91.0, 0.0, f32::INFINITY), RowStatus::NonFiniteInput);
    assert_eq!(bad(90.000_000_000_000_01, 0.0, 0.5), RowStatus::InvalidInput);
    assert_eq!(bad(next_up(90.0), 0.0, 0.5), RowStatus::InvalidInput);
    assert_eq!(bad(next_down(-90.0), 0.0, 0.5), RowStatus::InvalidInput);
    assert_eq!(bad(0.0, next_up(180.0), 0.5), RowStatus::InvalidInput);
    assert_eq!(bad(0.0, -180.5, 0.5), RowStatus::InvalidInput);
    assert_eq!(bad(0.0, 0.0, 1.000_001), RowStatus::InvalidInput);
    assert_eq!(bad(0.0, 0.0, -1e-30), RowStatus::InvalidInput);
    assert_eq!(bad(90.0, 180.0, 1.0), RowStatus::Ok);
    assert_eq!(bad(-90.0, -180.0, 0.0), RowStatus::Ok);
}

#[test]
fn through_the_abi() {
    let rows = vec![
        row(1_718_454_896_000, 57.64911, 10.40744, 0.7),
        row(0, f64::NAN, 0.0, 0.5),
        row(172_800_000, 42.6, -5.6, 1.0),
        row(5, 0.0, 200.0, 0.5),
    ];
    let out = extract_rows(&rows).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].0, 0);
    assert_eq!(
        out[0].1,
        Outputs { hour_of_day: 12, is_weekend: 1, battery_bucket: 7, location_hash: Ascii(*b"u4pru") }
    );
    assert_eq!((out[1].0, out[1].1), (2, Outputs::ZERO));
    assert_eq!(
        out[2],
        (0, Outputs { hour_of_day: 0, is_weekend: 1, battery_bucket: 10, location_hash: Ascii(*b"ezs42") })
    );
    assert_eq!((out[3].0, out[3].1), (1, Outputs::ZERO));
}

#[test]
fn manifest() {
    assert_eq!(
        manifest_json(),
        concat!(
            r#"{"abi_version":1,"name":"device_context","version":"1.0.0","#,
            r#""description":"Time-of-day, weekend, battery and location features from device context","#,
            r#""inputs":["#,
            r#"{"name":"timestamp_ms","dtype":"u64","shape":[],"unit":"ms","description":"Unix time in milliseconds, UTC"},"#,
            r#"{"name":"location_lat","dtype":"f64","shape":[],"unit":"deg","description":"Latitude, WGS84, in [-90, 90]"},"#,
            r#"{"name":"location_lon","dtype":"f64","shape":[],"unit":"deg","description":"Longitude, WGS84, in [-180, 180]"},"#,
            r#"{"name":"battery_level","dtype":"f32","shape":[],"unit":"fraction","description":"Battery charge, in [0, 1]"}],"#,
            r#""outputs":["#,
            r#"{"name":"hour_of_day","dtype":"u8","shape":[],"unit":"h","description":"Hour of day, UTC, 0..=23"},"#,
            r#"{"name":"is_weekend","dtype":"u8","shape":[],"unit":"","description":"1 on Saturday and Sunday (UTC), else 0"},"#,
            r#"{"name":"battery_bucket","dtype":"u8","shape":[],"unit":"","description":"floor(battery_level * 10) in f32, 0..=10"},"#,
            r#"{"name":"location_hash","dtype":"ascii","shape":[5],"unit":"","description":"Geohash of the location, precision 5 (about 4.9 km x 4.9 km)"}]}"#
        )
    );
}

#[test]
fn day_split_is_exact() {
    let day = 86_400_000u64;
    let mut xs = vec![0, 1, 1023, 1024, day - 1, day, day + 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1];
    for k in [1u64, 2, 3, 1000, 20_000, 1 << 20, 1 << 30, 1 << 37, u64::MAX / day] {
        for d in [-2i64, -1, 0, 1, 2, 1023, 1024, 1025] {
            xs.push((k * day).wrapping_add(d as u64));
        }
    }
    let mut rng = Rng(12345);
    for _ in 0..200_000 {
        let v = rng.next();
        xs.push(v);
        xs.push(v >> (v % 64));
    }
    for &ms in &xs {
        let want = (ms / day, (ms % day) as u32);
        assert_eq!(split_days_f64(ms), want, "ms {}", ms);
        assert_eq!(split_days(ms), want, "ms {}", ms);
        let dow = (ms / day + 4) % 7;
        assert_eq!(is_weekend_day(ms / day), dow == 0 || dow == 6, "ms {}", ms);
    }
}

#[test]
fn hour_and_weekday_by_multiplication_are_exact() {
    // Both sides are monotone step functions of x, so agreeing on both sides of every step
    // means agreeing everywhere.
    let h = 3_600_000u32;
    for k in 0..24u32 {
        for x in [k * h, k * h + 1, (k + 1) * h - 1] {
            assert_eq!(hour_of_ms_of_day(x), k as u8, "x {}", x);
        }
    }
    let x_max = 1u64 << 25;
    for k in 0..=(x_max / 7) {
        for x in [7 * k, 7 * k + 6] {
            if x < x_max {
                assert_eq!((x * 38_347_923) >> 28, k, "x {}", x);
            }
        }
    }
    // the congruence and the whole range of days
    let max_days = u64::MAX / 86_400_000;
    let mut rng = Rng(99);
    let mut days: Vec<u64> = (0..100_000).map(|_| rng.next() % (max_days + 1)).collect();
    days.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, max_days, max_days - 1]);
    for d in days {
        let w = (d + 4) % 7;
        assert_eq!(is_weekend_day(d), w == 0 || w == 6, "day {}", d);
    }
}
