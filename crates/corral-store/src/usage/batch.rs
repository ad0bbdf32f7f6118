//! Usage records packed into batches: one database row holds the records of one write of the
//! gateway's buffer (`usage_batches`), so a request costs the database a few bytes copied
//! instead of a row inserted, and reports unpack the batches of the time range they read.
//!
//! A batch's `records` is a version byte, then [`SIZE`] bytes a record, little-endian:
//! `at_ms` (8), `seq` (8), the context's id (8), `status` (4), flags (1: cancelled, estimated,
//! time to first token measured), input tokens (8), output tokens (8), time to first token in
//! milliseconds (8, 0 when not measured), duration in milliseconds (8).

use crate::usage::UsageRecord;

/// The format's version, the first byte of every batch.
const VERSION: u8 = 1;

/// Bytes a record takes.
const SIZE: usize = 61;

/// A batch's records arrived within this many milliseconds of each other, so a report of a time
/// range reads only the batches whose newest record is in the range or within this after it.
pub(crate) const SPAN_MS: i64 = 3_600_000;

/// Records a batch holds at most (a row of about 61 KB).
const MAX_RECORDS: usize = 1000;

const CANCELLED: u8 = 1;
const ESTIMATED: u8 = 2;
const TTFT: u8 = 4;

/// One record as stored: its numbers, and its context by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packed {
    pub at_ms: i64,
    pub seq: i64,
    pub context_id: i64,
    pub status: i32,
    pub cancelled: bool,
    pub estimated: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub ttft_ms: Option<i64>,
    pub duration_ms: i64,
}

impl Packed {
    pub fn of(r: &UsageRecord) -> Packed {
        Packed {
            at_ms: r.at_ms,
            seq: r.seq,
            context_id: r.context.id,
            status: r.status,
            cancelled: r.cancelled,
            estimated: r.estimated,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            ttft_ms: r.ttft_ms,
            duration_ms: r.duration_ms,
        }
    }
}

/// One batch's row: the time of its newest and oldest records, its id and its packed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub last_ms: i64,
    pub batch_id: i64,
    pub first_ms: i64,
    pub records: Vec<u8>,
    /// How many records it holds.
    pub len: usize,
}

/// `records` split into batches, in order: a batch ends before a record that would make it span
/// [`SPAN_MS`] or more, or hold more than [`MAX_RECORDS`]. The same records give the same
/// batches, so a batch retried whole is stored once (its id is its first record's `seq`, which
/// no other record of any batch has).
pub(crate) fn batches(records: &[UsageRecord]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let (mut lo, mut hi) = (records[start].at_ms, records[start].at_ms);
        let mut end = start + 1;
        while end < records.len() && end - start < MAX_RECORDS {
            let at = records[end].at_ms;
            let (l, h) = (lo.min(at), hi.max(at));
            if h.saturating_sub(l) >= SPAN_MS {
                break;
            }
            (lo, hi) = (l, h);
            end += 1;
        }
        out.push(Batch {
            last_ms: hi,
            batch_id: records[start].seq,
            first_ms: lo,
            records: encode(records[start..end].iter().map(Packed::of)),
            len: end - start,
        });
        start = end;
    }
    out
}

/// Packs `records`.
pub(crate) fn encode(records: impl ExactSizeIterator<Item = Packed>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.len() * SIZE);
    out.push(VERSION);
    for r in records {
        out.extend_from_slice(&r.at_ms.to_le_bytes());
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&r.context_id.to_le_bytes());
        out.extend_from_slice(&r.status.to_le_bytes());
        let flags = (if r.cancelled { CANCELLED } else { 0 })
            | (if r.estimated { ESTIMATED } else { 0 })
            | (if r.ttft_ms.is_some() { TTFT } else { 0 });
        out.push(flags);
        out.extend_from_slice(&r.input_tokens.to_le_bytes());
        out.extend_from_slice(&r.output_tokens.to_le_bytes());
        out.extend_from_slice(&r.ttft_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&r.duration_ms.to_le_bytes());
    }
    out
}

/// How many records a batch of `bytes` bytes holds (its length is checked when it is read).
pub(crate) fn count(bytes: i64) -> usize {
    usize::try_from(bytes - 1).unwrap_or(0) / SIZE
}

/// Unpacks a batch; `Err` names what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<impl Iterator<Item = Packed> + '_, String> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err("an empty usage batch".to_owned());
    };
    if version != VERSION {
        return Err(format!("a usage batch of format {version}, not {VERSION}"));
    }
    if !body.len().is_multiple_of(SIZE) {
        return Err(format!("a usage batch of {} bytes, not whole records", bytes.len()));
    }
    Ok(body.chunks_exact(SIZE).map(|r| {
        let mut r = Fields(r);
        let at_ms = r.i64();
        let seq = r.i64();
        let context_id = r.i64();
        let status = i32::from_le_bytes(r.take());
        let [flags] = r.take();
        let input_tokens = r.i64();
        let output_tokens = r.i64();
        let ttft = r.i64();
        let duration_ms = r.i64();
        Packed {
            at_ms,
            seq,
            context_id,
            status,
            cancelled: flags & CANCELLED != 0,
            estimated: flags & ESTIMATED != 0,
            input_tokens,
            output_tokens,
            ttft_ms: (flags & TTFT != 0).then_some(ttft),
            duration_ms,
        }
    }))
}

/// The fields of one packed record, read in order (the record's length is checked first).
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        match self.0.split_first_chunk::<N>() {
            Some((field, rest)) => {
                self.0 = rest;
                *field
            }
            None => [0; N],
        }
    }

    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(n: i64) -> Packed {
        Packed {
            at_ms: 1_700_000_000_000 + n,
            seq: -n,
            context_id: i64::MIN + n,
            status: [200, 499, 500, -1][(n % 4) as usize],
            cancelled: n % 2 == 0,
            estimated: n % 3 == 0,
            input_tokens: i64::MAX - n,
            output_tokens: n * 7,
            ttft_ms: (n % 5 != 0).then_some(n),
            duration_ms: n * 11,
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let records: Vec<Packed> = (0..100i32).map(|n| packed(n.into())).collect();
        let bytes = encode(records.iter().copied());
        assert_eq!(bytes.len(), 1 + 100 * SIZE);
        assert_eq!(count(bytes.len() as i64), 100);
        let back: Vec<Packed> = decode(&bytes).map(Iterator::collect).unwrap_or_default();
        assert_eq!(back, records);
        assert_eq!(decode(&encode(std::iter::empty())).map(Iterator::count), Ok(0));
    }

    #[test]
    fn a_batch_of_another_format_or_cut_short_is_refused() {
        let bytes = encode((0..3i32).map(|n| packed(n.into())));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other).is_err());
    }
}
