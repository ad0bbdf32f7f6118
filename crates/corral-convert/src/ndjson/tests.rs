//! Tests of the line splitter.

use super::*;

fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut s = LineSplitter::default();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(s.lines(c));
    }
    out.extend(s.finish());
    out
}

#[test]
fn whole_lines_in_one_push() {
    assert_eq!(split_all(&[b"a\nbb\n"]), vec![b"a".to_vec(), b"bb".to_vec()]);
}

#[test]
fn line_split_across_many_pushes() {
    assert_eq!(
        split_all(&[b"{\"a\"", b":", b"1", b"}\n{", b"}\n"]),
        vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()]
    );
}

#[test]
fn final_line_without_newline() {
    assert_eq!(split_all(&[b"a\nlast"]), vec![b"a".to_vec(), b"last".to_vec()]);
    let mut s = LineSplitter::default();
    assert!(s.lines(b"x\n").len() == 1);
    assert_eq!(s.finish(), None);
}

#[test]
fn crlf_and_empty_lines() {
    assert_eq!(
        split_all(&[b"a\r\n\nb\r", b"\n"]),
        vec![b"a".to_vec(), b"".to_vec(), b"b".to_vec()]
    );
}

#[test]
fn newline_at_a_push_boundary() {
    assert_eq!(
        split_all(&[b"ab", b"\n", b"\n", b"c"]),
        vec![b"ab".to_vec(), b"".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn no_length_cap() {
    let big = vec![b'x'; 10 * 1024 * 1024];
    let mut s = LineSplitter::default();
    for piece in big.chunks(7919) {
        assert!(s.lines(piece).is_empty());
    }
    assert_eq!(s.pending(), big.len());
    let lines = s.lines(b"\nnext\n");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), big.len());
    assert_eq!(s.pending(), 0);
}

#[test]
fn write_line_is_compact_with_newline() {
    assert_eq!(line(&serde_json::json!({"a": [1, 2]})), b"{\"a\":[1,2]}\n");
}
