//! `PUT /config` and `POST /config/validate`: who may write, the body, and each outcome of
//! a write as its HTTP answer (the one place they are mapped). Every write is logged: from
//! which address, the old and new hash, and the result.

use http::{header, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::config::{self, ConfigError};
use crate::control::fleet::Purge;
use crate::control::{Current, WriteError, Written};

use super::Answer;

/// The largest document taken (a policy of thousands of routes fits in far less).
const MAX_DOCUMENT: usize = 1 << 20;

/// The answer to a write (`put`) or a validation.
pub(super) async fn answer(current: &Current, session: &mut ServerSession, put: bool) -> Answer {
    let what = if put {
        "PUT /config"
    } else {
        "POST /config/validate"
    };
    let peer = session
        .client_addr()
        .map_or_else(|| "an unknown address".to_string(), ToString::to_string);
    let before = current.document().hash;
    let answer = match admit(current, session, put).await {
        Err(refused) => refused,
        Ok(text) if put => {
            let if_match = session
                .req_header()
                .headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string);
            written(current.write(&text, if_match.as_deref()).await, &text)
        }
        Ok(text) => match current.check(&text) {
            Ok(hash) => Answer::json(StatusCode::OK, &json!({ "valid": true, "hash": hash })),
            Err(e) => invalid(&e),
        },
    };
    let after = current.document().hash;
    let outcome = String::from_utf8_lossy(&answer.body);
    let outcome = outcome.split_whitespace().collect::<Vec<_>>().join(" ");
    if put {
        log::info!(
            "admin: {what} from {peer}: {before} -> {after}: {} {}",
            answer.status.as_u16(),
            truncated(&outcome, 300)
        );
    } else {
        log::info!(
            "admin: {what} from {peer}: {} {}",
            answer.status.as_u16(),
            truncated(&outcome, 300)
        );
    }
    answer
}

fn truncated(text: &str, at: usize) -> &str {
    match text.char_indices().nth(at) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer::json(status, &json!({ "error": message.into() }))
}

/// Whether this request may write: writes on, a loopback client, the write token.
fn authorize(
    current: &Current,
    session: &ServerSession,
    allow_off: &'static str,
) -> Result<(), Answer> {
    let rt = current.load();
    let Some(admin) = rt.admin.as_ref().filter(|a| a.writes_on()) else {
        return Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "writes are off: set [admin] write_token_env to the name of an environment variable that holds a token (16 bytes or more), then send it as Authorization: Bearer <token>",
        )
        .with(header::ALLOW, allow_off));
    };
    let loopback = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| a.ip().is_loopback());
    if !loopback {
        return Err(error(
            StatusCode::FORBIDDEN,
            "writes are taken only from loopback: the admin listener has no TLS, and a token must not cross the network in the clear",
        ));
    }
    let authorization = session
        .req_header()
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !admin.admits_write(authorization) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the write token is needed: Authorization: Bearer <the token in [admin] write_token_env>",
        ));
    }
    Ok(())
}

/// Whether this request may write, and its body as text; or the answer that refuses it.
async fn admit(
    current: &Current,
    session: &mut ServerSession,
    put: bool,
) -> Result<String, Answer> {
    // with writes off, /config is read-only and /config/validate takes nothing
    authorize(current, session, if put { "GET, HEAD" } else { "" })?;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the document is larger than {MAX_DOCUMENT} bytes"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DOCUMENT as u64) {
        return Err(too_large());
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && session.write_continue_response().await.is_err() {
        return Err(not_a_document("the client went away"));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(not_a_document(&format!("the body could not be read: {e}"))),
        }
    }
    // a byte order mark is no part of the document
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&body);
    if body.is_empty() {
        return Err(not_a_document(
            "the document is empty, which would remove every route and policy: to clear them on purpose, send a document that holds only a comment",
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| not_a_document("the document is not UTF-8 text"))
}

/// 400 for a body that is no document at all, in the shape of a document's errors.
fn not_a_document(message: &str) -> Answer {
    Answer::json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": message, "errors": [{ "line": null, "column": null, "key": null, "message": message, "text": message }] }),
    )
}

