//! Server time: microseconds since the Unix epoch, shown as RFC 3339 UTC with microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use pchat_core::ValidationError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// `2026-11-21T10:00:00.123456Z`.
pub fn format_micros(micros: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

/// Parses an RFC 3339 time (any offset) to microseconds since the epoch.
pub fn parse_micros(field: &str, raw: &str) -> Result<i64, ValidationError> {
    let dt = OffsetDateTime::parse(raw.trim(), &Rfc3339)
        .map_err(|_| ValidationError::new(field, "must be an RFC 3339 time such as 2026-11-21T10:00:00Z"))?;
    Ok((dt.unix_timestamp_nanos() / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse_micros("t", "2026-11-21T10:00:00.123456Z").unwrap();
        assert_eq!(format_micros(t), "2026-11-21T10:00:00.123456Z");
        assert_eq!(
            parse_micros("t", "2026-11-21T11:00:00+01:00").unwrap(),
            parse_micros("t", "2026-11-21T10:00:00Z").unwrap()
        );
        assert!(parse_micros("t", "yesterday").is_err());
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
    }
}
