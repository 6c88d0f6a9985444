//! The times `consume --from-time` and `groups reset-offsets --to-datetime` take:
//! ISO 8601 date-times as Kafka's tools write them (`2026-12-06T20:15:00`,
//! `2026-12-06T20:15:00.250Z`, `2026-12-06T21:15:00+01:00`), or milliseconds since
//! the epoch. A date-time without a zone is UTC (Kafka's tools take the local zone;
//! a CLI run from a test or a script should not depend on the machine's zone).

/// Milliseconds since the Unix epoch of `text`, or what is wrong with it.
pub fn parse_timestamp_ms(text: &str) -> Result<i64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?}: too large for milliseconds since the epoch"));
    }
    parse_date_time(text).ok_or_else(|| {
        format!("{text:?}: expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] or milliseconds since the epoch")
    })
}

fn parse_date_time(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = number(date_parts.next()?, 4)?;
    let month: i64 = number(date_parts.next()?, 2)?;
    let day: i64 = number(date_parts.next()?, 2)?;
    let zone_at = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(zone_at);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = number(clock_parts.next()?, 2)?;
    let minute: i64 = number(clock_parts.next()?, 2)?;
    let second: i64 = clock_parts.next().map_or(Some(0), |s| number(s, 2))?;
    let millis: i64 = match fraction.len() {
        0 => 0,
        1..=3 => number(fraction, fraction.len())? * 10_i64.pow(3 - fraction.len() as u32),
        _ => return None,
    };
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 60;
    if !valid {
        return None;
    }
    let offset_minutes = zone_offset_minutes(zone)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// `text` as a number of exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// `""` and `Z` are UTC; otherwise `+HH:MM`, `-HH:MM` or `+HHMM`.
fn zone_offset_minutes(zone: &str) -> Option<i64> {
    if zone.is_empty() || zone == "Z" {
        return Some(0);
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = zone[1..].replace(':', "");
    let hours = number(digits.get(..2)?, 2)?;
    let minutes = number(digits.get(2..)?, 2)?;
    Some(sign * (hours * 60 + minutes))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_date_times_and_epoch_milliseconds_parse_to_the_same_instant() {
        let expected = 1_796_588_100_000; // 2026-12-06T20:15:00Z
        assert_eq!(parse_timestamp_ms("2026-12-06T20:15:00"), Ok(expected));
        assert_eq!(parse_timestamp_ms("2026-12-06T20:15:00Z"), Ok(expected));
        assert_eq!(parse_timestamp_ms("2026-12-06T21:15:00+01:00"), Ok(expected));
        assert_eq!(parse_timestamp_ms("2026-12-06T19:15:00-0100"), Ok(expected));
        assert_eq!(parse_timestamp_ms("2026-12-06T20:15"), Ok(expected));
        assert_eq!(parse_timestamp_ms("2026-12-06T20:15:00.25Z"), Ok(expected + 250));
        assert_eq!(parse_timestamp_ms("1796588100000"), Ok(expected));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp_ms("2000-03-01T00:00:00Z"), Ok(951_868_800_000));
    }

    #[test]
    fn malformed_date_times_are_refused() {
        for text in ["", "2026-12-06", "2026-13-06T00:00:00", "2026-12-06T24:00:00", "26-12-06T00:00", "now"] {
            assert!(parse_timestamp_ms(text).is_err(), "{text:?}");
        }
    }
}
