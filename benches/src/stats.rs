//! Medians, latency histograms and the number formats of the tables.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The median of `xs` (the mean of the middle two for an even count); NaN if empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if !n.is_multiple_of(2) { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A latency histogram in nanoseconds, 1 ns to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).unwrap_or_else(|e| {
        // The bounds are constants that hdrhistogram accepts; this cannot fail.
        unreachable!("hdrhistogram bounds: {e}")
    })
}

/// Records one operation's latency (saturating at the histogram's top).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// The latency at quantile `q` in microseconds.
pub fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// A rate with a thousands separator, no decimals: `1,234,567`.
pub fn fmt_rate(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio with two decimals and a trailing `x`: `0.93x`.
pub fn fmt_ratio(x: f64) -> String {
    if x.is_finite() { format!("{x:.2}x") } else { "n/a".into() }
}

/// Milliseconds with a precision that suits the size: `0.042`, `3.10`, `412`.
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "n/a".into()
    } else if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

/// Microseconds with a precision that suits the size.
pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "n/a".into()
    } else if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_rate(1_234_567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_ratio(0.934), "0.93x");
        assert_eq!(fmt_ms(0.0421), "0.042");
        assert_eq!(fmt_ms(412.3), "412");
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = latency_histogram();
        for us in 1..=100u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let p50 = quantile_us(&h, 0.5);
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!(quantile_us(&h, 0.99) >= 98.0);
    }
}
