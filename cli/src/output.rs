//! Human-readable tables and JSON output.

use serde::Serialize;

use crate::client::CliError;
use crate::Output;

/// Prints rows as a table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints `value` as JSON, or calls `human` for the table form.
pub fn emit<T: Serialize>(
    output: Output,
    value: &T,
    human: impl FnOnce(&T),
) -> Result<(), CliError> {
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Unavailable(format!("cannot print JSON: {e}")))?;
            println!("{text}");
        }
        Output::Table => human(value),
    }
    Ok(())
}

/// Milliseconds since the epoch as a short UTC time, `2026-11-25 04:31:07`.
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// An RFC 3339 UTC time (`2026-12-01T10:00:00Z`, fractions of seconds allowed) or a date
/// (`2026-12-01`, its midnight UTC) in milliseconds since the epoch.
pub fn parse_utc_ms(text: &str) -> Option<u64> {
    let (date, clock) = match text.split_once('T') {
        Some((date, clock)) => (date, Some(clock.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if date.len() != 10 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let ms_of_day = match clock {
        None => 0,
        Some(clock) => {
            let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
            let mut hms = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
            let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
            if h > 23 || m > 59 || s > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let millis: u64 = format!("{fraction:0<3}")[..3].parse().ok()?;
            ((h * 60 + m) * 60 + s) * 1000 + millis
        }
    };
    // Days from the civil date (the inverse of `civil_from_days`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days).ok().map(|d| d * 86_400_000 + ms_of_day)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_764_045_067_000), "2025-11-25 04:31:07");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn utc_times_parse_back() {
        assert_eq!(
            parse_utc_ms("2025-11-25T04:31:07Z"),
            Some(1_764_045_067_000)
        );
        assert_eq!(
            parse_utc_ms("2025-11-25T04:31:07.25Z"),
            Some(1_764_045_067_250)
        );
        assert_eq!(parse_utc_ms("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "2025-13-01",
            "2025-11-25T04:31:07",
            "yesterday",
            "2025-11-25T25:00:00Z",
        ] {
            assert_eq!(parse_utc_ms(bad), None, "{bad}");
        }
    }
}