/// A write's outcome as its answer.
fn written(result: Result<Written, WriteError>, text: &str) -> Answer {
    match result {
        Ok(Written::Applied {
            hash,
            previous,
            generation,
        }) => Answer::json(
            StatusCode::OK,
            &json!({ "result": "applied", "hash": hash, "previous": previous, "generation": generation }),
        )
        .with(header::ETAG, format!("\"{hash}\"")),
        Ok(Written::Unchanged { hash, generation }) => Answer::json(
            StatusCode::OK,
            &json!({ "result": "unchanged", "hash": hash, "generation": generation }),
        )
        .with(header::ETAG, format!("\"{hash}\"")),
        Err(WriteError::Invalid(e)) => invalid(&e),
        Err(e @ WriteError::PreconditionRequired) => {
            error(StatusCode::PRECONDITION_REQUIRED, e.to_string())
        }
        Err(ref e @ WriteError::Stale { ref current, .. }) => Answer::json(
            StatusCode::PRECONDITION_FAILED,
            &json!({ "error": e.to_string(), "current": current }),
        )
        .with(header::ETAG, format!("\"{current}\"")),
        Err(e @ WriteError::StoreUnavailable(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).with(header::RETRY_AFTER, "5")
        }
        Err(e @ WriteError::Io(_)) => {
            log::error!("admin: PUT /config of {}: {e}", config::content_hash(text));
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// 400: every error of the document, each with its line, column and key when it has them,
/// and the line as `pylon -t` prints it.
fn invalid(e: &ConfigError) -> Answer {
    let one = |e: &ConfigError| -> Value {
        match e {
            ConfigError::Invalid {
                line,
                column,
                key,
                message,
                ..
            } => {
                json!({ "line": line, "column": column, "key": key, "message": message, "text": e.to_string() })
            }
            other => {
                json!({ "line": null, "column": null, "key": null, "message": other.to_string(), "text": other.to_string() })
            }
        }
    };
    let errors: Vec<Value> = match e {
        ConfigError::Many(all) => all.iter().map(one).collect(),
        e => vec![one(e)],
    };
    Answer::json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": "the document is not valid; nothing was applied", "errors": errors }),
    )
}

/// `DELETE /cache?path=/x/1` (that path: every query, host, caller and variant) or
/// `?prefix=/x` (every path under it): the entries removed here, as `{"purged": N}`; in a
/// fleet, published to every node too (`"fleet": true`, or the error when the store is
/// away: this node's entries are gone all the same).
pub(super) async fn purge(current: &Current, session: &ServerSession) -> Answer {
    let peer = session
        .client_addr()
        .map_or_else(|| "an unknown address".to_string(), ToString::to_string);
    let answer = match authorize(current, session, "").and_then(|()| purge_target(session)) {
        Err(refused) => refused,
        Ok(target) => {
            let purged = target.run(&current.peek().shared.cache);
            let fleet = match current.fleet() {
                None => Value::Null,
                Some(fleet) => match fleet.publish_purge(&target).await {
                    Ok(()) => Value::Bool(true),
                    Err(e) => Value::String(format!("the other nodes were not told: {e}")),
                },
            };
            Answer::json(StatusCode::OK, &json!({ "purged": purged, "fleet": fleet }))
        }
    };
    log::info!(
        "admin: DELETE /cache?{} from {peer}: {} {}",
        session.req_header().uri.query().unwrap_or(""),
        answer.status.as_u16(),
        String::from_utf8_lossy(&answer.body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    answer
}

/// What a purge's query names: `path` or `prefix`, one of them, starting with `/`.
fn purge_target(session: &ServerSession) -> Result<Purge, Answer> {
    let query = session.req_header().uri.query().unwrap_or("");
    let (mut path, mut prefix) = (None, None);
    for (name, value) in url_pairs(query) {
        match name.as_str() {
            "path" => path = Some(value),
            "prefix" => prefix = Some(value),
            _ => {}
        }
    }
    let target = match (path, prefix) {
        (Some(p), None) => Purge::Path(p),
        (None, Some(p)) => Purge::Prefix(p),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "say what to purge: ?path=/x/1 (one path) or ?prefix=/x (every path under it)",
            ))
        }
    };
    match &target {
        Purge::Path(p) | Purge::Prefix(p) if p.starts_with('/') => Ok(target),
        _ => Err(error(StatusCode::BAD_REQUEST, "a path starts with /")),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A query string's pairs, percent-decoded (`+` is a space).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (decode(n), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            url_pairs("path=%2Fx%2F1&prefix=/a+b&bad=%zz&end=%4"),
            vec![
                ("path".to_string(), "/x/1".to_string()),
                ("prefix".to_string(), "/a b".to_string()),
                ("bad".to_string(), "%zz".to_string()),
                ("end".to_string(), "%4".to_string()),
            ]
        );
    }
}
