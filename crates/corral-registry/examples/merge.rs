//! Using the catalogue alone: two instances' `/api/tags` bodies merged into one listing,
//! with a prefix on the second instance, and a requested model resolved to its holders.
//!
//! Run with `cargo run -p corral-registry --example merge`.

#![allow(clippy::print_stdout)] // An example shows its results.

use corral_registry::{Catalogue, ConnectionView};
use serde_json::json;

fn main() {
    let connections = [
        ConnectionView {
            idx: 0,
            url: "http://gpu-1:11434".into(),
            enabled: true,
            ..ConnectionView::default()
        },
        ConnectionView {
            idx: 1,
            url: "http://gpu-2:11434".into(),
            enabled: true,
            prefix_id: Some("big".into()),
            ..ConnectionView::default()
        },
    ];
    let tags = [
        Some(
            json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}, {"name": "qwen3:8b", "model": "qwen3:8b"}]}),
        ),
        Some(json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}]})),
    ];
    let catalogue = Catalogue::merge(&connections, &tags, &[None, None]);
    for entry in catalogue.entries() {
        println!("{:<22} held by instances {:?}", entry.id, entry.urls);
    }
    // `llama3.2` means `llama3.2:latest`; the prefixed id routes to instance 1 only, by its own name.
    for requested in ["llama3.2", "big.llama3.2:latest"] {
        for (idx, name) in catalogue.targets(requested) {
            println!("{requested:<22} -> instance {idx} as {name}");
        }
    }
}
