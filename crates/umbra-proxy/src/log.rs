//! The proxy's own log: one line per event on stderr, with a UTC timestamp and
//! a level, so it reads well in `journalctl` and `kubectl logs` alike.

use std::fmt::Arguments;

fn line(level: &str, message: Arguments<'_>) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    eprintln!("{now} {level} {message}");
}

pub fn info(message: Arguments<'_>) {
    line("INFO", message);
}

pub fn warn(message: Arguments<'_>) {
    line("WARN", message);
}
