//! What the process carries: open client connections and their cap, requests in flight,
//! and whether it is draining.
//!
//! Ground layer: small counters that the edge, the gateway, the memory housekeeping and
//! the metrics all read, so they live below every one of them and are passed in.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Open client connections and the ones refused over the cap.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    refused: AtomicU64,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Count a new connection until the guard drops, or refuse it when `max` are open.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Admitted> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    /// Count a connection that was already admitted and now outlives its admission's
    /// guard (an upgraded connection handed to a task of its own): the new guard is taken
    /// before the old one drops, so the count never dips.
    pub fn hold(self: &Arc<Self>) -> Admitted {
        self.open.fetch_add(1, Ordering::Relaxed);
        Admitted(self.clone())
    }
}

/// One open connection, counted.
pub struct Admitted(Arc<Connections>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client handshakes that failed, for the whole process: Pingora tells of a failed TLS
/// handshake only in its log (see `telemetry::logger`), before any runtime is at hand, so
/// the count cannot live with one.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    tls: AtomicU64,
    h2: AtomicU64,
}

/// The process's count of failed client handshakes.
pub static HANDSHAKE_FAILURES: HandshakeFailures = HandshakeFailures {
    tls: AtomicU64::new(0),
    h2: AtomicU64::new(0),
};

impl HandshakeFailures {
    /// A TLS handshake failed or timed out.
    pub fn tls(&self) {
        self.tls.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 connection's preface and SETTINGS did not complete.
    pub fn h2(&self) {
        self.h2.fetch_add(1, Ordering::Relaxed);
    }

    /// (TLS, HTTP/2) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.tls.load(Ordering::Relaxed),
            self.h2.load(Ordering::Relaxed),
        )
    }
}

const SHARDS: usize = 16;

/// A counter padded to its own cache line.
#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicI64);

/// Shared state: whether the process is draining, and how many requests are in flight.
pub struct Lifecycle {
    draining: AtomicBool,
    /// Requests in flight, split so that worker threads do not share a counter.
    in_flight: [Padded; SHARDS],
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            draining: AtomicBool::new(false),
            in_flight: Default::default(),
        }
    }
}

thread_local! {
    static SHARD: usize = {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::thread::current().id()) as usize % SHARDS
    };
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> i64 {
        self.in_flight
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Count a request in flight until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        let shard = SHARD.with(|s| *s);
        self.in_flight[shard].0.fetch_add(1, Ordering::Relaxed);
        InFlight { life: self.clone() }
    }
}

/// A request in flight; counted down when dropped, on whichever thread that happens.
pub struct InFlight {
    life: Arc<Lifecycle>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let shard = SHARD.with(|s| *s);
        self.life.in_flight[shard].0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_up_and_down_across_threads() {
        let life = Arc::new(Lifecycle::default());
        let guards: Vec<InFlight> = (0..10).map(|_| life.request()).collect();
        assert_eq!(life.in_flight(), 10);
        // dropped on another thread: the total still comes back to zero
        std::thread::spawn(move || drop(guards)).join().unwrap();
        assert_eq!(life.in_flight(), 0);
    }
}
