//! The bytes of an upgraded connection (a WebSocket after its 101), passed between the
//! client and the upstream with no request state, and no buffer while both are silent.
//!
//! Each direction reads through the thread's scratch buffer (see [`crate::scratch`]) and
//! writes what it read to the other side in the same poll; only what the other side cannot
//! take yet is kept, in bytes allocated while it waits. The end of one side's input is
//! passed on as the end of the other side's output (a half close). The relay ends when
//! both directions have ended, when either side fails (the caller then drops both, so
//! each side sees its connection close and never an HTTP answer), or when nothing crossed
//! in either direction for `idle`.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::scratch;

/// Reads one direction makes in one poll before it lets other tasks run.
const READS_PER_POLL: usize = 16;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides ended their output.
    Closed,
    /// Nothing crossed in either direction for the idle time.
    Idle,
    /// Reading from or writing to the client failed.
    Client(io::ErrorKind),
    /// Reading from or writing to the upstream failed.
    Upstream(io::ErrorKind),
}

/// What a relay passed on, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub to_upstream: u64,
    pub to_client: u64,
    pub end: End,
}

/// Bytes each side sent past its head, read before the relay began.
#[derive(Debug, Default)]
pub struct Early {
    pub to_upstream: Bytes,
    pub to_client: Bytes,
}

