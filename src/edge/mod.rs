//! The client edge: every connection passes here before Pingora sees a request.
//!
//! Pingora answers a request head it cannot parse with its own bare 400 before any
//! `ProxyHttp` phase runs, times out only single reads (a client that sends one byte every
//! few seconds holds its connection forever) and drops pipelined requests. So Pylon owns
//! the HTTP/1 connection loop and hands Pingora one screened request at a time:
//!
//! 1. Wait for a head: on a new connection the whole head must arrive within
//!    `timeouts.client_header` of the accept; between keep-alive requests the connection
//!    may idle for `timeouts.client_idle`, and the head must then arrive within
//!    `client_header` of its first byte. A head that is late gets 408 (if anything came).
//! 2. Screen it ([`head`]): size limits (414, 431), syntax, Host, framing (400, 501),
//!    CONNECT (405). A refused head gets the gateway's own JSON answer with the security,
//!    CORS and X-Request-Id headers, an access-log line and a count in the metrics, and the
//!    connection closes.
//! 3. Give Pingora the head and as much of the body as is known to belong to it, as the
//!    session's pre-read bytes; Pingora parses it and runs the proxy phases. Bytes of the
//!    next pipelined request stay here, so every pipelined request is answered in order.
//!    After an upgrade request the bytes that follow stay here too, and a copy goes to the
//!    gateway, which sends them on if the upstream switches protocols.
//!
//! HTTP/2 (ALPN or cleartext prior knowledge) goes straight to Pingora, whose h2 codec
//! frames requests itself. Connections over `server.max_connections` are closed at once.
//!
//! Once shutdown begins no new request is read; a connection already idle is not woken
//! (that would cost every request a shared waiter) but ends with the process, which exits
//! as soon as no request is in flight (see [`crate::server::signals`]), or at `client_idle`.

mod h2;
pub mod head;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use crate::control::Current;
use crate::forwarding::new_request_id;
use crate::gateway::answer::refusal_bytes;
use crate::gateway::{Gateway, HeldBack};
use crate::runtime::LINGERING_QUIET;
use crate::scratch;
use crate::telemetry::access_log::Entry;
use crate::telemetry::exchange::Exchange;
use crate::telemetry::trace::Traced;
use crate::wire::GatewayError;
use head::{Framing, HeadLimits, Scan};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long writing a refusal may take before the connection is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);
/// How much of a refused target the access log keeps.
const LOGGED_TARGET: usize = 2048;
/// What a lingering close reads at a time.
const LINGER_CHUNK: usize = 4096;

/// The listening app: Pylon's connection loop in front of Pingora's proxy.
pub struct Edge {
    proxy: Arc<HttpProxy<Gateway>>,
    current: Arc<Current>,
    limits: HeadLimits,
}

/// What a plain connection's first bytes say, with h2c on.
enum Sniffed {
    H2,
    Http1,
    /// Closed, or nothing came in time.
    Gone,
}

/// A head that arrived, with when its first byte did.
struct Arrived {
    end: usize,
    started: Instant,
}

/// Why no head can be handed on.
enum NoHead {
    /// The client left, stayed idle too long, or the server is shutting down: close quietly.
    Gone,
    /// Answer this and close.
    Refuse(GatewayError, Instant),
}

impl Edge {
    pub fn new(proxy: HttpProxy<Gateway>, current: Arc<Current>) -> Edge {
        Edge {
            proxy: Arc::new(proxy),
            current,
            limits: HeadLimits::default(),
        }
    }

    /// With h2c, whether a plain connection opens with HTTP/2's preface: read until the
    /// bytes stop matching it (an HTTP/1 request, possibly shorter than the preface, is
    /// told at once) or it is complete. What was read is left in `pending`.
    async fn sniff_h2c(&self, stream: &mut Stream, pending: &mut BytesMut, by: Instant) -> Sniffed {
        while pending.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(pending) {
            // tokio's timer, like every timeout here: Pingora's fast timer keeps its slot
            // until the deadline even after the read ended (see `memory`)
            match tokio::time::timeout_at(by.into(), scratch::read_into(stream, pending)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ if pending.is_empty() => return Sniffed::Gone,
                // a partial head: the HTTP/1 loop answers it (408)
                _ => return Sniffed::Http1,
            }
        }
        if pending.starts_with(H2_PREFACE) {
            Sniffed::H2
        } else {
            Sniffed::Http1
        }
    }

