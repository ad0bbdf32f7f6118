//! NDJSON framing as pure byte functions: splitting a byte stream into lines, writing lines.

use serde::Serialize;

/// Reassembles newline-delimited lines from arbitrarily split input.
///
/// There is no line-length cap: a line may be split across any number of pushes and is held
/// until its `\n` arrives (or [`LineSplitter::finish`] is called at end of input).
/// Lines are handed out without the `\n` and without a trailing `\r`.
/// Lines that lie wholly inside one pushed slice are handed out without copying.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

/// Capacity kept after a long line has been handed out, so one huge line does not pin memory.
const KEEP_CAPACITY: usize = 64 * 1024;

impl LineSplitter {
    /// Feeds `bytes`, calling `on_line` for every line completed by them, in order.
    pub fn push(&mut self, bytes: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = bytes;
        if !self.partial.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                return;
            };
            self.partial.extend_from_slice(&rest[..nl]);
            on_line(strip_cr(&self.partial));
            self.clear();
            rest = &rest[nl + 1..];
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            on_line(strip_cr(&rest[start..nl]));
            start = nl + 1;
        }
        self.partial.extend_from_slice(&rest[start..]);
    }

    /// Feeds `bytes` and returns the completed lines as owned vectors.
    pub fn lines(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.push(bytes, |line| out.push(line.to_vec()));
        out
    }

    /// Ends the input: returns the last line if it had no `\n` (and is not empty).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            return None;
        }
        let line = strip_cr(&self.partial).to_vec();
        self.clear();
        Some(line)
    }

    /// How many bytes of an unfinished line are held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn clear(&mut self) {
        self.partial.clear();
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial.shrink_to(KEEP_CAPACITY);
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends `value` as one compact JSON line (with its `\n`) to `out`.
pub fn write_line<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Only maps with non-string keys fail to serialise; none of the wire types has one.
        out.truncate(start);
        out.extend_from_slice(br#"{"error":"failed to serialise a stream object"}"#);
    }
    out.push(b'\n');
}

/// `value` as one compact JSON line, `\n` included.
pub fn line<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    write_line(&mut out, value);
    out
}

#[cfg(test)]
mod tests;