/// Relay between `client` and `upstream` until both end, one fails, or both stay silent
/// for `idle`.
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, early: Early, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Half::new(early.to_upstream);
    let mut down = Half::new(early.to_client);
    let mut last = Instant::now();
    let timer = tokio::time::sleep_until(last + idle);
    tokio::pin!(timer);
    let end = poll_fn(|cx| {
        let (sent, received) = scratch::with(|buf| {
            (
                up.poll(cx, &mut *client, &mut *upstream, buf),
                down.poll(cx, &mut *upstream, &mut *client, buf),
            )
        });
        match (sent, received) {
            (Poll::Ready(Err(Fault::Read(kind))), _)
            | (_, Poll::Ready(Err(Fault::Write(kind)))) => return Poll::Ready(End::Client(kind)),
            (Poll::Ready(Err(Fault::Write(kind))), _)
            | (_, Poll::Ready(Err(Fault::Read(kind)))) => return Poll::Ready(End::Upstream(kind)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        if std::mem::take(&mut up.moved) | std::mem::take(&mut down.moved) {
            last = Instant::now();
        }
        // the timer stays where it was set while bytes flow (no reset per read); when it
        // fires it moves to the last activity's deadline, or the relay ends
        while timer.as_mut().poll(cx).is_ready() {
            let due = last + idle;
            if Instant::now() >= due {
                return Poll::Ready(End::Idle);
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    })
    .await;
    Relayed {
        to_upstream: up.bytes,
        to_client: down.bytes,
        end,
    }
}

/// Which end of one direction failed.
enum Fault {
    Read(io::ErrorKind),
    Write(io::ErrorKind),
}

/// One direction: what the destination has not taken yet, and how far it got.
struct Half {
    /// Read but not yet written; unallocated while the direction is idle.
    pending: BytesMut,
    unflushed: bool,
    /// The source ended its output.
    eof: bool,
    /// The end was passed on: nothing more to do.
    done: bool,
    /// Bytes crossed since the relay last looked.
    moved: bool,
    bytes: u64,
}

impl Half {
    fn new(early: Bytes) -> Half {
        Half {
            pending: if early.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(&early[..])
            },
            unflushed: false,
            eof: false,
            done: false,
            moved: !early.is_empty(),
            bytes: early.len() as u64,
        }
    }

    /// Move what `src` sends to `dst`: ready when the direction has ended.
    fn poll<S, D>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        scratch: &mut [u8],
    ) -> Poll<Result<(), Fault>>
    where
        S: AsyncRead + Unpin + ?Sized,
        D: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..READS_PER_POLL {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.pending))
                    .map_err(|e| Fault::Write(e.kind()))?;
                if n == 0 {
                    return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero)));
                }
                self.pending.advance(n);
                self.unflushed = true;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *dst).poll_flush(cx)).map_err(|e| Fault::Write(e.kind()))?;
                self.unflushed = false;
            }
            if self.eof {
                // pass the end on; a side already gone cannot fail the other's close
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut *src).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    // waiting: hold no buffer
                    if self.pending.capacity() != 0 {
                        self.pending = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e.kind()))),
                Poll::Ready(Ok(())) => {}
            }
            let n = buf.filled().len();
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.bytes += n as u64;
            self.moved = true;
            // what the destination takes now goes from the scratch buffer; the rest waits
            let mut written = 0;
            while written < n {
                match Pin::new(&mut *dst).poll_write(cx, &scratch[written..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero)))
                    }
                    Poll::Ready(Ok(k)) => written += k,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Write(e.kind()))),
                    Poll::Pending => break,
                }
            }
            self.unflushed |= written > 0;
            if written < n {
                self.pending.extend_from_slice(&scratch[written..n]);
                // the destination's waker is set: it wakes this direction when it drains
                return Poll::Pending;
            }
        }
        // a source that always has more: let others run, then go on
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    /// Relay between the far ends of two pipes, in a task.
    fn spawn_relay(
        mut client_end: DuplexStream,
        mut upstream_end: DuplexStream,
        early: Early,
        idle: Duration,
    ) -> JoinHandle<Relayed> {
        tokio::spawn(async move { relay(&mut client_end, &mut upstream_end, early, idle).await })
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_close_on_each_side_ends_it() {
        let (mut client, client_end) = duplex(1024);
        let (mut upstream, upstream_end) = duplex(1024);
        let early = Early {
            to_upstream: Bytes::from_static(b"early-up"),
            to_client: Bytes::from_static(b"early-down"),
        };
        let task = spawn_relay(client_end, upstream_end, early, Duration::from_secs(5));
        let mut buf = [0u8; 64];
        let n = upstream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"early-up");
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"early-down");
        client.write_all(b"ping").await.unwrap();
        let n = upstream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        upstream.write_all(b"pong!").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong!");
        // the client ends its output: the upstream reads the end, and may still answer
        client.shutdown().await.unwrap();
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 0);
        upstream.write_all(b"bye").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"bye");
        upstream.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        let relayed = task.await.unwrap();
        assert_eq!(
            relayed,
            Relayed {
                to_upstream: 12,
                to_client: 18,
                end: End::Closed
            }
        );
    }

    #[tokio::test]
    async fn a_slow_reader_gets_everything_in_order() {
        // 1 MiB through pipes of 256 bytes: most writes find the destination full
        let (mut client, client_end) = duplex(256);
        let (mut upstream, upstream_end) = duplex(256);
        let task = spawn_relay(
            client_end,
            upstream_end,
            Early::default(),
            Duration::from_secs(5),
        );
        let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                upstream.write_all(&sent).await.unwrap();
                upstream.shutdown().await.unwrap();
                upstream
            })
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
        assert!(got == sent, "{} bytes came, {} sent", got.len(), sent.len());
        drop(client);
        drop(writer.await.unwrap());
        let relayed = task.await.unwrap();
        assert_eq!(relayed.to_client, 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_both_ways_ends_it_and_traffic_keeps_it() {
        let (mut client, client_end) = duplex(1024);
        let (_upstream, upstream_end) = duplex(1024);
        let task = spawn_relay(
            client_end,
            upstream_end,
            Early::default(),
            Duration::from_secs(10),
        );
        // a byte every 6 s keeps it for 30 s past its idle time
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let relayed = task.await.unwrap();
        assert_eq!(relayed.end, End::Idle);
        assert_eq!(relayed.to_upstream, 5);
    }

    #[tokio::test]
    async fn a_side_that_fails_ends_it_named() {
        let (client, client_end) = duplex(1024);
        let (mut upstream, upstream_end) = duplex(1024);
        let task = spawn_relay(
            client_end,
            upstream_end,
            Early::default(),
            Duration::from_secs(5),
        );
        drop(client);
        // the client's end passed on as the upstream's
        let mut buf = [0u8; 8];
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 0);
        // writing to a client that is gone fails on the client's side
        upstream.write_all(b"late").await.unwrap();
        let relayed = task.await.unwrap();
        assert!(matches!(relayed.end, End::Client(_)), "{relayed:?}");
    }
}
