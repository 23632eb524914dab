//! Configuration units: durations (`"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"`) and
//! sizes (`"16k"`, `"8m"`, `"1g"`, powers of 1024 as nginx counts them).
//!
//! The messages returned on error are meant to follow `FILE:LINE: key: ` as
//! they are, so they quote the text and say what would be accepted.

use std::time::Duration;

/// Parses a duration written as whole digits followed by one unit.
///
/// A unit is required (even for zero) so that `"30"` can never be read as
/// seconds by one person and milliseconds by another.
pub fn duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = split_number(s);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad_duration(s)),
    };
    let n = whole_number(digits).ok_or_else(|| bad_duration(s))?;
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{s}\" is too long"))
}

/// Parses a size string with a unit `k`, `m` or `g` (either case) into bytes.
///
/// Plain byte counts are written as TOML integers, which the caller reads
/// itself; a string without a unit is refused so that `"16"` is not
/// mistaken for 16 kilobytes.
pub fn size(s: &str) -> Result<u64, String> {
    let (digits, unit) = split_number(s);
    let shift = match unit {
        // Zero needs no unit (`client_body_buffer = "0"`).
        "" if digits == "0" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return Err(bad_size(s)),
    };
    let n = whole_number(digits).ok_or_else(|| bad_size(s))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

/// Splits `"250ms"` into `("250", "ms")`; the unit is everything after the
/// leading ASCII digits.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn whole_number(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.parse().ok()
}

fn bad_duration(s: &str) -> String {
    format!(
        "\"{s}\" is not a duration: write whole digits and a unit ms, s, m, h or d, like \"10s\""
    )
}

fn bad_size(s: &str) -> String {
    format!("\"{s}\" is not a size: write bytes as an integer, or digits and a unit k, m or g, like \"16k\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations() {
        for s in [
            "", "10", "-5s", "s", "1.5s", "10 s", " 10s", "10S", "10sec", "ten", "1h30m", "+1s",
        ] {
            assert!(duration(s).is_err(), "{s:?} was accepted");
        }
        assert!(duration("99999999999999999999d").is_err());
        assert!(duration("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("16k"), Ok(16 * 1024));
        assert_eq!(size("8m"), Ok(8 << 20));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("0k"), Ok(0));
        assert_eq!(size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes() {
        for s in ["", "16", "-1k", "k", "1.5m", "16 k", "16kb", "1t", "big"] {
            assert!(size(s).is_err(), "{s:?} was accepted");
        }
        assert!(size("99999999999999999g")
            .unwrap_err()
            .contains("too large"));
    }
}
