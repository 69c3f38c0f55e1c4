//! STOMP 1.1 frames, as ClipCascade's clients speak them over a WebSocket
//! (`docs/protocol.md`, "ClipCascade compatibility").
//!
//! One WebSocket message carries heart-beats (lone `\n` or `\r\n`) and
//! complete frames. [`decode`] turns a message into its frames; [`StompFrame::encode`]
//! writes one frame. No well-kept STOMP crate exists for Rust, so this is a
//! small codec of our own: bounded and total like every decoder here.
//!
//! A frame is a command line, header lines `name:value` (escaped with `\\`,
//! `\n`, `\c`, `\r` except in `CONNECT`/`CONNECTED`), an empty line, a body
//! (exactly `content-length` bytes when that header is present, else up to
//! the first NUL) and a NUL. Lines end with LF or CRLF. A repeated header
//! keeps its first value, as STOMP says.
//!
//! **Invariant:** [`decode`] returns an error for any input it does not
//! accept, never panics, and allocates at most the input's size (plus
//! bounded per-header bookkeeping under [`Limits::max_headers`]).

use thiserror::Error;

/// Bounds on what [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message, bytes.
    pub max_message: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line (name, colon and value, escaped), bytes.
    pub max_header_line: usize,
    /// Most frames in one message.
    pub max_frames: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 2 * 1024 * 1024,
            max_headers: 32,
            max_header_line: 4096,
            max_frames: 8,
        }
    }
}

/// Why a message is not acceptable STOMP.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StompError {
    /// The message is larger than [`Limits::max_message`].
    #[error("message too large")]
    TooLarge,
    /// A line, header or the frame ended too early.
    #[error("truncated frame")]
    Truncated,
    /// The command is not a STOMP command.
    #[error("unknown command")]
    UnknownCommand,
    /// A header line has no colon.
    #[error("header without a colon")]
    BadHeader,
    /// A header uses an undefined escape.
    #[error("bad escape in header")]
    BadEscape,
    /// Text that must be UTF-8 is not.
    #[error("header is not UTF-8")]
    NotUtf8,
    /// Over [`Limits::max_headers`] or [`Limits::max_header_line`].
    #[error("too many or too long headers")]
    HeadersTooLarge,
    /// Over [`Limits::max_frames`].
    #[error("too many frames in one message")]
    TooManyFrames,
    /// `content-length` is not a number or runs past the message.
    #[error("bad content-length")]
    BadLength,
    /// The body is not followed by NUL.
    #[error("frame not terminated by NUL")]
    NoNul,
}

/// The STOMP commands (client and server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Client: open the session.
    Connect,
    /// Client: open the session (1.2 name).
    Stomp,
    /// Server: the session is open.
    Connected,
    /// Client: publish.
    Send,
    /// Client: subscribe.
    Subscribe,
    /// Client: unsubscribe.
    Unsubscribe,
    /// Client: acknowledge.
    Ack,
    /// Client: negative acknowledge.
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: abort a transaction.
    Abort,
    /// Client: close the session.
    Disconnect,
    /// Server: a message for a subscription.
    Message,
    /// Server: a receipt.
    Receipt,
    /// Server: an error (the server closes after it).
    Error,
}

impl Command {
    const ALL: [Command; 15] = [
        Self::Connect,
        Self::Stomp,
        Self::Connected,
        Self::Send,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Ack,
        Self::Nack,
        Self::Begin,
        Self::Commit,
        Self::Abort,
        Self::Disconnect,
        Self::Message,
        Self::Receipt,
        Self::Error,
    ];

    /// The command's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Connected => "CONNECTED",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == s)
    }

    /// Whether header values are escaped in this frame (all but
    /// `CONNECT` and `CONNECTED`, per STOMP 1.1).
    fn escapes(self) -> bool {
        !matches!(self, Self::Connect | Self::Connected)
    }
}

