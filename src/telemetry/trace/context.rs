//! W3C Trace Context (Level 1): the `traceparent` field read and written, and the
//! sampling decision for a new trace.

use http::header::HeaderValue;

use crate::forwarding::random_u64;

/// What a request's trace is: its trace id, the gateway's SERVER span, the client's span
/// when the client sent one, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

/// A `traceparent` that follows the spec: `version-traceid-parentid-flags`, lowercase
/// hex, ids not all zero, version not `ff`; a later version may append fields after a
/// dash. Returns the trace id, the parent span id and the flags.
pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    // version 00 is exactly 55 bytes; a later one may carry more after a dash
    if (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent = [0u8; 8];
    for (i, b) in parent.iter_mut().enumerate() {
        *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// Two lowercase hex digits.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// Each byte's two lowercase hex digits: one load a byte where two nibbles cost shifts,
/// masks and two loads (every request writes 24 bytes of ids).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0x0f]];
        i += 1;
    }
    pairs
};

/// Write `bytes` as hex into `out` from `at`: the callers' constant offsets into a fixed
/// array let the compiler drop the bounds checks and unroll the loop.
#[inline(always)]
fn push_hex<const L: usize>(out: &mut [u8; L], at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let [high, low] = HEX_PAIRS[*b as usize];
        out[at + 2 * i] = high;
        out[at + 2 * i + 1] = low;
    }
}

/// Lowercase hex of an id, for the access log.
pub fn hex<const N: usize>(bytes: &[u8; N]) -> String {
    let mut out = Vec::with_capacity(2 * N);
    append_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex of `bytes`, appended (the JSON access line writes ids this way).
pub fn append_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&HEX_PAIRS[*b as usize]);
    }
}

/// `00-trace-span-flags`, written into a fixed array (55 bytes).
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    push_hex(&mut text, 3, trace_id);
    push_hex(&mut text, 36, span_id);
    if sampled {
        text[54] = b'1';
    }
    // SAFETY: `text` holds only ASCII hex digits and dashes (the template above and
    // HEX_PAIRS), all visible ASCII, which is what a header value needs; the checked
    // constructor would test the 55 bytes again on every request
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(&text)) }
}

/// A new span id: random, never zero.
pub fn new_span_id() -> [u8; 8] {
    random_u64().max(1).to_be_bytes()
}

fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_u64().to_be_bytes());
    id[8..].copy_from_slice(&random_u64().max(1).to_be_bytes());
    id
}

/// Which new traces are sampled: a trace id whose last 8 bytes, halved, fall under
/// `ratio · 2⁶³` (OpenTelemetry's trace-id-ratio rule), so every gateway that sees the
/// same trace id decides the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// `None`: every trace; else the bound.
    bound: Option<u64>,
}

impl Sampler {
    pub fn new(ratio: f64) -> Sampler {
        if ratio >= 1.0 {
            Sampler { bound: None }
        } else {
            Sampler {
                bound: Some((ratio.max(0.0) * (1u64 << 63) as f64) as u64),
            }
        }
    }

    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.bound
            .is_none_or(|bound| (u64::from_be_bytes(low) >> 1) < bound)
    }

    /// The trace of a request: the client's, when its `traceparent` is valid (its sampled
    /// flag decides), else a new one (the ratio decides). The gateway's span id is new.
    pub fn begin(&self, traceparent: Option<&[u8]>) -> TraceIds {
        let span_id = new_span_id();
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => TraceIds {
                trace_id,
                span_id,
                parent: Some(parent),
                sampled: flags & 1 == 1,
            },
            None => {
                let trace_id = new_trace_id();
                TraceIds {
                    trace_id,
                    span_id,
                    parent: None,
                    sampled: self.samples(&trace_id),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let (trace, parent, flags) = parse_traceparent(GOOD).unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        // a later version may add fields
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(parse_traceparent(later).is_some());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_traceparent_is_written_as_read() {
        let (trace, parent, _) = parse_traceparent(GOOD).unwrap();
        assert_eq!(traceparent(&trace, &parent, true).as_bytes(), GOOD);
        assert!(traceparent(&trace, &parent, false)
            .as_bytes()
            .ends_with(b"-00"));
    }

    #[test]
    fn the_client_decides_for_its_trace_and_the_ratio_for_new_ones() {
        let never = Sampler::new(0.0);
        let always = Sampler::new(1.0);
        let ids = never.begin(Some(GOOD));
        assert!(ids.sampled, "the client's sampled flag wins");
        assert_eq!(
            ids.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(ids.span_id, [0; 8]);
        assert!(!never.begin(None).sampled);
        assert!(always.begin(Some(b"garbage")).sampled);
        assert!(always.begin(Some(b"garbage")).parent.is_none());
        let half = Sampler::new(0.5);
        let kept = (0..10_000).filter(|_| half.begin(None).sampled).count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
    }
}