    /// Serve HTTP/1 requests on one connection until it closes; `pending` holds what was
    /// already read, the first head is due `client_header` after `accepted`.
    async fn serve_http1(
        &self,
        mut stream: Stream,
        mut pending: BytesMut,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = Some(accepted);
        // one timer for the connection's life, moved to each head's deadline: tokio moves a
        // later deadline with one atomic store (the timer itself fires only once that old
        // deadline passes, and then files itself again), where a new timer per request
        // was registered with Pingora's timer manager each time
        let timer = tokio::time::sleep_until(accepted.into());
        tokio::pin!(timer);
        loop {
            let arrived = match self
                .read_head(
                    &mut stream,
                    &mut pending,
                    first.take(),
                    timer.as_mut(),
                    shutdown,
                )
                .await
            {
                Ok(arrived) => arrived,
                Err(NoHead::Gone) => return,
                Err(NoHead::Refuse(err, started)) => {
                    return self.refuse(stream, &pending, err, started).await;
                }
            };
            let end = arrived.end;
            let screened = match head::screen(&pending[..end], &self.limits) {
                Ok(screened) => screened,
                Err(err) => return self.refuse(stream, &pending, err, arrived.started).await,
            };
            let take = match screened.framing {
                Framing::None | Framing::Upgrade => end,
                Framing::Length(n) => {
                    end + usize::try_from(n)
                        .map_or(pending.len() - end, |n| n.min(pending.len() - end))
                }
                Framing::Chunked => {
                    end + head::chunked_len(&pending[end..]).unwrap_or(pending.len() - end)
                }
                Framing::Open => pending.len(),
            };
            let mut request = pending.split_to(take);
            if let Some(mut rewritten) = screened.rewritten {
                rewritten.extend_from_slice(&request[end..]);
                request = rewritten;
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    let rt = self.current.peek();
                    session.set_keepalive(Some(rt.client.idle.as_secs().max(1)));
                    // the connection's first request: `keepalive_requests - 1` more may
                    // follow, and the last answer says `Connection: close`
                    session.set_keepalive_reuses_remaining(Some(rt.keepalive_requests - 1));
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            if screened.expect_continue {
                // the 100 Continue goes out before the body is read, which Pingora would
                // otherwise take as an answer that leaves the body unread and close the
                // connection after it: the body is read, and the connection kept
                session.set_close_on_response_before_downstream_finish(false);
                session.set_total_drain_timeout(Some(self.current.peek().client.lingering));
            }
            if screened.framing == Framing::Upgrade && !pending.is_empty() {
                // kept here for a request pipelined behind a declined upgrade, and lent to
                // the gateway, which sends them on if the upstream switches
                let held = HeldBack(Bytes::copy_from_slice(&pending));
                session.set_connection_user_context(Some(Box::new(held)));
            }
            session.set_pipelined_prefix(request);
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, settings) = reused.consume();
            if pending.is_empty() {
                // hold no buffer while idle: the next read allocates what it keeps
                pending = BytesMut::new();
            }
        }
    }

    /// Read until `pending` holds a whole head, within the client timeouts and limits.
    /// `accepted` is set for a connection's first request.
    async fn read_head(
        &self,
        stream: &mut Stream,
        pending: &mut BytesMut,
        accepted: Option<Instant>,
        mut timer: Pin<&mut Sleep>,
        shutdown: &ShutdownWatch,
    ) -> Result<Arrived, NoHead> {
        let now = Instant::now();
        let client = self.current.peek().client;
        let first = accepted.is_some();
        let mut started = (!pending.is_empty()).then_some(accepted.unwrap_or(now));
        // a new connection's head is due `client_header` after the accept; an idle
        // keep-alive connection has `client_idle` for its next first byte
        let mut deadline = match (accepted, started) {
            (Some(at), _) => at + client.header,
            (None, Some(_)) => now + client.header,
            (None, None) => now + client.idle,
        };
        let mut scan = Scan::default();
        loop {
            match scan.advance(pending, &self.limits) {
                Ok(Some(end)) => {
                    return Ok(Arrived {
                        end,
                        started: started.unwrap_or(now),
                    })
                }
                Ok(None) => {}
                Err(err) => return Err(NoHead::Refuse(err, started.unwrap_or(now))),
            }
            if started.is_none() && *shutdown.borrow() {
                return Err(NoHead::Gone);
            }
            // the read holds no buffer while it waits (see [`crate::scratch`])
            timer.as_mut().reset(deadline.into());
            let read = tokio::select! {
                biased;
                read = scratch::read_into(stream, pending) => Ok(read),
                () = timer.as_mut() => Err(()),
            };
            match read {
                Ok(Ok(n)) if n > 0 => {
                    if started.is_none() {
                        let at = Instant::now();
                        started = Some(at);
                        if !first {
                            deadline = at + client.header;
                        }
                    }
                }
                // the client closed or broke the connection
                Ok(_) => return Err(NoHead::Gone),
                Err(()) => {
                    return Err(match started {
                        Some(at) => NoHead::Refuse(GatewayError::RequestTimeout, at),
                        None => NoHead::Gone,
                    });
                }
            }
        }
    }

