//! Screening an HTTP/1 request head before Pingora parses it.
//!
//! [`screen`] looks at the raw bytes of one request head (request line, fields, blank
//! line) and either refuses it with the gateway's own error or says how the request's
//! body is framed, so that the connection loop hands Pingora exactly one request. The
//! checks are the ones RFC 9112 asks of a server and nginx makes: a request line of
//! exactly three parts, no control bytes in the target, one valid Host on HTTP/1.1,
//! Content-Length as plain digits and never twice, `chunked` as the only transfer coding
//! (anything else is 501, as nginx answers), never both framings at once.

use bytes::{BufMut, BytesMut};

use crate::wire::GatewayError;

/// Header fields one request may carry; more is 431. (Pingora takes 256.)
pub const MAX_FIELDS: usize = 128;
/// The longest method name taken.
const MAX_METHOD: usize = 32;

/// The size limits of a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The request line, method to version.
    pub request_line: usize,
    /// The whole head, request line and fields.
    pub head: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            request_line: 8 * 1024,
            head: 64 * 1024,
        }
    }
}

/// How the body after the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next request starts right after the head.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: where it ends is known once its last chunk has arrived (see
    /// [`chunked_len`]); until then the proxy gets every byte that follows.
    Chunked,
    /// A request to change protocol, without a body: the proxy gets the head alone. What
    /// follows is either a request pipelined behind it (served next when the upstream
    /// declines) or the new protocol's first bytes (the gateway takes them along when it
    /// switches; see [`crate::gateway::HeldBack`]).
    Upgrade,
    /// A request to change protocol with a body: only the proxy can tell where it ends,
    /// so it gets every byte that follows.
    Open,
}

/// A head that passed.
#[derive(Debug, PartialEq, Eq)]
pub struct Screened {
    pub framing: Framing,
    /// An absolute-form target: the head again with `Host` set to the target's authority
    /// (RFC 9112 §3.2.2: the target's authority wins over any Host field).
    pub rewritten: Option<BytesMut>,
    /// `Expect: 100-continue`: the interim answer goes out before the body is read.
    pub expect_continue: bool,
}

/// Finds where a head ends as its bytes arrive, and whether it is over a limit, looking
/// at each byte once however the client splits its writes.
#[derive(Debug, Default)]
pub struct Scan {
    /// Where the request line starts (after any empty lines, which RFC 9112 §2.2 lets a
    /// server skip), once known.
    start: Option<usize>,
    /// Whether the method is complete, and the request line.
    method_done: bool,
    line_done: bool,
    /// Everything before this was looked at.
    scanned: usize,
}

