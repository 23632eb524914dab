//! A certificate's validity period, read straight from its DER.
//!
//! `--check`, the start and every reload warn about a certificate that has
//! expired or is not valid yet (ringside still serves it, as nginx does). The
//! walk goes only as deep as RFC 5280 §4.1 needs to reach the dates:
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     version [0] EXPLICIT OPTIONAL, serialNumber INTEGER,
//!     signature AlgorithmIdentifier (SEQUENCE), issuer Name (SEQUENCE),
//!     validity SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }
//! Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"
//! ```
#![forbid(unsafe_code)]

use std::fmt;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A certificate's `notBefore` and `notAfter`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Time,
    pub not_after: Time,
}

/// A UTC instant with second resolution, as seconds since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Time {
    pub fn now() -> Time {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        // A clock before 1970 is broken; reading it as 1970 only makes
        // every certificate look "not valid yet", which the warning says.
        Time(since.map_or(0, |d| d.as_secs() as i64))
    }
}

/// `2020-01-31 23:59:59 UTC`.
impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, secs) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
    }
}

/// The validity of the DER certificate `der`, or `None` when it is not one.
pub fn of(der: &[u8]) -> Option<Validity> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// One DER element: (tag, contents, what follows). Definite lengths only,
/// as DER requires, up to 4 length bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = match first {
        0..=0x7f => first as usize,
        0x81..=0x84 => {
            let n = (first & 0x7f) as usize;
            let (bytes, rest) = (input.get(..n)?, &input[n..]);
            input = rest;
            bytes.iter().fold(0usize, |acc, &b| acc << 8 | b as usize)
        }
        _ => return None,
    };
    Some((tag, input.get(..len)?, &input[len..]))
}

fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    (tag == want).then_some((contents, rest))
}

/// A `Time`: UTCTime years 50–99 are 1950–1999, 00–49 are 2000–2049
/// (RFC 5280 §4.1.2.5.1); both forms end in `Z` and carry seconds.
fn time(input: &[u8]) -> Option<(Time, &[u8])> {
    let (tag, text, rest) = tlv(input)?;
    let (year, text) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if text[10] != b'Z' {
        return None;
    }
    let [month, day, hh, mm, ss] = [0, 2, 4, 6, 8].map(|i| digits(&text[i..i + 2]));
    let (month, day, hh, mm, ss) = (month?, day?, hh?, mm?, ss?);
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hh < 24
        && mm < 60
        && ss < 60;
    if !valid {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some((Time(secs), rest))
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, <http://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of `days_from_civil`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes years 1950-2049 as UTCTime and others as GeneralizedTime.
        let v = of(&cert((1999, 12, 31), (2060, 2, 29))).unwrap();
        assert_eq!(v.not_before.to_string(), "1999-12-31 00:00:00 UTC");
        assert_eq!(v.not_after.to_string(), "2060-02-29 00:00:00 UTC");
        let v = of(&cert((2001, 3, 1), (2049, 12, 31))).unwrap();
        assert_eq!(v.not_before.to_string(), "2001-03-01 00:00:00 UTC");
        assert_eq!(v.not_after.to_string(), "2049-12-31 00:00:00 UTC");
        assert!(v.not_before < Time::now() && Time::now() < v.not_after);
    }

    #[test]
    fn times_are_seconds_since_1970() {
        let utc = |s: &str| time(&[&[UTC_TIME, 13][..], s.as_bytes()].concat()).map(|t| t.0 .0);
        let gen =
            |s: &str| time(&[&[GENERALIZED_TIME, 15][..], s.as_bytes()].concat()).map(|t| t.0 .0);
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("380119031408Z"), Some(1 << 31));
        assert_eq!(utc("500101000000Z"), Some(-631_152_000));
        assert_eq!(gen("20000229235959Z"), Some(951_868_799));
        assert_eq!(Time(951_868_799).to_string(), "2000-02-29 23:59:59 UTC");
        // Not a Time: no Z, a day that does not exist, a local time, letters.
        for bad in [
            "700101000000+",
            "210229000000Z",
            "700101240000Z",
            "7o0101000000Z",
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
        assert_eq!(gen("2100022900000Z"), None, "too short");
        assert_eq!(gen("21000229000000Z"), None, "2100 is not a leap year");
    }

    #[test]
    fn anything_else_is_none() {
        let der = cert((2001, 1, 1), (2002, 1, 1));
        for cut in [0, 1, 4, 40, 120] {
            assert_eq!(of(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(of(b"-----BEGIN CERTIFICATE-----"), None);
        // An indefinite length (BER, not DER).
        assert_eq!(of(&[0x30, 0x80, 0x30, 0x80, 0, 0, 0, 0]), None);
    }
}
