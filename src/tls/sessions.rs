//! TLS 1.2 sessions by id, for clients that take no ticket, shared by every listener and
//! worker thread of the process.
//!
//! OpenSSL's own server cache cannot carry them: it belongs to one listener's context,
//! and it drops a session whenever a connection ends without the server's close_notify,
//! which is how Pingora ends most connections (the client closes first, a keep-alive
//! times out). Here OpenSSL's internal cache is off; a new session is stored on its
//! creation and looked up by id, and nothing removes it but its age or the cache's bound
//! (the oldest goes first). Sessions are kept as DER, a few hundred bytes each.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pingora::tls::error::ErrorStack;
use pingora::tls::ssl::{SslContextBuilder, SslSession, SslSessionCacheMode};

/// Sessions kept at most (about 2 MiB of DER).
const CAPACITY: usize = 10_000;
/// How long a session resumes after its full handshake (nginx's `ssl_session_timeout` is
/// 5 minutes).
const LIFETIME: Duration = Duration::from_secs(600);

/// The process's sessions by id.
#[derive(Default)]
pub struct SessionCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Vec<u8>, (Vec<u8>, Instant)>,
    /// Ids in the order they came, for evicting the oldest.
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    /// Store and look sessions up here instead of in `ctx`'s own cache.
    pub(super) fn install(self: &Arc<Self>, ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        ctx.set_session_cache_mode(SslSessionCacheMode::SERVER | SslSessionCacheMode::NO_INTERNAL);
        let store = Arc::clone(self);
        ctx.set_new_session_callback(move |_, session| store.insert(&session));
        let look = Arc::clone(self);
        // SAFETY: the crate asks that the returned session not be associated with another
        // context. Each is decoded afresh from DER, so it belongs to no context, even when
        // another listener's context made it.
        unsafe {
            ctx.set_get_session_callback(move |_, id| look.get(id));
        }
        Ok(())
    }

    fn insert(&self, session: &SslSession) {
        let id = session.id();
        let Ok(der) = session.to_der() else { return };
        if id.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while inner.order.len() >= CAPACITY {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.by_id.remove(&old);
                }
                None => break,
            }
        }
        if inner
            .by_id
            .insert(id.to_vec(), (der, Instant::now()))
            .is_none()
        {
            inner.order.push_back(id.to_vec());
        }
    }

    fn get(&self, id: &[u8]) -> Option<SslSession> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (der, stored) = inner.by_id.get(id)?;
        if stored.elapsed() > LIFETIME {
            return None;
        }
        SslSession::from_der(der).ok()
    }

    /// Sessions held now.
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }
}

impl std::fmt::Debug for SessionCache {
    /// How many; never a session.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("sessions", &self.len())
            .finish()
    }
}
