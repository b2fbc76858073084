//! An upgrade request (a WebSocket's opening handshake), once admitted: the gateway asks
//! the instance itself, passes its answer on, and after a 101 hands both sockets to
//! [`crate::relay`] in a task of their own, then ends the request's part in Pingora.
//!
//! Pingora's own upgrade loop keeps the request's future and state, a 64 KiB body buffer
//! on each side, two task channels and both header maps for the socket's whole life: 45 KiB
//! an idle WebSocket. The relay keeps the two sockets, the request's state for its access
//! line, and no buffer while both sides are silent.
//!
//! An answer other than 101 goes to the client as any answer does, and the connection
//! stays usable. After the 101 the connection is bytes, not HTTP: a failure on either side
//! closes the other, and the access line (status 101, bytes each way, how it ended) is
//! written when the relay ends.

use bytes::Bytes;
use futures::FutureExt;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::relay::{relay, Early, End, Relayed};
use crate::runtime::Runtime;

use super::ctx::{finish, route, Failure, RequestCtx, RequestState, Seen};
use super::Gateway;

/// The request fields the access line and the spans read, kept for the relay's end.
const KEPT_FIELDS: [http::HeaderName; 4] = [
    http::header::HOST,
    http::header::REFERER,
    http::header::USER_AGENT,
    crate::wire::names::TRACESTATE,
];

/// What the client sent right after an upgrade request's head, lent by the edge (through
/// the session's connection context, Pingora's public way to pass a value to a request):
/// the edge keeps the bytes for a request pipelined behind a declined upgrade, and the
/// gateway sends this copy to the upstream when it switches.
pub(crate) struct HeldBack(pub Bytes);

/// The stand-in session's request (see [`take_client`]).
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nHost: relayed\r\n\r\n";

impl Gateway {
    /// Whether the gateway relays this request's upgrade itself: an HTTP/1.1 upgrade
    /// without a body, to a route whose upstream speaks HTTP/1.
    pub(super) fn relays(session: &mut Session, rt: &Runtime, ctx: &RequestState) -> bool {
        session.is_upgrade_req()
            && session.as_http1().is_some()
            && route(rt, ctx).is_some_and(|r| !r.http2)
            && session.is_body_empty()
    }

    /// Ask an instance, pass its answer on, and after a 101 relay the connection in a task
    /// of its own. An error before the answer's head went out becomes the gateway's own
    /// answer (`fail_to_proxy`); after it, the connection just closes.
    pub(super) async fn upgrade(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let (rt, state) = ctx.parts();
        let (mut upstream, resp) = self.handshake(session, rt, state).await?;
        let switched = upstream.was_upgraded();
        session
            .write_response_header(resp, false)
            .await
            .map_err(|e| e.into_down())?;
        if !switched {
            return relay_answer(session, &mut upstream).await;
        }
        // bytes either side sent right after its head: the client's the edge kept (Pingora
        // got the head alone), the upstream's came with its 101
        upstream.read_timeout = None;
        let early = Early {
            to_upstream: state.held_back.take().unwrap_or_default(),
            to_client: match upstream.read_body_bytes().now_or_never() {
                Some(Ok(Some(bytes))) => bytes,
                _ => Bytes::new(),
            },
        };
        let idle = route(rt, state).map_or(rt.client.idle, |r| r.timeouts.websocket_idle);
        let kept = kept_request(session.req_header());
        let Some(client) = take_client(session).await else {
            return Error::e_explain(ErrorType::InternalError, "an upgrade on HTTP/2");
        };
        let counted = rt.shared.connections.hold();
        let (rt, state) = ctx.hand_off();
        let mut upstream = upstream.into_inner();
        tokio::spawn(async move {
            let _counted = counted;
            let mut client = client;
            let relayed = relay(&mut client, &mut upstream, early, idle).await;
            record(&kept, &relayed, &rt, &state);
        });
        Ok(())
    }

