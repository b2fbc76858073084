//! HTTP/2 client connections: Pingora's handshake and stream acceptance, with the
//! connection's life kept by the edge.
//!
//! Pingora's own HTTP/2 loop never closes a connection that sits idle (its `h2_idle_timeout`
//! is off by default, and when on it drops the socket without a GOAWAY) and serves any
//! number of streams on one connection. Here:
//! - no stream open for `timeouts.client_idle` ends the connection with GOAWAY (NO_ERROR),
//!   then a close;
//! - after `server.keepalive_requests` streams, GOAWAY: the open streams finish, no new one
//!   is taken;
//! - a shutdown (SIGTERM, an upgrade) sends GOAWAY as Pingora does;
//! - once a GOAWAY went out and no stream is open, the peer has [`GOAWAY_GRACE`] to see
//!   it before the socket closes, so a silent peer cannot hold the connection;
//! - streams refused while being accepted (a forbidden byte in the target, conflicting
//!   lengths) count against [`MAX_REFUSED_STREAMS`], past which the connection closes:
//!   Pingora's own loop keeps the same budget, which its public accept call cannot carry.
//!
//! Every timer is tokio's (see [`crate::memory`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::traffic::HANDSHAKE_FAILURES;

use super::Edge;

/// How long a peer has to read a GOAWAY once no stream is open, before the socket closes.
pub(super) const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// Streams refused while being accepted before the connection is closed.
const MAX_REFUSED_STREAMS: usize = 32;

/// Why the edge stopped taking streams on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Idle,
    Requests,
    Shutdown,
}

/// The streams of one connection being served now.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    none: Notify,
}

/// One open stream; counted down when its task ends.
struct OpenStream(Arc<Open>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.none.notify_one();
        }
    }
}

impl Open {
    fn start(self: &Arc<Self>) -> OpenStream {
        self.count.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// Returns once no stream has been open for `quiet`. A stream that opens meanwhile
    /// ends the caller's `select!` on its accept branch, which starts a new wait.
    async fn quiet_for(&self, quiet: Duration) {
        while self.count.load(Ordering::Relaxed) != 0 {
            self.none.notified().await;
        }
        tokio::time::sleep(quiet).await;
    }
}

impl Edge {
    /// Serve one HTTP/2 connection (TLS with ALPN h2, or h2c) until it closes.
    pub(super) async fn serve_h2(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let (idle, handshake_within, max_requests) = {
            let rt = self.current.peek();
            (rt.client.idle, rt.client.header, rt.keepalive_requests)
        };
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let options = HttpServerApp::h2_options(&*self.proxy);
        let mut conn =
            match tokio::time::timeout(handshake_within, handshake(stream, options)).await {
                Ok(Ok(conn)) => conn,
                // the client's doing (a bad preface, a close, silence): not the gateway's
                Ok(Err(e)) => {
                    log::debug!("HTTP/2 handshake failed: {e}");
                    HANDSHAKE_FAILURES.h2();
                    return;
                }
                Err(_) => {
                    log::debug!("HTTP/2 handshake not done within {handshake_within:?}");
                    HANDSHAKE_FAILURES.h2();
                    return;
                }
            };
        let open = Arc::new(Open::default());
        let mut shutdown = shutdown.clone();
        let mut closing: Option<Closing> = None;
        let mut served: u32 = 0;
        let mut refused = 0;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.changed(), if closing.is_none() => {
                    conn.graceful_shutdown();
                    closing = Some(Closing::Shutdown);
                    continue;
                }
                () = open.quiet_for(idle), if closing.is_none() => {
                    conn.graceful_shutdown();
                    closing = Some(Closing::Idle);
                    continue;
                }
                () = open.quiet_for(GOAWAY_GRACE), if closing.is_some() => {
                    log::debug!("HTTP/2 connection closed after GOAWAY ({closing:?})");
                    return;
                }
                accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
            };
            let session = match accepted {
                Ok(Some(H2Accept::Session(session))) => session,
                Ok(Some(H2Accept::Rejected)) => {
                    refused += 1;
                    if refused >= MAX_REFUSED_STREAMS {
                        log::debug!("HTTP/2 connection closed: {refused} streams refused");
                        return;
                    }
                    continue;
                }
                // closed by the peer, or done after a GOAWAY
                Ok(None) => return,
                Err(e) => {
                    log::debug!("HTTP/2 connection ended: {e}");
                    return;
                }
            };
            served = served.saturating_add(1);
            if served >= max_requests && closing.is_none() {
                conn.graceful_shutdown();
                closing = Some(Closing::Requests);
            }
            let counted = open.start();
            let proxy = self.proxy.clone();
            let stream_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _counted = counted;
                proxy
                    .process_new_http(ServerSession::new_http2(session), &stream_shutdown)
                    .await;
            });
        }
    }
}
