//! Timestamps as Vigil stores and prints them: UTC, millisecond precision.
//!
//! Events carry two times: `occurredAt` (from the producer, RFC 3339 with any offset) and
//! `createdAt` (stamped by Vigil). Both are kept as milliseconds since the Unix epoch and
//! printed as `YYYY-MM-DDTHH:MM:SS.sssZ`, so the same instant always prints the same bytes
//! whether it comes from a request, the database or the cache. The calendar arithmetic is
//! written here (a few dozen lines) rather than pulled from a date crate: it is on the ingest
//! hot path and its exact behaviour (truncation, accepted range) is part of the API.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

/// The earliest instant Vigil accepts: the start of year 1000, MySQL's documented `DATETIME` floor.
pub const MIN_TIMESTAMP: UnixMillis = UnixMillis(-30_610_224_000_000);
/// The latest instant Vigil accepts: the end of year 9999, the last four-digit year.
pub const MAX_TIMESTAMP: UnixMillis = UnixMillis(253_402_300_799_999);

/// Length of the printed form, `2026-11-24T05:12:09.123Z`.
pub const TIMESTAMP_LEN: usize = 24;

/// Why an `occurredAt` string was refused. Messages are shown to API clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("must be an RFC 3339 date-time such as 2026-11-24T05:12:09.123Z")]
    Syntax,
    #[error("has a month, day, hour, minute or second out of range")]
    OutOfRange,
    #[error("leap seconds (second 60) are not accepted")]
    LeapSecond,
    #[error("must fall between years 1000 and 9999 in UTC")]
    YearOutOfRange,
}