impl Scan {
    /// Look at `buf`, which only grows between calls: `Ok(Some(end))` when the head is
    /// complete (`end` is just past its blank line), `Ok(None)` to wait for more, or the
    /// error for a head over a limit.
    pub fn advance(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Option<usize>, GatewayError> {
        let start = match self.start {
            Some(start) => start,
            None => {
                self.scanned += skip_empty_lines(&buf[self.scanned..]);
                if self.scanned == buf.len() {
                    return over(buf.len(), limits.head, GatewayError::BadRequest);
                }
                self.start = Some(self.scanned);
                self.scanned
            }
        };
        if !self.method_done {
            // refuse what is not HTTP (a TLS handshake on a plain port, say) at once
            // rather than wait for a line end that may never come
            let method = &buf[start..];
            let end = memchr::memchr(b' ', method);
            let method = &method[..end.unwrap_or(method.len())];
            if !method.iter().all(|&b| is_tchar(b)) || method.len() > MAX_METHOD {
                return Err(GatewayError::BadRequest);
            }
            self.method_done = end.is_some();
        }
        if !self.line_done {
            match memchr::memchr(b'\n', &buf[self.scanned..]) {
                Some(i) => {
                    let nl = self.scanned + i;
                    if nl - start > limits.request_line {
                        return Err(GatewayError::UriTooLong);
                    }
                    self.line_done = true;
                    // the blank line may follow at once
                    self.scanned = nl;
                }
                None => {
                    self.scanned = buf.len();
                    return over(
                        buf.len() - start,
                        limits.request_line,
                        GatewayError::UriTooLong,
                    );
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', &buf[self.scanned..]) {
            let nl = self.scanned + i;
            let end = match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => nl + 2,
                (Some(b'\r'), Some(b'\n')) => nl + 3,
                (None, _) | (Some(b'\r'), None) => {
                    // the blank line may be on its way
                    self.scanned = nl;
                    return over(buf.len(), limits.head, GatewayError::HeadersTooLarge);
                }
                _ => {
                    self.scanned = nl + 1;
                    continue;
                }
            };
            if end > limits.head {
                return Err(GatewayError::HeadersTooLarge);
            }
            return Ok(Some(end));
        }
        self.scanned = buf.len();
        over(buf.len(), limits.head, GatewayError::HeadersTooLarge)
    }
}

/// How many bytes of empty lines (which RFC 9112 §2.2 lets a server skip) open `buf`.
fn skip_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// Wait for more unless `len` is already over `limit`.
fn over(len: usize, limit: usize, error: GatewayError) -> Result<Option<usize>, GatewayError> {
    if len > limit {
        Err(error)
    } else {
        Ok(None)
    }
}

/// The value of the first field called `name` in a head that may be malformed: for the
/// CORS headers of a refusal. Best effort.
pub fn field<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The parts of a request line, for the access log of a refused request: best effort.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a [u8],
    pub version: &'a str,
}

/// Split the first line of `head` as well as it can be, whatever its faults.
pub fn request_line(head: &[u8]) -> RequestLine<'_> {
    let start = skip_empty_lines(head);
    let rest = &head[start..];
    let line = memchr::memchr(b'\n', rest).map_or(rest, |i| &rest[..i]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty() && m.len() <= 32 && m.iter().all(|&b| is_tchar(b)))
        .and_then(|m| std::str::from_utf8(m).ok())
        .unwrap_or("-");
    let target = parts.next().unwrap_or(b"-");
    let version = match parts.next() {
        Some(b"HTTP/1.1") => "HTTP/1.1",
        Some(b"HTTP/1.0") => "HTTP/1.0",
        _ => "-",
    };
    RequestLine {
        method,
        target,
        version,
    }
}

/// Check one complete head (as found by [`Scan::advance`]).
pub fn screen(head: &[u8], limits: &HeadLimits) -> Result<Screened, GatewayError> {
    use GatewayError::{BadRequest, ExpectationFailed, MethodNotAllowed, NotImplemented};
    let start = skip_empty_lines(head);
    let rest = &head[start..];
    let line_len = memchr::memchr(b'\n', rest).ok_or(BadRequest)?;
    if line_len > limits.request_line {
        return Err(GatewayError::UriTooLong);
    }
    let line = &rest[..line_len];
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(BadRequest);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(BadRequest),
    };
    // visible ASCII only: no control bytes, NUL or DEL (raw spaces already split the
    // line), and no raw bytes above 0x7f, which a client must percent-encode (RFC 3986)
    if target.is_empty() || target.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return Err(BadRequest);
    }
    if method == b"CONNECT" {
        return Err(MethodNotAllowed);
    }
    let absolute = match target[0] {
        b'/' => None,
        b'*' if target == b"*" && method == b"OPTIONS" => None,
        _ => Some(absolute_authority(target).ok_or(BadRequest)?),
    };

    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade = false;
    let mut expect_continue = false;
    let fields = Fields {
        rest: &rest[line_len + 1..],
        count: 0,
    };
    for field in fields {
        let (name, value) = field?;
        // by length first: most fields are none of these
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return Err(BadRequest);
                }
                host = Some(value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if length.is_some() {
                    return Err(BadRequest);
                }
                length = Some(content_length(value).ok_or(BadRequest)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if chunked || !http11 {
                    // a second field (or a coding list split over fields) or HTTP/1.0's
                    // faulty framing (RFC 9112 §6.1)
                    return Err(if http11 { NotImplemented } else { BadRequest });
                }
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(NotImplemented);
                }
                chunked = true;
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
            // RFC 9110 §10.1.1: an expectation the gateway cannot meet gets 417 rather than
            // being forwarded to an upstream that may ignore it
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(ExpectationFailed);
                }
                expect_continue = true;
            }
            _ => {}
        }
    }
    if chunked && length.is_some() {
        return Err(BadRequest);
    }
    match (host, absolute) {
        // RFC 9112 §3.2: an invalid Host is refused even where the target names the host
        (Some(h), _) if !valid_authority(h) => return Err(BadRequest),
        (None, None) if http11 => return Err(BadRequest),
        _ => {}
    }
    let framing = if upgrade && !chunked && matches!(length, None | Some(0)) {
        Framing::Upgrade
    } else if upgrade {
        Framing::Open
    } else if chunked {
        Framing::Chunked
    } else {
        match length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    let rewritten = absolute.map(|authority| with_host(head, start, line_len, authority));
    Ok(Screened {
        framing,
        rewritten,
        expect_continue,
    })
}

