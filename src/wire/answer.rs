//! The answers the gateway makes itself, and the one place that maps failures to them.
//!
//! Every synthetic response has the tutorial gateway's JSON shape:
//! `{"code":404,"status":"Error","message":"Route not found.","data":null}`.
//! `fail_to_proxy` turns a Pingora error into a [`GatewayError`] with [`GatewayError::from_proxy_error`];
//! `request_filter` builds its early answers (404, 429, 400) directly from the enum.

use http::header::{self, HeaderMap, HeaderValue};
use pingora::{Error, ErrorSource, ErrorType};

use crate::wire::values::{ALLOWED_METHODS, JSON, NO_STORE};

/// What went wrong, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// The request was malformed (bad path, bad header framing).
    BadRequest,
    /// Credentials missing or invalid.
    Unauthorized,
    /// Valid credentials without the rights the route needs.
    Forbidden,
    /// No route matches the request path.
    NotFound,
    /// The method is refused (TRACE, CONNECT).
    MethodNotAllowed,
    /// The request head did not arrive within `timeouts.client_header`.
    RequestTimeout,
    /// The request target (the request line) is longer than the gateway takes.
    UriTooLong,
    /// The header fields are larger, or more, than the gateway takes.
    HeadersTooLarge,
    /// The request body is larger than the route's `max_body`.
    PayloadTooLarge,
    /// An `Expect` the gateway cannot meet (anything but `100-continue`).
    ExpectationFailed,
    /// The client spent its budget; `retry_after` is in seconds.
    RateLimited { retry_after: u32 },
    /// The upstream refused, reset or answered with something that is not HTTP.
    BadGateway,
    /// No upstream instance is available to take the request.
    ServiceUnavailable { retry_after: u32 },
    /// The upstream did not connect or answer in the configured time.
    GatewayTimeout,
    /// A bug or resource problem inside the gateway itself.
    Internal,
    /// A transfer coding the gateway does not forward (anything but `chunked`).
    NotImplemented,
}

impl GatewayError {
    pub fn status(self) -> u16 {
        match self {
            GatewayError::BadRequest => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::Forbidden => 403,
            GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::RequestTimeout => 408,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::UriTooLong => 414,
            GatewayError::ExpectationFailed => 417,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::Internal => 500,
            GatewayError::NotImplemented => 501,
            GatewayError::BadGateway => 502,
            GatewayError::ServiceUnavailable { .. } => 503,
            GatewayError::GatewayTimeout => 504,
        }
    }

