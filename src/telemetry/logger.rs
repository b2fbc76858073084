//! The process's log: env_logger (`RUST_LOG`, default `info`), with one change. Pingora
//! logs a client's failed TLS handshake ("Downstream handshake error", "Downstream
//! handshake timeout") at ERROR, before any Pylon code sees the connection, so any client
//! could fill the error log at will: a scanner, a client speaking plain HTTP to the TLS
//! port, one that resets mid-handshake. Those lines go to debug level here, and are counted
//! instead (`pylon_handshake_failures_total{protocol="tls"}`). ERROR stays for the
//! gateway's own faults, Pingora's failed `accept()` among them.

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::traffic::HANDSHAKE_FAILURES;

/// Where Pingora's listeners log a failed handshake.
const LISTENING: &str = "pingora_core::services::listening";
/// How those lines begin.
const HANDSHAKE: &str = "Downstream handshake";

/// env_logger, with a client's failed TLS handshake lowered to debug and counted.
pub struct Logger {
    inner: env_logger::Logger,
}

/// Install the logger for the process.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    // the handshake lines are counted whatever the filter lets through
    let max = inner.filter().max(LevelFilter::Error);
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether a record is Pingora's line about a client's failed TLS handshake.
fn client_handshake(record: &Record<'_>) -> bool {
    record.level() == Level::Error
        && record.target() == LISTENING
        && match record.args().as_str() {
            Some(text) => text.starts_with(HANDSHAKE),
            None => record.args().to_string().starts_with(HANDSHAKE),
        }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !client_handshake(record) {
            return self.inner.log(record);
        }
        HANDSHAKE_FAILURES.tls();
        let lowered = Record::builder()
            .args(*record.args())
            .level(Level::Debug)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.inner.enabled(lowered.metadata()) {
            self.inner.log(&lowered);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(level: Level, target: &'a str, args: std::fmt::Arguments<'a>) -> Record<'a> {
        Record::builder()
            .level(level)
            .target(target)
            .args(args)
            .build()
    }

    #[test]
    fn only_pingora_s_handshake_errors_are_a_client_s() {
        let addr = "127.0.0.1:5";
        let e = "SSL routines:ssl3_get_record:wrong version number";
        assert!(client_handshake(&record(
            Level::Error,
            LISTENING,
            format_args!("Downstream handshake error from {addr}: {e}")
        )));
        assert!(client_handshake(&record(
            Level::Error,
            LISTENING,
            format_args!("Downstream handshake timeout")
        )));
        // the gateway's own faults stay errors
        assert!(!client_handshake(&record(
            Level::Error,
            LISTENING,
            format_args!("Accept() failed {e}")
        )));
        assert!(!client_handshake(&record(
            Level::Error,
            "pylon::server",
            format_args!("Downstream handshake error: {e}")
        )));
        assert!(!client_handshake(&record(
            Level::Warn,
            LISTENING,
            format_args!("Downstream handshake error: {e}")
        )));
    }
}