impl UnixMillis {
    /// The current time from the system clock.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(since_epoch.as_millis() as i64)
    }

    /// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time; `Z`, `z` or
    /// `±HH:MM` offset), normalises it to UTC and truncates it to whole milliseconds.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError::Syntax);
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimestampError::Syntax);
        }
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;

        let mut pos = 19;
        let mut millis = 0i64;
        if b[pos] == b'.' {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                if pos - start < 3 {
                    millis = millis * 10 + i64::from(b[pos] - b'0');
                }
                pos += 1;
            }
            let fraction_digits = pos - start;
            if fraction_digits == 0 {
                return Err(TimestampError::Syntax);
            }
            for _ in fraction_digits..3 {
                millis *= 10;
            }
        }

        let offset_minutes = match b.get(pos) {
            Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
                let offset_hours = digits(b, pos + 1, 2)?;
                expect(b, pos + 3, b':')?;
                let offset_mins = digits(b, pos + 4, 2)?;
                if offset_hours > 23 || offset_mins > 59 {
                    return Err(TimestampError::OutOfRange);
                }
                let total = offset_hours * 60 + offset_mins;
                if *sign == b'-' { -total } else { total }
            }
            _ => return Err(TimestampError::Syntax),
        };

        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(TimestampError::OutOfRange);
        }
        if hour > 23 || minute > 59 {
            return Err(TimestampError::OutOfRange);
        }
        if second == 60 {
            return Err(TimestampError::LeapSecond);
        }
        if second > 59 {
            return Err(TimestampError::OutOfRange);
        }

        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
        let instant = UnixMillis(seconds * 1_000 + millis);
        if instant < MIN_TIMESTAMP || instant > MAX_TIMESTAMP {
            return Err(TimestampError::YearOutOfRange);
        }
        Ok(instant)
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS.sssZ` to `out`.
    ///
    /// Instants outside [`MIN_TIMESTAMP`, `MAX_TIMESTAMP`] are clamped to that range: they
    /// cannot be produced by parsing, and clamping keeps the output a fixed 24 bytes.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let millis = self.0.clamp(MIN_TIMESTAMP.0, MAX_TIMESTAMP.0);
        let days = millis.div_euclid(86_400_000);
        let in_day = millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, milli) = (in_day / 1_000 % 60, in_day % 1_000);

        let mut buf = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut buf[0..4], year);
        put_digits(&mut buf[5..7], month);
        put_digits(&mut buf[8..10], day);
        put_digits(&mut buf[11..13], hour);
        put_digits(&mut buf[14..16], minute);
        put_digits(&mut buf[17..19], second);
        put_digits(&mut buf[20..23], milli);
        out.extend_from_slice(&buf);
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(TIMESTAMP_LEN);
        self.write_rfc3339(&mut out);
        // write_rfc3339 emits ASCII only.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

fn digits(b: &[u8], at: usize, count: usize) -> Result<i64, TimestampError> {
    let field = b.get(at..at + count).ok_or(TimestampError::Syntax)?;
    field.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err(TimestampError::Syntax)
        }
    })
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), TimestampError> {
    if b.get(at) == Some(&want) {
        Ok(())
    } else {
        Err(TimestampError::Syntax)
    }
}

fn put_digits(dst: &mut [u8], mut value: i64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn print(t: UnixMillis) -> String {
        t.to_string()
    }

    #[test]
    fn parses_and_normalises_to_utc_milliseconds() {
        let cases = [
            ("2026-11-24T05:12:09.123Z", "2026-11-24T05:12:09.123Z"),
            ("2026-11-24T05:12:09Z", "2026-11-24T05:12:09.000Z"),
            ("2026-11-24t05:12:09.1z", "2026-11-24T05:12:09.100Z"),
            ("2026-11-24 05:12:09.123456789Z", "2026-11-24T05:12:09.123Z"),
            ("2026-11-24T07:12:09.123+02:00", "2026-11-24T05:12:09.123Z"),
            ("2026-11-23T23:42:09.123-05:30", "2026-11-24T05:12:09.123Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
            ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
            ("1000-01-01T00:00:00Z", "1000-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ];
        for (input, expected) in cases {
            let parsed =
                UnixMillis::parse_rfc3339(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(print(parsed), expected, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_and_out_of_range_times() {
        let cases = [
            ("", TimestampError::Syntax),
            ("2026-11-24", TimestampError::Syntax),
            ("2026-11-24T05:12:09", TimestampError::Syntax),
            ("2026-11-24T05:12:09.Z", TimestampError::Syntax),
            ("2026-11-24T05:12:09+0200", TimestampError::Syntax),
            ("2026-11-24T05:12:09Zjunk", TimestampError::Syntax),
            ("2026/11/24T05:12:09Z", TimestampError::Syntax),
            ("+2026-11-24T05:12:09Z", TimestampError::Syntax),
            ("2026-13-24T05:12:09Z", TimestampError::OutOfRange),
            ("2026-02-29T05:12:09Z", TimestampError::OutOfRange),
            ("2026-11-31T05:12:09Z", TimestampError::OutOfRange),
            ("2026-11-24T24:00:00Z", TimestampError::OutOfRange),
            ("2026-11-24T05:60:09Z", TimestampError::OutOfRange),
            ("2026-11-24T05:12:61Z", TimestampError::OutOfRange),
            ("2026-11-24T05:12:09+24:00", TimestampError::OutOfRange),
            ("2016-12-31T23:59:60Z", TimestampError::LeapSecond),
            ("0999-12-31T23:59:59Z", TimestampError::YearOutOfRange),
            ("1000-01-01T00:30:00+01:00", TimestampError::YearOutOfRange),
            ("9999-12-31T23:59:59-01:00", TimestampError::YearOutOfRange),
        ];
        for (input, expected) in cases {
            assert_eq!(UnixMillis::parse_rfc3339(input), Err(expected), "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn printing_then_parsing_is_the_identity(millis in MIN_TIMESTAMP.0..=MAX_TIMESTAMP.0) {
            let printed = print(UnixMillis(millis));
            prop_assert_eq!(printed.len(), TIMESTAMP_LEN);
            prop_assert_eq!(UnixMillis::parse_rfc3339(&printed), Ok(UnixMillis(millis)));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = UnixMillis::parse_rfc3339(&text);
        }
    }
}
