//! Giving freed memory back to the system once clients leave.
//!
//! The binary's allocator, mimalloc, returns the pages that frees have emptied only after a
//! delay (its `purge_delay`, 1 s), and only when some thread calls into it after that delay.
//! Two things kept memory in the process after its clients had gone (issue 16):
//! - A gateway whose clients all leave at once goes quiet, so nothing called in. Housekeeping
//!   therefore asks for the purge every second; when nothing is due, that is a clock read
//!   and a comparison inside mimalloc.
//! - A page goes back only once its owner thread has seen its blocks freed. Tokio moves
//!   connection tasks between the proxy's worker threads, so a connection's memory is often
//!   freed on another thread than the one that allocated it, and an idle owner never looks.
//!   So after many connections closed, each worker is asked to collect its own pages, by a
//!   task spawned on the proxy's runtime for each until every worker has run one.
//! - Pingora's fast timer keeps each 10 ms slot it hands out (a tree entry and two `Arc`s)
//!   until the slot's deadline, even when the wait it bounded ended long ago. After 19,500
//!   clients left, the slots of their head, idle and TLS handshake timeouts stayed for up to
//!   `client_idle`, scattered through the pages the connections had used, and kept those
//!   pages in the process: RSS after the close was +50% (plain), +97% (TLS), +51%
//!   (WebSockets). Tokio's timer drops an entry with its wait, so every timeout of a second
//!   or more goes to tokio ([`TOKIO_TIMEOUTS_ABOVE_SECONDS`]); that also measured ~1% fewer
//!   instructions per request.
//! - Memory is also freed with no client leaving: idle upstream connections leave the pool
//!   `upstream_idle` after their last use, typically once the clients have gone. So the
//!   workers also collect every [`COLLECT_EVERY`], whatever closed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pingora::server::ShutdownWatch;
use tokio::runtime::Handle;

use crate::traffic::Connections;

/// Pingora's `fast_timeout_to_tokio_threshold_seconds`: timeouts longer than this many
/// whole seconds run on tokio's timer, the shorter ones (under a second) on Pingora's.
pub const TOKIO_TIMEOUTS_ABOVE_SECONDS: Option<u64> = Some(0);

/// How often the purge is asked for: mimalloc's own delay, so pages go back about one to
/// two seconds after they were emptied.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// Connections closed since the workers last collected that make them collect again.
const CLOSED_FOR_COLLECT: usize = 256;
/// The longest the workers go without collecting: a collect visits each page of a worker
/// once, tens of microseconds with 20,000 connections open.
const COLLECT_EVERY: Duration = Duration::from_secs(10);
/// Rounds of collecting tasks, this far apart, before giving up on a busy worker.
const COLLECT_ROUNDS: usize = 20;
const COLLECT_ROUND_GAP: Duration = Duration::from_millis(10);

/// The proxy's worker runtime, as the first connection finds it.
#[derive(Debug, Default)]
pub struct Workers {
    runtime: OnceLock<Handle>,
}

impl Workers {
    /// Called on a worker thread for each new connection: one atomic load once known.
    pub fn note_current(&self) {
        if self.runtime.get().is_none() {
            if let Ok(handle) = Handle::try_current() {
                let _ = self.runtime.set(handle);
            }
        }
    }
}

/// Purge every [`PURGE_EVERY`], and have the `threads` workers collect after many
/// connections closed, until shutdown.
pub async fn return_freed_memory(
    connections: Arc<Connections>,
    workers: Arc<Workers>,
    threads: usize,
    mut shutdown: ShutdownWatch,
) {
    let mut high = connections.open();
    let mut collected = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        purge(false);
        let open = connections.open();
        high = high.max(open);
        if high - open >= CLOSED_FOR_COLLECT || collected.elapsed() >= COLLECT_EVERY {
            if let Some(runtime) = workers.runtime.get() {
                collect_on_every_worker(runtime, threads).await;
            }
            high = open;
            collected = Instant::now();
        }
    }
}

/// Spawn collecting tasks on `runtime` until `threads` distinct threads have run one (or
/// the rounds run out: a worker busy for that long collects as it allocates anyway).
async fn collect_on_every_worker(runtime: &Handle, threads: usize) {
    let done: Arc<Mutex<HashSet<ThreadId>>> = Arc::default();
    for _ in 0..COLLECT_ROUNDS {
        if done.lock().map_or(true, |d| d.len() >= threads) {
            return;
        }
        for _ in 0..threads {
            let done = done.clone();
            runtime.spawn(async move {
                let first = done
                    .lock()
                    .is_ok_and(|mut d| d.insert(std::thread::current().id()));
                if first {
                    // every page of this thread, the full ones too: those are the ones
                    // whose blocks other threads freed
                    purge(true);
                }
            });
        }
        tokio::time::sleep(COLLECT_ROUND_GAP).await;
    }
}

/// Collect this thread's emptied pages and purge, process-wide, the free memory whose delay
/// has passed (`force`: this thread's full pages too, and the purge without delay).
/// Harmless where mimalloc is not the global allocator (tests): it then has nothing to
/// give back.
fn purge(force: bool) {
    // SAFETY: mi_collect may be called from any thread at any time; it touches only
    // mimalloc's own state.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

/// Called from the binaries' `.init_array`, before Rust's runtime and so before the first
/// allocation: mimalloc then commits arena memory as it is used instead of up front, which
/// takes idle RSS from 24 to 16 MiB.
pub extern "C" fn mimalloc_lazy_commit() {
    // `mi_option_arena_eager_commit` is option 4 in mimalloc v3's mimalloc.h (the crate's
    // constants predate it); 0 turns eager commit off.
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: setting an option is a plain store in mimalloc, valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// Send OpenSSL's allocations to mimalloc; must run before OpenSSL allocates anything. In
/// the system allocator, what a TLS connection held stayed in the process after it closed
/// (its free lists keep it), while mimalloc gives it back. False if OpenSSL had allocated.
pub fn openssl_uses_mimalloc() -> bool {
    // SAFETY: the three functions have the signatures OpenSSL 3 declares for them, and
    // CRYPTO_set_mem_functions refuses (returns 0) once OpenSSL has allocated.
    unsafe {
        openssl_alloc::CRYPTO_set_mem_functions(
            openssl_alloc::malloc,
            openssl_alloc::realloc,
            openssl_alloc::free,
        ) == 1
    }
}

/// OpenSSL 3's allocator hooks, which openssl-sys does not declare.
mod openssl_alloc {
    use std::ffi::{c_char, c_int, c_void};

    extern "C" {
        pub fn CRYPTO_set_mem_functions(
            malloc: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
            realloc: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            free: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
        ) -> c_int;
    }

    pub unsafe extern "C" fn malloc(
        size: usize,
        _file: *const c_char,
        _line: c_int,
    ) -> *mut c_void {
        // SAFETY: mi_malloc takes any size
        unsafe { libmimalloc_sys::mi_malloc(size) }
    }

    pub unsafe extern "C" fn realloc(
        ptr: *mut c_void,
        size: usize,
        _file: *const c_char,
        _line: c_int,
    ) -> *mut c_void {
        // SAFETY: OpenSSL passes null or a pointer it had from `malloc` or `realloc` here
        unsafe { libmimalloc_sys::mi_realloc(ptr, size) }
    }

    pub unsafe extern "C" fn free(ptr: *mut c_void, _file: *const c_char, _line: c_int) {
        // SAFETY: as for realloc
        unsafe { libmimalloc_sys::mi_free(ptr) }
    }
}
