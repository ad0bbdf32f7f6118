//! `corral health`: asks the gateway on this machine for `/health` (or `/ready`), for a
//! container's health check, without an HTTP client in the image. Exit 0 on a 200, else 1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use corral_config::Settings;

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the local gateway (`server.port`; `server.host` unless it listens on every address)
/// for `/ready` if `ready`, else `/health`, and prints the answer's body.
pub fn run(settings: &Settings, ready: bool) -> ExitCode {
    let host = match settings.server.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        host => host,
    };
    let path = if ready { "/ready" } else { "/health" };
    match ask(host, settings.server.port, path) {
        Ok((200, body)) => {
            eprintln!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("{path} answered {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{path} on {host}:{}: {e}", settings.server.port);
            ExitCode::FAILURE
        }
    }
}

fn ask(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut answer = String::new();
    conn.take(64 * 1024).read_to_string(&mut answer)?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim().to_owned();
    Ok((status, body))
}