/// The length of the chunked body at the start of `buf`, through its last chunk, trailers
/// and final CRLF, when all of it is there; `None` while it is not, or when it is written
/// in any but the plainest form (then the proxy gets every byte that follows, and its own
/// parser decides). With it, a request pipelined right behind a chunked body stays with the
/// edge and is served next, instead of reaching the proxy as bytes read past the body
/// (which closes the connection and loses the request).
///
/// Strict by design, so that this and the proxy's parser never disagree about where the
/// body ends: hex sizes of at most 15 digits, extensions of token characters, `=`, `;` and
/// spaces only, CRLF line ends, trailer lines without bare CR or LF.
pub fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line = line_at(buf, pos)?;
        let text = &buf[pos..line];
        let digits = text
            .iter()
            .position(|&b| !b.is_ascii_hexdigit())
            .unwrap_or(text.len());
        if digits == 0 || digits > 15 {
            return None;
        }
        let extension = &text[digits..];
        if !extension
            .iter()
            .all(|&b| is_tchar(b) || matches!(b, b';' | b'=' | b' ' | b'\t'))
        {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(&text[..digits]).ok()?, 16).ok()?;
        pos = line + 2;
        if size == 0 {
            // trailers, then the empty line
            loop {
                let end = line_at(buf, pos)?;
                if end == pos {
                    return Some(end + 2);
                }
                pos = end + 2;
            }
        }
        let data_end = pos.checked_add(size)?;
        if buf.get(data_end..data_end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        pos = data_end + 2;
    }
}

/// Where the CRLF-ended line starting at `pos` ends (the index of its CR); `None` when it is
/// incomplete or holds a bare CR or LF.
fn line_at(buf: &[u8], pos: usize) -> Option<usize> {
    let rest = buf.get(pos..)?;
    let lf = memchr::memchr(b'\n', rest)?;
    let cr = lf.checked_sub(1)?;
    if rest[cr] != b'\r' || rest[..cr].contains(&b'\r') {
        return None;
    }
    Some(pos + cr)
}

/// The fields of a head, one `(name, value)` at a time, checked as strictly as the parser
/// behind (httparse, in Pingora) checks them, so that it never refuses what passed here:
/// a token name right before the colon (no space, no folded line), a value of visible
/// characters, spaces, tabs and obs-text; at most [`MAX_FIELDS`] of them.
struct Fields<'a> {
    /// From the next field line to the end of the head.
    rest: &'a [u8],
    count: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), GatewayError>;

    fn next(&mut self) -> Option<Self::Item> {
        let nl = memchr::memchr(b'\n', self.rest)?;
        let line = &self.rest[..nl];
        self.rest = &self.rest[nl + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // the blank line that ends the head
            self.rest = &[];
            return None;
        }
        self.count += 1;
        if self.count > MAX_FIELDS {
            return Some(Err(GatewayError::HeadersTooLarge));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Some(Err(GatewayError::BadRequest));
        };
        let name = &line[..colon];
        let value = trim_ows(&line[colon + 1..]);
        if name.is_empty()
            || !name.iter().all(|&b| is_tchar(b))
            || !value.iter().all(|&b| FIELD_VALUE[usize::from(b)])
        {
            return Some(Err(GatewayError::BadRequest));
        }
        Some(Ok((name, value)))
    }
}

