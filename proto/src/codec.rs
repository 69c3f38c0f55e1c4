//! The bounded binary reader and writer that every decoder is built on.
//!
//! Integers are big-endian and fixed-width. Byte strings and UTF-8 strings
//! carry a `u32` length prefix; lists a `u16` count. A decoder never
//! allocates more than the input it was given: every length is checked
//! against the bytes that remain before anything is allocated, so a hostile
//! length prefix cannot make us reserve gigabytes.

use thiserror::Error;

/// Why a byte string could not be decoded. Messages are short and never
/// include the input bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated input")]
    Truncated,
    /// Bytes were left over after the value.
    #[error("trailing bytes after frame")]
    Trailing,
    /// The frame was written by a protocol version we do not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A tag byte named no known variant.
    #[error("unknown {what} tag {tag:#04x}")]
    UnknownTag {
        /// Which enum was being decoded.
        what: &'static str,
        /// The offending tag.
        tag: u8,
    },
    /// A string was not valid UTF-8.
    #[error("invalid utf-8 in {0}")]
    Utf8(&'static str),
    /// A field broke a documented limit.
    #[error("{0} out of range")]
    Range(&'static str),
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Writes a big-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes raw bytes with no prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Writes a `u32` length prefix and the bytes.
    ///
    /// Values longer than `u32::MAX` cannot be framed; callers bound sizes far
    /// below that (frames are at most a few MiB), so the length is clamped by
    /// construction.
    pub fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.raw(&v[..len as usize]);
    }

    /// Writes a UTF-8 string as [`Writer::bytes`].
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// Writes a `u16` list count. Lists are bounded by their callers.
    pub fn count(&mut self, n: usize) {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX));
    }
}

/// Reads values from a byte slice, failing cleanly at its end.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }

    /// Takes `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a length-prefixed byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes_max(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let v = self.bytes()?;
        if v.len() > max {
            return Err(DecodeError::Range(what));
        }
        Ok(v)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str_max(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let v = self.bytes_max(max, what)?;
        std::str::from_utf8(v).map_err(|_| DecodeError::Utf8(what))
    }

    /// Reads a list count, checking that `count * min_item` bytes remain so a
    /// hostile count cannot drive a large allocation.
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(DecodeError::Range(what));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_primitives() {
        let mut w = Writer::default();
        w.u8(1);
        w.u16(0x0203);
        w.u32(0x0405_0607);
        w.u64(0x0809_0a0b_0c0d_0e0f);
        w.str("hé");
        let buf = w.into_inner();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.u64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(r.str_max(16, "s").unwrap(), "hé");
        r.finish().unwrap();
    }

    #[test]
    fn hostile_length_is_truncated_not_allocated() {
        let buf = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(Reader::new(&buf).bytes(), Err(DecodeError::Truncated));
    }

    #[test]
    fn hostile_count_is_rejected() {
        let buf = [0xff, 0xff, 0, 0];
        assert_eq!(
            Reader::new(&buf).count(8, "list"),
            Err(DecodeError::Range("list"))
        );
    }

    #[test]
    fn bad_utf8_is_an_error() {
        let mut w = Writer::default();
        w.bytes(&[0xff, 0xfe]);
        let buf = w.into_inner();
        assert_eq!(
            Reader::new(&buf).str_max(8, "name"),
            Err(DecodeError::Utf8("name"))
        );
    }
}