/// One STOMP frame.
#[derive(Clone, PartialEq, Eq)]
pub struct StompFrame {
    /// The command.
    pub command: Command,
    /// Headers in order, unescaped; the first of a repeated name wins.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for StompFrame {
    /// Header names and the body's length only: values and bodies may carry
    /// clipboard contents or session ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StompFrame")
            .field("command", &self.command)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl StompFrame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame on the wire, NUL included, with a `content-length` header
    /// unless one was given.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        let esc = self.command.escapes();
        for (k, v) in &self.headers {
            escape_into(&mut out, k, esc);
            out.push(b':');
            escape_into(&mut out, v, esc);
            out.push(b'\n');
        }
        if self.get("content-length").is_none() && !self.body.is_empty() {
            out.extend_from_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

fn escape_into(out: &mut Vec<u8>, s: &str, escape: bool) {
    for b in s.bytes() {
        match b {
            b'\\' if escape => out.extend_from_slice(b"\\\\"),
            b'\n' if escape => out.extend_from_slice(b"\\n"),
            b'\r' if escape => out.extend_from_slice(b"\\r"),
            b':' if escape => out.extend_from_slice(b"\\c"),
            // Unescapable frames cannot carry these; drop them rather than
            // break the framing.
            b'\n' | b'\r' => {}
            _ => out.push(b),
        }
    }
}

fn unescape(raw: &[u8], escape: bool) -> Result<String, StompError> {
    if !escape {
        return String::from_utf8(raw.to_vec()).map_err(|_| StompError::NotUtf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'c') => out.push(b':'),
            _ => return Err(StompError::BadEscape),
        }
    }
    String::from_utf8(out).map_err(|_| StompError::NotUtf8)
}

/// Splits the next line (LF or CRLF) off `input` at `pos`.
fn line<'a>(input: &'a [u8], pos: &mut usize, max: usize) -> Result<&'a [u8], StompError> {
    let rest = input.get(*pos..).ok_or(StompError::Truncated)?;
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        return Err(if rest.len() > max {
            StompError::HeadersTooLarge
        } else {
            StompError::Truncated
        });
    };
    if nl > max {
        return Err(StompError::HeadersTooLarge);
    }
    *pos += nl + 1;
    let l = &rest[..nl];
    Ok(l.strip_suffix(b"\r").unwrap_or(l))
}

/// Decodes one WebSocket message into its frames. Heart-beats (EOLs before,
/// between and after frames) are skipped, so a lone `\n` gives no frames.
pub fn decode(input: &[u8], limits: &Limits) -> Result<Vec<StompFrame>, StompError> {
    if input.len() > limits.max_message {
        return Err(StompError::TooLarge);
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        // Heart-beats.
        while let Some(&b) = input.get(pos) {
            if b == b'\n' {
                pos += 1;
            } else if b == b'\r' && input.get(pos + 1) == Some(&b'\n') {
                pos += 2;
            } else {
                break;
            }
        }
        if pos >= input.len() {
            return Ok(frames);
        }
        if frames.len() >= limits.max_frames {
            return Err(StompError::TooManyFrames);
        }
        let (frame, next) = decode_one(input, pos, limits)?;
        frames.push(frame);
        pos = next;
    }
}

