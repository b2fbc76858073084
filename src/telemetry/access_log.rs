//! The access log: one line per request, formatted on the request path, written off it.
//!
//! A request formats its line into a buffer and hands it to a bounded queue; a writer thread
//! drains the queue every few milliseconds and writes in batches. Senders never wait and
//! never wake the writer: when a slow disk lets the queue fill up, lines are dropped and
//! counted, and the writer reports the count, rather than stalling proxying.

use crate::telemetry::trace::context::append_hex;
use crate::telemetry::trace::TraceIds;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLogSection, LogFormat};

/// Lines that may wait for the writer: 16 of its 10 ms drains at 100,000 requests/s, over
/// half a second at 30,000. The queue's slots are allocated up front (0.5 MiB).
const QUEUE_LINES: usize = 16_384;
/// How long the writer sleeps when it finds the queue empty.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn from_config(section: &AccessLogSection) -> Target {
        match section.path.get_ref().as_str() {
            "off" => Target::Off,
            "-" => Target::Stdout,
            // absolute, since a daemon opens it after its chdir("/")
            path => Target::File(std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))),
        }
    }

    /// Whether the destination can be written, without creating it: `-t` runs this too,
    /// and a check must not write. An existing file must open for appending; a new one
    /// needs a directory this process may create files in.
    fn check(&self) -> io::Result<()> {
        let Target::File(path) = self else {
            return Ok(());
        };
        match OpenOptions::new().append(true).open(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(std::path::Path::new("/"));
                if !std::fs::metadata(dir)?.is_dir() {
                    return Err(io::Error::from(io::ErrorKind::NotADirectory));
                }
                let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                // SAFETY: access(2) reads the NUL-terminated path it is given.
                if unsafe { libc::access(dir.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Open the destination, creating a file that is not there yet.
    fn open(&self) -> io::Result<Option<Box<dyn Write + Send>>> {
        Ok(match self {
            Target::Off => None,
            Target::Stdout => Some(Box::new(io::stdout())),
            Target::File(path) => Some(Box::new(open_append(path)?)),
        })
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What a request contributes to its log line.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub time: SystemTime,
    pub method: &'a str,
    /// The request target as received, path and query.
    pub uri: &'a [u8],
    pub version: &'a str,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub request_id: Option<&'a [u8]>,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// Why the exchange failed, when it did after the answer began (JSON format only).
    pub error: Option<&'a str>,
    /// With tracing: the trace and the gateway's span (JSON format only).
    pub trace: Option<TraceIds>,
}

/// The shared handle: formats and queues lines.
pub struct AccessLog {
    format: LogFormat,
    target: Target,
    sender: Option<SyncSender<Vec<u8>>>,
    receiver: Mutex<Option<Receiver<Vec<u8>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closing: Arc<AtomicBool>,
    /// Set by [`Self::reopen`]; the writer reopens the file before its next lines.
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Check the destination can be opened; lines queue until [`Self::start_writer`].
    pub fn new(section: &AccessLogSection) -> io::Result<AccessLog> {
        let target = Target::from_config(section);
        // checked here to fail early; the writer opens (and creates) it once it starts,
        // after a possible daemon fork
        target.check()?;
        let (sender, receiver) = match target {
            Target::Off => (None, None),
            _ => {
                let (s, r) = sync_channel(QUEUE_LINES);
                (Some(s), Some(r))
            }
        };
        Ok(AccessLog {
            format: section.format,
            target,
            sender,
            receiver: Mutex::new(receiver),
            writer: Mutex::new(None),
            closing: Arc::new(AtomicBool::new(false)),
            reopen: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn is_off(&self) -> bool {
        self.sender.is_none()
    }

    /// Lines lost to a full queue since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Start the writer thread. Call it in the process that serves (after daemonizing);
    /// a second call does nothing.
    pub fn start_writer(&self) -> io::Result<()> {
        let Some(receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        let Some(out) = self.target.open()? else {
            return Ok(());
        };
        let flags = Flags {
            closing: self.closing.clone(),
            reopen: self.reopen.clone(),
            dropped: self.dropped.clone(),
        };
        let target = self.target.clone();
        let handle = std::thread::Builder::new()
            .name("pylon-access-log".into())
            .spawn(move || write_lines(receiver, out, target, flags))?;
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(handle);
        }
        Ok(())
    }

    /// Open the log file again, by its path, before the next lines are written: after
    /// logrotate moved it away (SIGHUP), lines go to a new file at the configured path.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Write what is queued and stop the writer. Lines logged afterwards are dropped.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Format and queue one line; never blocks.
    pub fn log(&self, entry: &Entry) {
        let Some(sender) = &self.sender else {
            return;
        };
        let mut line = Vec::with_capacity(256);
        match self.format {
            LogFormat::Combined => format_combined(entry, &mut line),
            LogFormat::Json => format_json(entry, &mut line),
        }
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the writer thread shares with the handle.
struct Flags {
    closing: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

fn write_lines(
    receiver: Receiver<Vec<u8>>,
    out: Box<dyn Write + Send>,
    target: Target,
    flags: Flags,
) {
    let Flags {
        closing,
        reopen,
        dropped,
    } = flags;
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut reported_drops = 0;
    let mut failing = false;
    loop {
        // read the flag before draining, so a line queued before close() is always written
        let stop = closing.load(Ordering::Acquire);
        let mut wrote = 0usize;
        while let Ok(line) = receiver.try_recv() {
            if let Err(e) = out.write_all(&line) {
                if !failing {
                    log::error!("access log: write failed: {e}");
                    failing = true;
                }
            }
            wrote += 1;
        }
        if wrote > 0 {
            match out.flush() {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    log::error!("access log: write failed: {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        if reopen.swap(false, Ordering::AcqRel) {
            if let Target::File(path) = &target {
                match open_append(path) {
                    Ok(file) => {
                        let _ = out.flush();
                        out = BufWriter::with_capacity(64 * 1024, Box::new(file));
                        log::info!("access log: reopened {}", path.display());
                    }
                    Err(e) => log::error!(
                        "access log: cannot reopen {}: {e}; writing on to the file already open",
                        path.display()
                    ),
                }
            }
        }
        let drops = dropped.load(Ordering::Relaxed);
        if drops != reported_drops {
            log::warn!(
                "access log: {} lines dropped because the writer fell behind ({drops} in all)",
                drops - reported_drops
            );
            reported_drops = drops;
        }
        if stop {
            return;
        }
        if wrote == 0 {
            std::thread::sleep(DRAIN_EVERY);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/// Apache combined, as morgan writes it:
/// `1.2.3.4 - - [23/Nov/2026:19:19:38 +0000] "GET /users/1 HTTP/1.1" 200 17 "-" "curl/8.0"`
pub fn format_combined(e: &Entry, out: &mut Vec<u8>) {
    push_ip(out, e.client);
    out.extend_from_slice(b" - - [");
    push_clf_time(out, e.time);
    out.extend_from_slice(b"] \"");
    push_escaped(out, e.method.as_bytes());
    out.push(b' ');
    push_escaped(out, e.uri);
    out.push(b' ');
    out.extend_from_slice(e.version.as_bytes());
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
    out.push(b' ');
    if e.body_bytes == 0 {
        out.push(b'-');
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(e.body_bytes).as_bytes());
    }
    out.extend_from_slice(b" \"");
    push_escaped(out, e.referer.unwrap_or(b"-"));
    out.extend_from_slice(b"\" \"");
    push_escaped(out, e.user_agent.unwrap_or(b"-"));
    out.extend_from_slice(b"\"\n");
}

/// One JSON object per line, with the gateway's own fields (request id, route, upstream,
/// duration) that the combined format has no place for.
pub fn format_json(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    push_iso_time(out, e.time);
    out.extend_from_slice(b"\",\"client\":");
    match e.client {
        Some(_) => {
            out.push(b'"');
            push_ip(out, e.client);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    push_json_str(out, Some(e.method.as_bytes()));
    out.extend_from_slice(b",\"uri\":");
    push_json_str(out, Some(e.uri));
    out.extend_from_slice(b",\"protocol\":");
    push_json_str(out, Some(e.version.as_bytes()));
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
    out.extend_from_slice(b",\"bytes\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.body_bytes).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    let micros = e.duration.as_micros() as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    out.extend_from_slice(b",\"referer\":");
    push_json_str(out, e.referer);
    out.extend_from_slice(b",\"user_agent\":");
    push_json_str(out, e.user_agent);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, e.request_id);
    out.extend_from_slice(b",\"route\":");
    push_json_str(out, e.route.map(str::as_bytes));
    out.extend_from_slice(b",\"upstream\":");
    push_json_str(out, e.upstream.map(str::as_bytes));
    if let Some(error) = e.error {
        out.extend_from_slice(b",\"error\":");
        push_json_str(out, Some(error.as_bytes()));
    }
    if let Some(ids) = &e.trace {
        out.extend_from_slice(b",\"trace_id\":");
        push_hex_str(out, &ids.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        push_hex_str(out, &ids.span_id);
    }
    out.extend_from_slice(b"}\n");
}

fn push_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        Some(ip) => crate::forwarding::push_ip(out, ip),
        None => out.push(b'-'),
    }
}

/// Apache's escaping: quotes and backslashes escaped, anything not printable as \xHH, so a
/// client cannot forge a line or a field.
fn push_escaped(out: &mut Vec<u8>, mut bytes: &[u8]) {
    let plain = |b: &u8| matches!(b, 0x20..=0x7e) && *b != b'"' && *b != b'\\';
    loop {
        // copy the run of plain bytes at once: most values have nothing to escape
        let run = bytes.iter().position(|b| !plain(b)).unwrap_or(bytes.len());
        out.extend_from_slice(&bytes[..run]);
        let Some((&b, rest)) = bytes[run..].split_first() else {
            return;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => push_hex_escape(out, b"\\x", b, 2),
        }
        bytes = rest;
    }
}

fn push_hex_escape(out: &mut Vec<u8>, lead: &[u8], b: u8, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(lead);
    for _ in 2..width {
        out.push(b'0');
    }
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 0xf) as usize]);
}

/// A JSON string, or null. Bytes that are not UTF-8 become \u00XX of the byte, so the
/// line stays valid JSON whatever the client sent.
/// An id as a JSON string of hex digits, which need no escaping.
fn push_hex_str(out: &mut Vec<u8>, id: &[u8]) {
    out.push(b'"');
    append_hex(out, id);
    out.push(b'"');
}

fn push_json_str(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(mut bytes) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    // valid UTF-8 is copied as it is (JSON strings are UTF-8); otherwise every byte outside
    // printable ASCII is escaped on its own
    let utf8 = std::str::from_utf8(bytes).is_ok();
    let plain = |b: &u8| match b {
        b'"' | b'\\' | 0x7f => false,
        0x20..=0x7e => true,
        0x80.. => utf8,
        _ => false,
    };
    out.push(b'"');
    loop {
        // copy the run of plain bytes at once: most values have nothing to escape
        let run = bytes.iter().position(|b| !plain(b)).unwrap_or(bytes.len());
        out.extend_from_slice(&bytes[..run]);
        let Some((&b, rest)) = bytes[run..].split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => push_hex_escape(out, b"\\u", b, 4),
        }
        bytes = rest;
    }
    out.push(b'"');
}

/// Civil date and time (UTC) of a Unix timestamp.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn civil(secs: i64) -> Civil {
    // Howard Hinnant's days-to-civil algorithm
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
    }
}

fn unix_secs(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    }
}

fn push_2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

fn push_4(out: &mut Vec<u8>, n: i64) {
    let n = n.clamp(0, 9999) as u32;
    push_2(out, n / 100);
    push_2(out, n % 100);
}

/// `23/Nov/2026:19:19:38 +0000`, the timestamp morgan's combined format uses (UTC).
fn push_clf_time(out: &mut Vec<u8>, t: SystemTime) {
    // one thread formats the same second for many requests: keep the last one
    thread_local! {
        static LAST: std::cell::Cell<(i64, [u8; 26])> = const { std::cell::Cell::new((-1, [0; 26])) };
    }
    let secs = unix_secs(t).0;
    let (cached_secs, cached) = LAST.with(|l| l.get());
    if cached_secs == secs {
        out.extend_from_slice(&cached);
        return;
    }
    let start = out.len();
    format_clf_time(out, secs);
    if let Ok(text) = <[u8; 26]>::try_from(&out[start..]) {
        LAST.with(|l| l.set((secs, text)));
    }
}

fn format_clf_time(out: &mut Vec<u8>, secs: i64) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let c = civil(secs);
    push_2(out, c.day);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(c.month as usize).clamp(1, 12) - 1]);
    out.push(b'/');
    push_4(out, c.year);
    out.push(b':');
    push_2(out, c.hour);
    out.push(b':');
    push_2(out, c.minute);
    out.push(b':');
    push_2(out, c.second);
    out.extend_from_slice(b" +0000");
}

/// `2026-11-23T19:19:38.123Z`.
fn push_iso_time(out: &mut Vec<u8>, t: SystemTime) {
    let (secs, millis) = unix_secs(t);
    let c = civil(secs);
    push_4(out, c.year);
    out.push(b'-');
    push_2(out, c.month);
    out.push(b'-');
    push_2(out, c.day);
    out.push(b'T');
    push_2(out, c.hour);
    out.push(b':');
    push_2(out, c.minute);
    out.push(b':');
    push_2(out, c.second);
    out.push(b'.');
    out.push(b'0' + (millis / 100) as u8);
    push_2(out, millis % 100);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: Some("203.0.113.9".parse().unwrap()),
            // 2026-11-23T19:19:38.250Z
            time: UNIX_EPOCH + Duration::from_millis(1_795_461_578_250),
            method: "GET",
            uri: b"/users/1?q=a",
            version: "HTTP/1.1",
            status: 200,
            body_bytes: 17,
            referer: None,
            user_agent: Some(b"curl/8.0"),
            request_id: Some(b"abc"),
            duration: Duration::from_micros(1_234),
            route: Some("/users"),
            upstream: Some("127.0.0.1:7002"),
            error: None,
            trace: None,
        }
    }

    #[test]
    fn combined_line() {
        let mut out = Vec::new();
        format_combined(&entry(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "203.0.113.9 - - [23/Nov/2026:19:19:38 +0000] \"GET /users/1?q=a HTTP/1.1\" 200 17 \"-\" \"curl/8.0\"\n"
        );
    }

    #[test]
    fn combined_escapes_what_a_client_controls() {
        let mut e = entry();
        e.user_agent = Some(b"evil\" \n200 \\ \xff");
        e.body_bytes = 0;
        let mut out = Vec::new();
        format_combined(&e, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with(" 200 - \"-\" \"evil\\\" \\x0a200 \\\\ \\xff\"\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_line_is_valid_json() {
        let mut e = entry();
        e.user_agent = Some(b"a\"b\x01\xff");
        let mut out = Vec::new();
        format_json(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-23T19:19:38.250Z");
        assert_eq!(v["client"], "203.0.113.9");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["route"], "/users");
        assert_eq!(v["request_id"], "abc");
        assert!(v["user_agent"].as_str().unwrap().starts_with("a\"b\u{1}"));
    }

    #[test]
    fn json_strings_round_trip_and_bad_utf8_is_escaped_bytewise() {
        let decode = |raw: &[u8]| -> String {
            let mut out = Vec::new();
            push_json_str(&mut out, Some(raw));
            serde_json::from_slice::<String>(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
        };
        for text in [
            "",
            "/plain/path?q=1",
            "quote\" back\\slash",
            "tab\tnl\ncr\r nul\u{0} esc\u{1b} del\u{7f}",
            "é 漢字 🎉 at the end: ü",
        ] {
            assert_eq!(decode(text.as_bytes()), text);
        }
        // not UTF-8: each byte outside printable ASCII stands for itself as U+00XX
        assert_eq!(decode(b"a\xff\"\xc3("), "a\u{ff}\"\u{c3}(");
        let mut out = Vec::new();
        push_json_str(&mut out, Some(b"\x01\x7f"));
        assert_eq!(out, b"\"\\u0001\\u007f\"");
        let mut out = Vec::new();
        push_json_str(&mut out, None);
        assert_eq!(out, b"null");
    }

    #[test]
    fn the_per_second_time_cache_follows_the_clock() {
        let at = |ms: u64| {
            let mut out = Vec::new();
            push_clf_time(&mut out, UNIX_EPOCH + Duration::from_millis(ms));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(1_795_461_578_250), "23/Nov/2026:19:19:38 +0000");
        assert_eq!(at(1_795_461_578_900), "23/Nov/2026:19:19:38 +0000");
        assert_eq!(at(1_795_461_579_000), "23/Nov/2026:19:19:39 +0000");
        assert_eq!(at(1_795_461_578_000), "23/Nov/2026:19:19:38 +0000");
    }

    #[test]
    fn civil_dates() {
        let c = civil(0);
        assert_eq!((c.year, c.month, c.day), (1970, 1, 1));
        let c = civil(951_782_400); // 2000-02-29
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
        let c = civil(4_102_444_799); // 2099-12-31T23:59:59
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2099, 12, 31, 23, 59, 59)
        );
    }

    #[test]
    fn lines_reach_the_file_and_close_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let section = AccessLogSection {
            path: toml::Spanned::new(0..0, path.to_string_lossy().into_owned()),
            format: LogFormat::Combined,
        };
        let log = AccessLog::new(&section).unwrap();
        log.log(&entry()); // queued before the writer starts
        log.start_writer().unwrap();
        log.log(&entry());
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let section = AccessLogSection {
            path: toml::Spanned::new(0..0, "/nonexistent-dir/access.log".into()),
            format: LogFormat::Combined,
        };
        assert!(AccessLog::new(&section).is_err());
    }
}
