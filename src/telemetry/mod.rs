//! Telemetry: what the gateway tells about the requests it served. Counting
//! ([`metrics`]), the access log ([`access_log`]), and [`exchange`], the one place where a
//! finished request, refused at the edge or proxied, becomes its metrics observation and
//! its log line. [`history`] keeps each route's last 15 minutes for the status page.
//! [`logger`] is the process's log, which keeps a client's failed TLS handshake out of the
//! error log.

pub mod access_log;
pub mod exchange;
pub mod history;
pub mod logger;
pub mod metrics;
pub mod trace;