fn decode_one(
    input: &[u8],
    mut pos: usize,
    limits: &Limits,
) -> Result<(StompFrame, usize), StompError> {
    let cmd = line(input, &mut pos, limits.max_header_line)?;
    let command = Command::parse(cmd).ok_or(StompError::UnknownCommand)?;
    let esc = command.escapes();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let l = line(input, &mut pos, limits.max_header_line)?;
        if l.is_empty() {
            break;
        }
        if l.contains(&b'\r') {
            // A bare CR is not allowed in a header (STOMP escapes it).
            return Err(StompError::BadHeader);
        }
        if headers.len() >= limits.max_headers {
            return Err(StompError::HeadersTooLarge);
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or(StompError::BadHeader)?;
        let name = unescape(&l[..colon], esc)?;
        let value = unescape(&l[colon + 1..], esc)?;
        if headers.iter().all(|(k, _)| *k != name) {
            headers.push((name, value));
        }
    }
    let rest = &input[pos..];
    let len = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => {
            let n: usize = v.trim().parse().map_err(|_| StompError::BadLength)?;
            if n >= rest.len() {
                return Err(if n > rest.len() {
                    StompError::BadLength
                } else {
                    StompError::NoNul
                });
            }
            if rest[n] != 0 {
                return Err(StompError::NoNul);
            }
            n
        }
        None => rest.iter().position(|&b| b == 0).ok_or(StompError::NoNul)?,
    };
    let body = rest[..len].to_vec();
    Ok((
        StompFrame {
            command,
            headers,
            body,
        },
        pos + len + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> StompFrame {
        let mut v = decode(input, &Limits::default()).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn connect_as_clients_send_it() {
        let f = one(b"CONNECT\naccept-version:1.0,1.1\nheart-beat:0,20000\n\n\0");
        assert_eq!(f.command, Command::Connect);
        assert_eq!(f.get("accept-version"), Some("1.0,1.1"));
        assert_eq!(f.get("heart-beat"), Some("0,20000"));
        assert!(f.body.is_empty());
    }

    #[test]
    fn send_with_and_without_length_crlf_and_trailing_eols() {
        let f = one(b"SEND\r\ndestination:/app/cliptext\r\n\r\n{\"a\":1}\0\n\n");
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.get("destination"), Some("/app/cliptext"));
        assert_eq!(f.body, b"{\"a\":1}");
        // content-length lets the body hold NUL.
        let f = one(b"SEND\ncontent-length:3\n\na\0b\0");
        assert_eq!(f.body, b"a\0b");
    }

    #[test]
    fn heartbeats_and_several_frames() {
        assert!(decode(b"\n", &Limits::default()).unwrap().is_empty());
        assert!(decode(b"\r\n\n", &Limits::default()).unwrap().is_empty());
        let v = decode(b"\nDISCONNECT\n\n\0\nSEND\n\nx\0", &Limits::default()).unwrap();
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn escapes_round_trip_and_repeated_headers_keep_the_first() {
        let f = StompFrame::new(Command::Message)
            .header("a:b", "c\\d\ne\r")
            .body("x");
        let enc = f.encode();
        assert!(enc.starts_with(b"MESSAGE\na\\cb:c\\\\d\\ne\\r\ncontent-length:1\n\nx\0"));
        let back = one(&enc);
        assert_eq!(back.get("a:b"), Some("c\\d\ne\r"));
        assert_eq!(back.body, b"x");
        let f = one(b"SEND\nx:1\nx:2\n\n\0");
        assert_eq!(f.get("x"), Some("1"));
        assert_eq!(f.headers.len(), 1);
        // CONNECT values are taken literally.
        let f = one(b"CONNECT\nlogin:a\\b\n\n\0");
        assert_eq!(f.get("login"), Some("a\\b"));
    }

    #[test]
    fn refuses_bad_input() {
        let l = Limits::default();
        let bad: &[(&[u8], StompError)] = &[
            (b"HELLO\n\n\0", StompError::UnknownCommand),
            (b"SEND\nnocolon\n\n\0", StompError::BadHeader),
            (b"SEND\na:\\t\n\n\0", StompError::BadEscape),
            (b"CONNECT\na:b\r\r\n\n\0", StompError::BadHeader),
            (b"SEND\na:\xff\n\n\0", StompError::NotUtf8),
            (b"SEND\n\nbody", StompError::NoNul),
            (b"SEND\ncontent-length:9\n\nab\0", StompError::BadLength),
            (b"SEND\ncontent-length:x\n\nab\0", StompError::BadLength),
            (b"SEND\ncontent-length:1\n\nab\0", StompError::NoNul),
            (b"SEND\ncontent-length:2\n\nab", StompError::NoNul),
            (b"SEND", StompError::Truncated),
            (b"SEND\na:b", StompError::Truncated),
        ];
        for (input, want) in bad {
            assert_eq!(decode(input, &l).as_ref(), Err(want), "{input:?}");
        }
        let long = [b"SEND\na:".as_slice(), &vec![b'v'; 10_000], b"\n\n\0"].concat();
        assert_eq!(decode(&long, &l), Err(StompError::HeadersTooLarge));
        let many: Vec<u8> = [
            b"SEND\n".to_vec(),
            (0..40)
                .flat_map(|i| format!("h{i}:v\n").into_bytes())
                .collect(),
            b"\n\0".to_vec(),
        ]
        .concat();
        assert_eq!(decode(&many, &l), Err(StompError::HeadersTooLarge));
        let small = Limits {
            max_message: 4,
            ..l
        };
        assert_eq!(decode(b"SEND\n\n\0", &small), Err(StompError::TooLarge));
        let frames = b"DISCONNECT\n\n\0".repeat(9);
        assert_eq!(decode(&frames, &l), Err(StompError::TooManyFrames));
    }

    #[test]
    fn debug_hides_values_and_body() {
        let f = StompFrame::new(Command::Send)
            .header("destination", "secret-dest")
            .body("secret-body");
        let s = format!("{f:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("body_len: 11"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            // Deterministic: the same cases on every run and machine, and no
            // regression file written into the source tree.
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x636c_6970_6d65_7368),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        #[test]
        fn any_bytes_decode_or_fail_cleanly(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let l = Limits::default();
            if let Ok(frames) = decode(&data, &l) {
                for f in frames {
                    let again = decode(&f.encode(), &l).unwrap();
                    proptest::prop_assert_eq!(again, vec![f]);
                }
            }
        }

        #[test]
        fn built_frames_round_trip(
            headers in proptest::collection::vec(("[a-z:\\\n\r-]{1,8}", "[ -~\n\r]{0,16}"), 0..6),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut f = StompFrame::new(Command::Send).body(body);
            for (k, v) in headers {
                if k != "content-length" && f.get(&k).is_none() {
                    f = f.header(&k, &v);
                }
            }
            let back = decode(&f.encode(), &Limits::default()).unwrap();
            proptest::prop_assert_eq!(back.len(), 1);
            proptest::prop_assert_eq!(&back[0].body, &f.body);
            for (k, v) in &f.headers {
                proptest::prop_assert_eq!(back[0].get(k), Some(v.as_str()));
            }
        }
    }
}
