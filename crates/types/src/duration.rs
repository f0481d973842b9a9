//! Go-style duration strings as Consul accepts them (`time.ParseDuration`): `"300ms"`, `"1.5h"`,
//! `"2h45m"`, `"0.001s"`, `"-1s"`. A bare number is not a duration in Go; Consul's HTTP `wait`
//! parameter rejects it, while some config fields accept integers (seconds or nanoseconds) and handle
//! that themselves.

use std::time::Duration;

/// Parses a Go duration. Negative durations are rejected (`Err`) since no Consul field wants one.
pub fn parse(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("time: invalid duration {orig:?}"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(neg) = s.strip_prefix('-') {
        if neg.chars().all(|c| c == '0' || c == '.') {
            return Ok(Duration::ZERO);
        }
        return Err(format!("negative duration {orig:?}"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!("time: invalid duration {orig:?}"));
        }
        let num: f64 = s[start..i].parse().map_err(|_| format!("time: invalid duration {orig:?}"))?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = &s[ustart..i];
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        total += num * mult;
    }
    if !total.is_finite() || total > 9.2e9 {
        return Err(format!("time: invalid duration {orig:?}"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats like Go's `Duration.String()` (`"15s"`, `"1m30s"`, `"1.5s"`, `"10ms"`, `"0s"`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_float(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_float(nanos as f64 / 1e6));
    }
    let total_s = d.as_secs();
    let frac = d.subsec_nanos();
    let h = total_s / 3600;
    let m = (total_s % 3600) / 60;
    let s = total_s % 60;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        out.push_str(&format!("{}s", trim_float(s as f64 + frac as f64 / 1e9)));
    }
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("0.001s").unwrap(), Duration::from_millis(1));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert!(parse("10").is_err());
        assert!(parse("abc").is_err());
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
        assert!(parse("5x").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(15)), "15s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format(Duration::from_millis(10)), "10ms");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
