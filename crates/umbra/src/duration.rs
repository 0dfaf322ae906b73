//! Durations on the command line: `6h`, `90s`, `1h30m`, `500ms`.

use std::time::Duration;

/// Parses a duration for clap; the error names the value and shows the expected form.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s, 10m, 6h or 1h30m"))
}
