//! Socket options on both sides of the gateway, read from the live sockets themselves.
//!
//! A stream ends with small writes (the last chunk, the chunked terminator) and a request is
//! written as a head and then a body. With Nagle's algorithm on, such a small write behind
//! unacknowledged data waits for the peer's delayed ACK: about 40 ms on every stream over a
//! reused connection. The gateway must switch it off on the sockets it accepts and on those
//! it opens to instances. The test finds those sockets among this process's own descriptors
//! (the gateway runs in it) and reads `TCP_NODELAY` from them.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use futures_util::StreamExt;

use crate::support::{chat_body, client, sim, Gateway};

/// This process's TCP sockets as (local, remote, descriptor), read from `/proc`.
fn own_tcp_sockets() -> Vec<(SocketAddr, SocketAddr, OwnedFd)> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let mut by_inode = std::collections::HashMap::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let addr = |hex: &str| -> SocketAddr {
            let (ip, port) = hex.split_once(':').unwrap();
            let ip = u32::from_str_radix(ip, 16).unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(ip)), port))
        };
        by_inode.insert(cols[9].to_owned(), (addr(cols[1]), addr(cols[2])));
    }
    let pidfd = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) else {
            continue;
        };
        let Some((local, remote)) = by_inode.get(inode) else {
            continue;
        };
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        let Ok(dup) = rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty()) else {
            continue;
        };
        found.push((*local, *remote, dup));
    }
    found
}

fn nodelay(fd: &OwnedFd) -> bool {
    rustix::net::sockopt::tcp_nodelay(fd).unwrap()
}

#[actix_web::test]
async fn the_gateway_switches_off_nagle_on_client_and_upstream_sockets() {
    let upstream = sim().await;
    let gw = Gateway::in_front_of(&upstream.url()).await;
    let gw_addr: SocketAddr = gw.url.trim_start_matches("http://").parse().unwrap();
    let sim_addr: SocketAddr = upstream.url().trim_start_matches("http://").parse().unwrap();
    let client = client();
    // Two streams on one kept-alive connection, so the upstream connection is reused too.
    for _ in 0..2 {
        let mut resp = client
            .post(gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 5, true))
            .await
            .unwrap();
        assert!(resp.status().is_success());
        while let Some(chunk) = resp.next().await {
            chunk.unwrap();
        }
    }
    let sockets = own_tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, remote, _)| *local == gw_addr && remote.port() != 0)
        .collect();
    let upstream_side: Vec<_> = sockets
        .iter()
        .filter(|(local, remote, _)| *remote == sim_addr && *local != gw_addr)
        .collect();
    assert!(
        !accepted.is_empty(),
        "no accepted gateway socket found among {}",
        sockets.len()
    );
    assert!(!upstream_side.is_empty(), "no gateway-to-instance socket found");
    for (local, remote, fd) in accepted {
        assert!(
            nodelay(fd),
            "the gateway's socket {local} <- {remote} has Nagle's algorithm on"
        );
    }
    // The simulator's own accepted sockets have `local == sim_addr`; the gateway's client
    // sockets towards it are the ones whose remote end is the simulator.
    for (local, remote, fd) in upstream_side {
        assert!(
            nodelay(fd),
            "the gateway's upstream socket {local} -> {remote} has Nagle's algorithm on"
        );
    }
    gw.stop().await;
}
