//! Starting a simulated Ollama inside a program (as the tests do) and asking it for its
//! models over plain HTTP.
//!
//! Run with `cargo run -p corral-sim --example serve`.

#![allow(clippy::print_stdout)] // An example shows its results.

use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    let config = corral_sim::SimConfig {
        tokens_per_sec: 100.0,
        ..corral_sim::SimConfig::default()
    };
    let sim = corral_sim::SimHandle::spawn_thread(config, "127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    println!("a simulated Ollama answers at {}", sim.url());
    let mut conn = std::net::TcpStream::connect(sim.addr())?;
    write!(conn, "GET /api/tags HTTP/1.0\r\nHost: sim\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    println!("{}", answer.split_once("\r\n\r\n").map_or("", |(_, body)| body));
    Ok(())
}
