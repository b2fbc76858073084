//! Reading from a socket without holding a buffer while it is silent.
//!
//! An idle keep-alive connection spends its life in a read that waits for the next request
//! head. A read into the connection's own buffer needs that buffer before the wait, which
//! made every idle connection hold 4 KiB for nothing (issue 16). So reads go through one
//! buffer per thread instead: it is lent to a read only while the read is polled, and what
//! arrives is copied out to bytes the connection allocates only when there is something to
//! keep. The edge's head reads ([`read_into`]) and the relay of an upgraded connection
//! ([`with`], see `relay`) both read this way.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// What one read can take: a large head in few reads, with the pipelined requests after it;
/// and for a relay, a loopback socket's usual backlog at once, so that a bulk transfer
/// takes few reads and writes (at 16 KiB, a relayed GiB cost 1.40 s of CPU).
const SCRATCH_SIZE: usize = 64 * 1024;
/// The fallback for a thread whose buffer is already lent, which no read here does.
const FALLBACK_SIZE: usize = 2048;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Lend this thread's buffer to `f` (a buffer of its own when it is already lent): for a
/// poll that reads and passes on what it read before it returns.
pub fn with<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut [0; FALLBACK_SIZE]),
    })
}

/// Read once from `stream` and append what came to `pending`: the number of bytes, 0 when
/// the client closed its side.
pub async fn read_into<S>(stream: &mut S, pending: &mut BytesMut) -> io::Result<usize>
where
    S: AsyncRead + Unpin + ?Sized,
{
    poll_fn(|cx| with(|scratch| poll_into(Pin::new(&mut *stream), cx, scratch, pending))).await
}

fn poll_into<S>(
    stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    buffer: &mut [u8],
    pending: &mut BytesMut,
) -> Poll<io::Result<usize>>
where
    S: AsyncRead + ?Sized,
{
    let mut buf = ReadBuf::new(buffer);
    ready!(stream.poll_read(cx, &mut buf))?;
    pending.extend_from_slice(buf.filled());
    Poll::Ready(Ok(buf.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer_and_keeps_what_arrives() {
        let (mut client, mut server) = tokio::io::duplex(4 * SCRATCH_SIZE);
        let mut pending = BytesMut::new();
        let read = tokio::spawn(async move {
            let n = read_into(&mut server, &mut pending).await.unwrap();
            (n, pending, server)
        });
        tokio::task::yield_now().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (n, mut pending, mut server) = read.await.unwrap();
        assert_eq!(n, 16);
        assert_eq!(&pending[..], b"GET / HTTP/1.1\r\n");
        // the next read appends; a large one arrives in scratch-sized pieces
        let big = vec![b'a'; SCRATCH_SIZE + 100];
        client.write_all(&big).await.unwrap();
        let mut total = 0;
        while total < big.len() {
            total += read_into(&mut server, &mut pending).await.unwrap();
        }
        assert_eq!(pending.len(), 16 + big.len());
        drop(client);
        assert_eq!(read_into(&mut server, &mut pending).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_empty_pending_stays_unallocated_until_bytes_come() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let mut pending = BytesMut::new();
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            read_into(&mut server, &mut pending),
        )
        .await;
        assert!(waited.is_err(), "nothing was sent");
        assert_eq!(pending.capacity(), 0);
    }
}
