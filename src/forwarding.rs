//! Who the client is, and what the upstream is told about it.
//!
//! The client IP is the socket peer, unless that peer is a configured trusted proxy: then
//! X-Forwarded-For is read from the right, skipping trusted hops, and the first address that
//! is not trusted is the client. Upstreams get X-Forwarded-For (appended), -Proto, -Host and
//! an X-Request-Id that is kept when the client sent a sane one and generated otherwise.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::wire::names::X_FORWARDED_FOR;

/// The proxies whose X-Forwarded-For is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            nets: nets.into_iter().collect(),
        }
    }

    /// The networks, as configured.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// The networks that hold every address (`0.0.0.0/0`, `::/0`): behind them every
    /// client may set its own address.
    pub fn everyone(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.iter().filter(|n| n.prefix_len() == 0)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // a handful of networks: a scan beats any index
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address, given the socket peer and the request headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // later headers and later elements are nearer to us: walk from the right
        for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for element in text.rsplit(',') {
                match parse_forwarded_ip(element.trim()) {
                    Some(ip) => {
                        client = ip;
                        if !self.contains(ip) {
                            return ip;
                        }
                    }
                    // a hop we cannot read ends the chain of trust
                    None => return client,
                }
            }
        }
        client
    }
}

/// An X-Forwarded-For element: an address, possibly with a port ("1.2.3.4:80", "[::1]:80").
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// The X-Forwarded-For value to send upstream: what came in, then the socket peer.
pub fn appended_forwarded_for(headers: &HeaderMap, peer: IpAddr) -> HeaderValue {
    let incoming = headers.get_all(X_FORWARDED_FOR);
    let mut buf = BytesMut::with_capacity(64);
    for value in incoming.iter() {
        let v = value.as_bytes();
        if v.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !buf.is_empty() {
            buf.put_slice(b", ");
        }
        buf.put_slice(v);
    }
    if !buf.is_empty() {
        buf.put_slice(b", ");
    }
    push_ip(&mut buf, peer.to_canonical());
    // the parts are header values already, and an address is plain ASCII
    HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Write an address as text. IPv4, the common case, without the formatting machinery.
pub fn push_ip(out: &mut impl BufMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'.');
                }
                out.put_slice(digits.format(*octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // an IPv6 address is at most 45 characters
            let mut text = [0u8; 48];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            let _ = write!(cursor, "{v6}");
            let len = cursor.position() as usize;
            out.put_slice(&text[..len]);
        }
    }
}

/// Is an incoming X-Request-Id worth keeping? 1 to 200 visible ASCII characters.
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

thread_local! {
    /// Per-thread generator state, seeded randomly: no shared counter to contend on.
    static ID_STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()));
}

/// A new request id shaped like a UUID v4 (random, 122 bits of it unpredictable to clients
/// only as far as splitmix64 is: ids are for correlation, not for secrets).
pub fn new_request_id() -> HeaderValue {
    let (hi, lo) = ID_STATE.with(|s| {
        let a = splitmix64(s);
        let b = splitmix64(s);
        (a, b)
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // written into a fixed array, then copied out once: a growable buffer checked its
    // capacity for each of the 36 bytes
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[(b >> 4) as usize];
        text[at + 1] = HEX[(b & 0x0f) as usize];
        at += 2;
    }
    HeaderValue::from_bytes(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

/// 64 random bits from this thread's generator (splitmix64: for ids, not for secrets).
pub fn random_u64() -> u64 {
    ID_STATE.with(splitmix64)
}

fn splitmix64(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()))
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), &headers(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), &headers(&["1.1.1.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_hands_over_to_the_rightmost_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.7, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // split over two header lines
        let h = headers(&["198.51.100.7", "203.0.113.9, 10.1.1.1"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost_and_garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["10.2.2.2, 10.1.1.1"])),
            ip("10.2.2.2")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["1.2.3.4, junk, 10.1.1.1"])),
            ip("10.1.1.1")
        );
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers(&[])), ip("10.0.0.1"));
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn mapped_ipv4_peers_are_plain_ipv4() {
        let t = trusted(&["127.0.0.1/32"]);
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), &headers(&["1.2.3.4"])),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn addresses_are_written_like_display() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, ip(text));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        assert_eq!(
            appended_forwarded_for(&headers(&[]), ip("127.0.0.1")),
            "127.0.0.1"
        );
        assert_eq!(
            appended_forwarded_for(&headers(&["1.1.1.1", "2.2.2.2"]), ip("::1")),
            "1.1.1.1, 2.2.2.2, ::1"
        );
    }

    #[test]
    fn request_ids_are_uuid_shaped_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        for (i, c) in s.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(matches!(c, '0'..='9' | 'a'..='f'), "{s}");
            }
        }
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert!(acceptable_request_id(&a));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&"x".repeat(201)).unwrap()
        ));
    }
}