    /// The JSON body, built at compile time so an error answer costs no formatting.
    pub fn body(self) -> &'static [u8] {
        match self {
            GatewayError::BadRequest => {
                br#"{"code":400,"status":"Error","message":"Bad request.","data":null}"#
            }
            GatewayError::Unauthorized => {
                br#"{"code":401,"status":"Error","message":"Unauthorized.","data":null}"#
            }
            GatewayError::Forbidden => {
                br#"{"code":403,"status":"Error","message":"Forbidden.","data":null}"#
            }
            GatewayError::NotFound => {
                br#"{"code":404,"status":"Error","message":"Route not found.","data":null}"#
            }
            GatewayError::MethodNotAllowed => {
                br#"{"code":405,"status":"Error","message":"Method not allowed.","data":null}"#
            }
            GatewayError::RequestTimeout => {
                br#"{"code":408,"status":"Error","message":"Request timeout.","data":null}"#
            }
            GatewayError::PayloadTooLarge => {
                br#"{"code":413,"status":"Error","message":"Payload too large.","data":null}"#
            }
            GatewayError::UriTooLong => {
                br#"{"code":414,"status":"Error","message":"URI too long.","data":null}"#
            }
            GatewayError::RateLimited { .. } => {
                br#"{"code":429,"status":"Error","message":"Rate limit exceeded.","data":null}"#
            }
            GatewayError::ExpectationFailed => {
                br#"{"code":417,"status":"Error","message":"Expectation failed.","data":null}"#
            }
            GatewayError::HeadersTooLarge => {
                br#"{"code":431,"status":"Error","message":"Request header fields too large.","data":null}"#
            }
            GatewayError::Internal => {
                br#"{"code":500,"status":"Error","message":"Internal server error.","data":null}"#
            }
            GatewayError::NotImplemented => {
                br#"{"code":501,"status":"Error","message":"Not implemented.","data":null}"#
            }
            GatewayError::BadGateway => {
                br#"{"code":502,"status":"Error","message":"Bad gateway.","data":null}"#
            }
            GatewayError::ServiceUnavailable { .. } => {
                br#"{"code":503,"status":"Error","message":"Service unavailable.","data":null}"#
            }
            GatewayError::GatewayTimeout => {
                br#"{"code":504,"status":"Error","message":"Gateway timeout.","data":null}"#
            }
        }
    }

    /// The reason phrase of the status line.
    pub fn reason(self) -> &'static str {
        http::StatusCode::from_u16(self.status())
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
    }

    /// Add the fields every answer of this kind carries to `headers` (which start as the
    /// security defaults): the JSON body's type and length, `no-store`, `Retry-After`, and
    /// for a 405 the default `Allow` (a route with its own `methods` replaces it).
    pub fn add_fields(self, headers: &mut HeaderMap) {
        headers.insert(header::CONTENT_TYPE, JSON);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body().len()));
        headers.insert(header::CACHE_CONTROL, NO_STORE);
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self == GatewayError::MethodNotAllowed {
            headers.insert(header::ALLOW, ALLOWED_METHODS);
        }
    }

    /// Seconds for a `Retry-After` header, when the answer has one.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            GatewayError::RateLimited { retry_after }
            | GatewayError::ServiceUnavailable { retry_after } => Some(retry_after),
            _ => None,
        }
    }

    /// Map an error that ended proxying to the answer the client gets.
    ///
    /// `None` means the client connection is already gone and nothing can be written.
    /// Pingora's own default answers 502 for upstream timeouts; a gateway owes the client
    /// a 504 there, so the timeouts are singled out first.
    pub fn from_proxy_error(e: &Error) -> Option<GatewayError> {
        use ErrorType::*;
        match e.etype() {
            HTTPStatus(code) => return Some(Self::from_status(*code)),
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
                if *e.esource() != ErrorSource::Downstream =>
            {
                return Some(GatewayError::GatewayTimeout);
            }
            _ => {}
        }
        match e.esource() {
            ErrorSource::Upstream => Some(GatewayError::BadGateway),
            ErrorSource::Downstream => match e.etype() {
                // the client hung up or its socket broke: nobody to answer
                WriteError | ReadError | ConnectionClosed | ReadTimedout | WriteTimedout => None,
                _ => Some(GatewayError::BadRequest),
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                // connection-level failures raised before a source was attached come
                // from talking to the upstream
                ConnectRefused | ConnectError | ConnectNoRoute | ConnectProxyFailure
                | TLSHandshakeFailure | InvalidCert | ConnectionClosed => {
                    Some(GatewayError::BadGateway)
                }
                _ => Some(GatewayError::Internal),
            },
        }
    }

    fn from_status(code: u16) -> GatewayError {
        match code {
            401 => GatewayError::Unauthorized,
            403 => GatewayError::Forbidden,
            413 => GatewayError::PayloadTooLarge,
            417 => GatewayError::ExpectationFailed,
            400..=499 if code != 404 && code != 429 => GatewayError::BadRequest,
            404 => GatewayError::NotFound,
            429 => GatewayError::RateLimited { retry_after: 1 },
            503 => GatewayError::ServiceUnavailable { retry_after: 1 },
            504 => GatewayError::GatewayTimeout,
            502 => GatewayError::BadGateway,
            _ => GatewayError::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn upstream_timeouts_are_504_not_502() {
        for t in [ErrorType::ConnectTimedout, ErrorType::ReadTimedout] {
            let e = err(t, ErrorSource::Upstream);
            assert_eq!(
                GatewayError::from_proxy_error(&e),
                Some(GatewayError::GatewayTimeout)
            );
        }
    }

    #[test]
    fn refused_and_reset_upstreams_are_502() {
        for t in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectionClosed,
            ErrorType::InvalidHTTPHeader,
        ] {
            let e = err(t, ErrorSource::Upstream);
            assert_eq!(
                GatewayError::from_proxy_error(&e),
                Some(GatewayError::BadGateway)
            );
        }
    }

    #[test]
    fn a_vanished_client_gets_no_answer() {
        let e = err(ErrorType::ConnectionClosed, ErrorSource::Downstream);
        assert_eq!(GatewayError::from_proxy_error(&e), None);
    }

    #[test]
    fn a_malformed_request_body_is_400() {
        let e = err(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream);
        assert_eq!(
            GatewayError::from_proxy_error(&e),
            Some(GatewayError::BadRequest)
        );
    }

    #[test]
    fn bodies_are_the_tutorial_json_shape() {
        let all = [
            GatewayError::BadRequest,
            GatewayError::Unauthorized,
            GatewayError::Forbidden,
            GatewayError::NotFound,
            GatewayError::MethodNotAllowed,
            GatewayError::RequestTimeout,
            GatewayError::PayloadTooLarge,
            GatewayError::UriTooLong,
            GatewayError::ExpectationFailed,
            GatewayError::RateLimited { retry_after: 3 },
            GatewayError::HeadersTooLarge,
            GatewayError::Internal,
            GatewayError::NotImplemented,
            GatewayError::BadGateway,
            GatewayError::ServiceUnavailable { retry_after: 3 },
            GatewayError::GatewayTimeout,
        ];
        for e in all {
            let v: serde_json::Value = serde_json::from_slice(e.body()).unwrap();
            assert_eq!(v["code"], e.status());
            assert_eq!(v["status"], "Error");
            assert!(v["message"].as_str().unwrap().ends_with('.'));
            assert!(v["data"].is_null());
        }
    }
}