    /// Connect to an instance of the route, send the request and read its answer's head,
    /// trying another instance when the route allows it and nothing was sent to the client.
    async fn handshake(
        &self,
        session: &mut Session,
        rt: &Runtime,
        state: &mut RequestState,
    ) -> Result<(UpstreamSession, Box<ResponseHeader>)> {
        loop {
            let peer = self.choose_peer(session, rt, state)?;
            let upstream = match self.connector().new_stream(&*peer).await {
                Ok(stream) => stream,
                Err(e) => {
                    let e = self.connect_failed(rt, state, e.into_up());
                    if e.retry() {
                        continue;
                    }
                    return Err(e);
                }
            };
            match self
                .exchange_heads(session, upstream, &peer, rt, state)
                .await
            {
                Ok(done) => return Ok(done),
                Err(e) => {
                    let e = self.proxy_failed(&peer, session, rt, state, e, false);
                    if !e.retry() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Send the request as the upstream gets it and read the answer's head, 1xx answers
    /// before it relayed as they came.
    async fn exchange_heads(
        &self,
        session: &mut Session,
        stream: Stream,
        peer: &HttpPeer,
        rt: &Runtime,
        state: &mut RequestState,
    ) -> Result<(UpstreamSession, Box<ResponseHeader>)> {
        let mut upstream = UpstreamSession::new(stream);
        let timeouts = route(rt, state).map(|r| r.timeouts);
        upstream.read_timeout = timeouts.map(|t| t.read);
        upstream.write_timeout = timeouts.map(|t| t.write);
        let mut req = Box::new(session.req_header().clone());
        self.upstream_request(session, &mut req, rt, state)?;
        upstream
            .write_request_header(req)
            .await
            .map_err(|e| e.into_up())?;
        loop {
            upstream.read_response().await.map_err(|e| e.into_up())?;
            let mut resp = Box::new(
                upstream
                    .resp_header()
                    .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no answer"))?
                    .clone(),
            );
            self.upstream_response(session, &mut resp, rt, state)?;
            if !resp.status.is_informational() || resp.status == StatusCode::SWITCHING_PROTOCOLS {
                log::debug!("upgrade answered {} by {peer}", resp.status);
                return Ok((upstream, resp));
            }
            session
                .write_response_header(resp, false)
                .await
                .map_err(|e| e.into_down())?;
        }
    }
}

/// An answer that declines the upgrade: its body as it comes, then the request ends as
/// any other does.
async fn relay_answer(session: &mut Session, upstream: &mut UpstreamSession) -> Result<()> {
    while let Some(chunk) = upstream.read_body_bytes().await.map_err(|e| e.into_up())? {
        session
            .write_response_body(Some(chunk), false)
            .await
            .map_err(|e| e.into_down())?;
    }
    session
        .write_response_body(None, true)
        .await
        .map_err(|e| e.into_down())
}

/// The client's socket, out of Pingora's session. A stand-in takes its place, with a
/// request of its own and no connection behind it, so that what Pingora does with the
/// session after `request_filter` finds a session and touches nothing.
async fn take_client(session: &mut Session) -> Option<Stream> {
    let mut stand_in = ServerSession::new_http1(Box::new(std::io::Cursor::new(STAND_IN.to_vec())));
    if let Err(e) = stand_in.read_request().await {
        log::debug!("the stand-in session: {e}");
    }
    stand_in.set_keepalive(None);
    match *std::mem::replace(&mut session.downstream_session, Box::new(stand_in)) {
        ServerSession::H1(h1) => Some(h1.into_inner()),
        _ => None,
    }
}

/// The request line and the few fields the access line and the spans read.
fn kept_request(req: &pingora::http::RequestHeader) -> pingora::http::RequestHeader {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = req.method.clone();
    parts.uri = req.uri.clone();
    parts.version = req.version;
    for name in KEPT_FIELDS {
        if let Some(value) = req.headers.get(&name) {
            parts.headers.insert(name, value.clone());
        }
    }
    let mut kept = pingora::http::RequestHeader::from(parts);
    // the access line shows the target as it came, which the URI may have normalised
    let _ = kept.set_raw_path(req.raw_path());
    kept
}

/// The relayed connection's access line and counts: status 101, the bytes each way, and
/// who ended it.
fn record(
    req: &pingora::http::RequestHeader,
    relayed: &Relayed,
    rt: &Runtime,
    state: &RequestState,
) {
    let error = match relayed.end {
        End::Closed => None,
        End::Idle => Some("Relay IdleTimedout".to_string()),
        End::Client(kind) => Some(format!("Downstream {kind:?}")),
        End::Upstream(kind) => Some(format!("Upstream {kind:?}")),
    };
    let seen = Seen {
        req,
        status: Some(101),
        body_sent: usize::try_from(relayed.to_client).unwrap_or(usize::MAX),
        body_read: usize::try_from(relayed.to_upstream).unwrap_or(usize::MAX),
    };
    let failure = Failure {
        error: error.as_deref(),
        upstream: matches!(relayed.end, End::Upstream(_)),
        client: matches!(relayed.end, End::Client(_)),
    };
    finish(seen, failure, rt, state).record(rt.shared.metrics.as_ref(), &rt.shared.access_log);
}
