//! Integration tests of corral-convert: golden fixtures and stream-splitting properties.
//!
//! Fixtures live in `tests/fixtures/<kind>/`; each input has its expected output beside it
//! (`<name>.sse` or `<name>.out.json`). Run with `UPDATE_EXPECT=1` to rewrite the expected
//! files after an intended change, then review the diff.

// Test helpers fail the test on any error, which is what `unwrap` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod golden;
mod split;

use std::path::{Path, PathBuf};

use corral_convert::ResponseMeta;

/// The fixed stamp of every converted fixture.
pub fn chat_meta() -> ResponseMeta {
    ResponseMeta::new("chatcmpl-fixture", "fixture-model", 1_761_991_200)
}

/// The fixed stamp of every converted completion fixture.
pub fn completion_meta() -> ResponseMeta {
    ResponseMeta::new("cmpl-fixture", "fixture-model", 1_761_991_200)
}

/// The input files of one fixture kind, sorted, excluding expected outputs.
pub fn inputs(kind: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(ext) && !name.ends_with(".out.json")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Compares `actual` with the expected file for `input` (rewriting it under `UPDATE_EXPECT`),
/// collecting a description of any difference into `failures`.
pub fn check(input: &Path, expected_ext: &str, actual: &str, failures: &mut Vec<String>) {
    let name = input.file_name().unwrap().to_string_lossy();
    let stem = name.rsplit_once('.').map_or(&*name, |(stem, _)| stem);
    let expected_path = input.with_file_name(format!("{stem}{expected_ext}"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected_path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&expected_path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs from its expected output\n--- expected\n{expected}\n--- actual\n{actual}",
            input.display()
        )),
        Err(e) => failures.push(format!(
            "{}: {e} (run with UPDATE_EXPECT=1 to create it)",
            expected_path.display()
        )),
    }
}

/// Panics listing every failure, if any.
pub fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Pretty JSON with a final newline, as stored in `.out.json` files.
pub fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}
