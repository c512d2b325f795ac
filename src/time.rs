//! Timestamps as the hub stores and shows them: UTC microseconds since the epoch, and
//! JupyterHub's ISO 8601 text form (`2026-11-22T09:23:41.123456Z`).

/// Current time in microseconds since the epoch (the database's unit).
pub fn now() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// JupyterHub's timestamp format: ISO 8601, UTC, microseconds, `Z`.
pub fn iso(micros: i64) -> String {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
        Err(_) => String::new(),
    }
}

/// `iso` as JSON, `null` for no time.
pub fn iso_opt(micros: Option<i64>) -> serde_json::Value {
    micros
        .map(|m| serde_json::Value::String(iso(m)))
        .unwrap_or(serde_json::Value::Null)
}

/// Parse an ISO 8601 timestamp; naive times are UTC, as upstream treats them.
pub fn parse_iso(text: &str) -> Option<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_microsecond());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let t = 1_795_339_421_123_456;
        let text = iso(t);
        assert_eq!(text, "2026-11-22T09:23:41.123456Z");
        assert_eq!(parse_iso(&text), Some(t));
        assert_eq!(parse_iso("2026-11-22T09:23:41.123456"), Some(t));
        assert_eq!(parse_iso("2026-11-22T10:23:41.123456+01:00"), Some(t));
        assert_eq!(parse_iso("yesterday"), None);
    }
}