/// A value without the spaces and tabs around it.
fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// Bytes a field value may hold: tab, space, visible ASCII and obs-text.
const FIELD_VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0x09 || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

/// The authority of an absolute-form target (`http://host[:port]/path`): `None` when the
/// target is not one, has no valid authority, or carries userinfo.
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let after_scheme = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = after_scheme
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..end];
    valid_authority(authority).then_some(authority)
}

/// A Host value (RFC 9110 §7.2): a host, a name or an IP literal, with an optional port,
/// and no userinfo. Checked byte by byte, without building a URI.
fn valid_authority(value: &[u8]) -> bool {
    let (host_ok, port) = if value.first() == Some(&b'[') {
        let Some(close) = memchr::memchr(b']', value) else {
            return false;
        };
        let literal = &value[1..close];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let port = match &value[close + 1..] {
            [] => &[][..],
            [b':', port @ ..] => port,
            _ => return false,
        };
        (ok, port)
    } else {
        let (host, port) = match memchr::memrchr(b':', value) {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        };
        (
            !host.is_empty() && host.iter().all(|&b| is_reg_name(b)),
            port,
        )
    };
    host_ok && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// Bytes of a reg-name or IPv4 address: unreserved and sub-delims (RFC 3986 §3.2.2);
/// no percent-encoding (which the URI parser behind refuses) and no userinfo's `@`.
fn is_reg_name(b: u8) -> bool {
    REG_NAME[usize::from(b)]
}

/// `Content-Length`: 1 to 19 digits, nothing else (no sign, list or spaces).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A byte table: alphanumerics and the given punctuation.
const fn table(punctuation: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < punctuation.len() {
        t[punctuation[i] as usize] = true;
        i += 1;
    }
    t
}

const TCHAR: [bool; 256] = table(b"!#$%&'*+-.^_`|~");
const REG_NAME: [bool; 256] = table(b"-._~!$&'()*+,;=");

/// The head with every Host field replaced by one naming `authority`.
fn with_host(head: &[u8], start: usize, line_len: usize, authority: &[u8]) -> BytesMut {
    let line_end = start + line_len + 1;
    let mut out = BytesMut::with_capacity(head.len() + authority.len() + 8);
    out.put_slice(&head[start..line_end]);
    out.put_slice(b"Host: ");
    out.put_slice(authority);
    out.put_slice(b"\r\n");
    let mut at = line_end;
    while at < head.len() {
        let len = memchr::memchr(b'\n', &head[at..]).map_or(head.len() - at, |i| i + 1);
        let field = &head[at..at + len];
        let is_host = field.len() > 5 && field[..5].eq_ignore_ascii_case(b"host:");
        if !is_host {
            out.put_slice(field);
        }
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a head gets: refused while it arrives, or screened once complete.
    fn check(head: &str) -> Result<Screened, GatewayError> {
        let bytes = head.as_bytes();
        match end_of(bytes)? {
            Some(end) => assert_eq!(end, bytes.len(), "{head:?}"),
            None => panic!("incomplete: {head:?}"),
        }
        screen(bytes, &HeadLimits::default())
    }

    fn end_of(buf: &[u8]) -> Result<Option<usize>, GatewayError> {
        Scan::default().advance(buf, &HeadLimits::default())
    }

    /// Feed `buf` a byte at a time, as a slow client would.
    fn end_bytewise(buf: &[u8], limits: &HeadLimits) -> Result<Option<usize>, GatewayError> {
        let mut scan = Scan::default();
        for n in 1..=buf.len() {
            if let Some(end) = scan.advance(&buf[..n], limits)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    #[test]
    fn a_whole_chunked_body_is_measured_and_anything_unusual_is_left_to_the_proxy() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let mut pipelined = body.to_vec();
        pipelined.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(chunked_len(&pipelined), Some(body.len()));
        assert_eq!(chunked_len(body), Some(body.len()));
        let ext = b"a;name=v\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nrest";
        assert_eq!(chunked_len(ext), Some(ext.len() - 4));
        // incomplete: not yet known
        for cut in 1..body.len() {
            assert_eq!(chunked_len(&body[..cut]), None, "{cut}");
        }
        // unusual forms: the proxy's parser decides
        for odd in [
            &b"5\nhello\n0\n\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\"\r\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n",
        ] {
            assert_eq!(chunked_len(odd), None, "{:?}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn plain_requests_pass_with_their_framing() {
        let s = check("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(s.framing, Framing::None);
        assert!(s.rewritten.is_none());
        let s = check("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(s.framing, Framing::Length(5));
        let s = check("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(s.unwrap().framing, Framing::Chunked);
        let s = check("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(s.unwrap().framing, Framing::Upgrade);
        let s = check("POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(s.unwrap().framing, Framing::Open);
        assert!(check("GET / HTTP/1.0\r\n\r\n").is_ok());
        assert!(check("\r\nGET / HTTP/1.1\nHost: a\n\n").is_ok());
        assert!(check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn malformed_heads_are_400() {
        for head in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: good evil\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "GET /\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\rHost: a\r\n\r\n",
        ] {
            assert_eq!(check(head), Err(GatewayError::BadRequest), "{head:?}");
        }
    }

    #[test]
    fn unknown_transfer_codings_are_501() {
        for te in ["gzip, chunked", "chunked, chunked", "gzip", "identity"] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(check(&head), Err(GatewayError::NotImplemented), "{te}");
        }
        let two = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(two), Err(GatewayError::NotImplemented));
    }

    #[test]
    fn hosts_are_checked_as_authorities() {
        for good in [
            "a",
            "a.example:8080",
            "10.0.0.1",
            "[::1]",
            "[::1]:5000",
            "a-b_c~d",
        ] {
            assert!(valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "good evil",
            "u@a",
            ":80",
            "a:8x",
            "a%2f",
            "[::1",
            "[]",
            "[::1]x",
            "a/b",
            "a:123456",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn every_host_passed_here_parses_as_a_uri_authority() {
        // what passes here goes on to Pingora, which parses it with the http crate
        for c in 0x21u8..0x7f {
            for host in [vec![b'a', c, b'b'], vec![c], vec![b'a', b':', c]] {
                if valid_authority(&host) {
                    assert!(
                        http::uri::Authority::try_from(&host[..]).is_ok(),
                        "{:?}",
                        String::from_utf8_lossy(&host)
                    );
                }
            }
        }
    }

    #[test]
    fn what_passes_here_the_parser_behind_takes_too() {
        // Pingora parses every head that passes with httparse: a head passed here and
        // refused there would get Pingora's bare 400
        let pieces: &[&[u8]] = &[
            b"X-A", b"x", b":", b" ", b"\t", b"v", b"\r\n", b"\n", b"\r", b"\x00", b"\x01",
            b"\x7f", b"\x80", b"\xff", b"(", b"\"", b",", b"Host", b"a", b"/", b"@", b"=",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut passed = 0;
        for _ in 0..200_000 {
            let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            for _ in 0..rng.usize(1..12) {
                head.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
            head.extend_from_slice(b"\r\n\r\n");
            let Ok(Some(end)) = Scan::default().advance(&head, &HeadLimits::default()) else {
                continue;
            };
            if screen(&head[..end], &HeadLimits::default()).is_ok() {
                passed += 1;
                let mut fields = [httparse::EMPTY_HEADER; 256];
                let mut req = httparse::Request::new(&mut fields);
                assert!(
                    matches!(req.parse(&head[..end]), Ok(httparse::Status::Complete(_))),
                    "{:?}",
                    String::from_utf8_lossy(&head)
                );
            }
        }
        assert!(passed > 10_000, "{passed}");
    }

    #[test]
    fn connect_is_405() {
        assert_eq!(
            check("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Err(GatewayError::MethodNotAllowed)
        );
    }

    #[test]
    fn an_absolute_target_names_the_host() {
        for head in [
            "GET http://b.example:81/x?y HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n",
            "GET http://b.example:81/x?y HTTP/1.1\r\nX: 1\r\n\r\n",
            "GET HTTP://b.example:81/x?y HTTP/1.1\r\nhost: a\r\nX: 1\r\n\r\n",
        ] {
            let s = check(head).unwrap();
            let rewritten = String::from_utf8(s.rewritten.unwrap().to_vec()).unwrap();
            assert!(
                rewritten.contains("\r\nHost: b.example:81\r\n"),
                "{rewritten}"
            );
            assert_eq!(rewritten.matches("ost:").count(), 1, "{rewritten}");
            assert!(rewritten.ends_with("X: 1\r\n\r\n"), "{rewritten}");
        }
    }

    #[test]
    fn size_limits_say_which_part_is_too_large() {
        let limits = HeadLimits {
            request_line: 32,
            head: 64,
        };
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(40));
        assert_eq!(
            screen(long_line.as_bytes(), &limits),
            Err(GatewayError::UriTooLong)
        );
        assert_eq!(
            end_bytewise(long_line.as_bytes(), &limits),
            Err(GatewayError::UriTooLong)
        );
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "b".repeat(60));
        assert_eq!(
            end_bytewise(big.as_bytes(), &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        let whole = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(60));
        assert_eq!(
            Scan::default().advance(whole.as_bytes(), &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        assert_eq!(end_bytewise(b"GET / HTTP/1.1\r\nHo", &limits), Ok(None));
        assert_eq!(
            end_bytewise(&[b'\n'; 100], &limits),
            Err(GatewayError::BadRequest)
        );
        // not HTTP at all: refused before any line end
        assert_eq!(
            end_bytewise(b"\x16\x03\x01\x02\x00\x01", &limits),
            Err(GatewayError::BadRequest)
        );
        assert_eq!(
            end_bytewise(&[b'G'; 40], &limits),
            Err(GatewayError::BadRequest)
        );
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("X{i}: v\r\n"))
            .collect();
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(check(&head), Err(GatewayError::HeadersTooLarge));
    }

    #[test]
    fn heads_end_at_the_first_blank_line() {
        let limits = HeadLimits::default();
        for (buf, end) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], None),
            (b"GET / HTTP/1.1\r\n\r\nGET", Some(18)),
            (b"\r\n\r\nGET / HTTP/1.0\n\n", Some(20)),
            (b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n", Some(30)),
            (b"GET / HTTP/1.1\r\nA: b\r\r\n", None),
        ] {
            assert_eq!(end_of(buf), Ok(end), "{buf:?}");
            assert_eq!(end_bytewise(buf, &limits), Ok(end), "{buf:?} byte by byte");
        }
    }

    #[test]
    fn fields_are_found_in_any_head() {
        let head = b"GET /\x00 HTTP/1.1\r\nX: 1\r\norigin:  https://a.example \r\n\r\n";
        assert_eq!(field(head, b"Origin"), Some(&b"https://a.example"[..]));
        assert_eq!(field(head, b"host"), None);
    }

    #[test]
    fn refused_request_lines_are_split_for_the_log() {
        let l = request_line(b"GET /a\x00 HTTP/1.1\r\n");
        assert_eq!(
            (l.method, l.target, l.version),
            ("GET", &b"/a\x00"[..], "HTTP/1.1")
        );
        let l = request_line(b"\x16\x03\x01garbage");
        assert_eq!((l.method, l.version), ("-", "-"));
    }
}