    /// Answer a refused head, log and count it, and close the connection.
    async fn refuse(&self, mut stream: Stream, head: &[u8], err: GatewayError, started: Instant) {
        let line = head::request_line(head);
        let request_id = new_request_id();
        let origin = head::field(head, b"origin");
        let head_only = line.method == "HEAD";
        let tls = stream.get_ssl_digest().is_some();
        let rt = self.current.load();
        let trace = rt
            .tracing
            .as_ref()
            .map(|t| t.begin(head::field(head, b"traceparent")));
        let answer = refusal_bytes(
            &rt,
            err,
            origin,
            &request_id,
            head_only,
            tls,
            trace.as_ref(),
        );
        let written = tokio::time::timeout(REFUSAL_WRITE, async {
            stream.write_all(&answer).await?;
            stream.flush().await
        })
        .await;
        let body_bytes = match written {
            Ok(Ok(())) if !head_only => err.body().len(),
            _ => 0,
        };
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        Exchange {
            entry: Entry {
                client,
                time: SystemTime::now(),
                method: line.method,
                uri: &line.target[..line.target.len().min(LOGGED_TARGET)],
                version: line.version,
                status: err.status(),
                body_bytes,
                referer: head::field(head, b"referer"),
                user_agent: head::field(head, b"user-agent"),
                request_id: Some(request_id.as_bytes()),
                duration: started.elapsed(),
                route: None,
                upstream: None,
                error: None,
                trace: trace.as_ref().map(|t| t.ids),
            },
            counters: None,
            upstream_time: None,
            answered: Some(err),
            upstream_error: false,
            client_error: false,
            request_bytes: 0,
            trace: trace
                .as_ref()
                .filter(|t| t.recorded())
                .zip(rt.tracing.as_deref())
                .map(|(trace, tracing)| Traced {
                    trace,
                    tracestate: head::field(head, b"tracestate"),
                    host: head::field(head, b"host"),
                    tracing,
                    queue: &rt.shared.spans,
                }),
        }
        .record(rt.shared.metrics.as_ref(), &rt.shared.access_log);
        let lingering = rt.client.lingering;
        drop(rt);
        linger(stream, lingering).await;
    }
}

/// Close a refused connection without losing the answer: closing with unread input makes
/// the kernel send a reset, which can destroy the answer before the client reads it. So
/// the write side closes first and what the client still sends is read and dropped (nginx's
/// lingering close): for at most `lingering` in all, and until nothing arrives for
/// [`LINGERING_QUIET`].
async fn linger(mut stream: Stream, lingering: Duration) {
    if tokio::time::timeout(REFUSAL_WRITE, stream.shutdown())
        .await
        .is_err()
    {
        return;
    }
    let until = Instant::now() + lingering;
    let mut sink = vec![0u8; LINGER_CHUNK];
    loop {
        let quiet = Instant::now() + LINGERING_QUIET;
        match tokio::time::timeout_at(until.min(quiet).into(), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // one look at the runtime for the connection's start
        let (_counted, h2c, header_timeout) = {
            let rt = self.current.peek();
            rt.shared.workers.note_current();
            let counted = rt.shared.connections.admit(rt.max_connections)?;
            (counted, rt.h2c, rt.client.header)
        };
        let accepted = Instant::now();
        let mut pending = BytesMut::new();
        if stream.get_ssl_digest().is_some() {
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                // boxed: the HTTP/2 loop's state would otherwise size the future of every
                // connection, HTTP/1 ones included
                Box::pin(self.serve_h2(stream, shutdown)).await;
                return None;
            }
        } else if h2c {
            let by = accepted + header_timeout;
            match self.sniff_h2c(&mut stream, &mut pending, by).await {
                Sniffed::Gone => return None,
                Sniffed::Http1 => {}
                Sniffed::H2 => {
                    // give the preface back for Pingora's h2 handshake
                    let mut plain = stream.into_any().downcast::<L4Stream>().ok()?;
                    plain.rewind(&pending);
                    Box::pin(self.serve_h2(plain, shutdown)).await;
                    return None;
                }
            }
        }
        self.serve_http1(stream, pending, accepted, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, Shared};
    use pingora::server::configuration::ServerConf;
    use std::path::Path;

    fn edge() -> Arc<Edge> {
        let path = Path::new("t.toml");
        let text = "[access_log]\npath = \"off\"\n[[routes]]\nprefix = \"/\"\nupstreams = [\"127.0.0.1:9\"]\n";
        let file = crate::config::parse(path, text).unwrap();
        let shared = Arc::new(Shared::from_config(&file).unwrap());
        let rt = Runtime::from_config(&file, None, shared).unwrap();
        let current = Current::new(
            rt,
            crate::control::FileSource::new(path, None),
            crate::control::Document::new(String::new()),
            None,
        );
        let conf = Arc::new(ServerConf::default());
        let proxy = HttpProxy::new(Gateway::new(current.clone(), &conf), conf);
        Arc::new(Edge::new(proxy, current))
    }

    /// Besides its stream, an idle connection holds the boxed future of its loop, as large
    /// as its largest state (1,272 bytes with its head timer): a guard against a large
    /// state moving in, which every idle connection would pay for.
    #[tokio::test]
    async fn an_idle_connection_s_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(L4Stream::from(accepted));
        let edge = edge();
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let future = ServerApp::process_new(&edge, stream, &shutdown);
        let size = std::mem::size_of_val(&*future);
        eprintln!("process_new's future: {size} bytes");
        assert!(size <= 1536, "{size} bytes");
    }
}
