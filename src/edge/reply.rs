//! The bytes of a refusal written at the edge, where no Pingora session exists yet: the
//! same JSON body and headers as the gateway's other answers (see [`crate::error`]), and
//! `Connection: close`.

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use pingora::protocols::http::date::get_cached_date;

use crate::error::GatewayError;
use crate::headers::names::X_REQUEST_ID;
use crate::headers::values::CLOSE;
use crate::runtime::Runtime;

/// A whole HTTP/1.1 response for `err`.
pub fn render(
    rt: &Runtime,
    err: GatewayError,
    origin: Option<&[u8]>,
    request_id: &HeaderValue,
    head_only: bool,
    tls: bool,
) -> BytesMut {
    let body = err.body();
    let mut headers = rt.security.defaults(tls);
    let mut request = HeaderMap::new();
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_bytes(o).ok()) {
        request.insert(header::ORIGIN, origin);
    }
    rt.cors.apply(&rt.cors.allow_origin(&request), &mut headers);
    err.add_fields(&mut headers);
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(header::CONNECTION, CLOSE);
    headers.insert(header::DATE, get_cached_date());

    let mut out = BytesMut::with_capacity(1024 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(itoa::Buffer::new().format(err.status()).as_bytes());
    out.put_u8(b' ');
    out.put_slice(err.reason().as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    if !head_only {
        out.put_slice(body);
    }
    out
}
