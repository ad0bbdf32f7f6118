//! Reading the client's address from trusted proxies only.

use std::net::IpAddr;

use super::{client_address, TrustedProxies};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(entries: &[&str]) -> TrustedProxies {
    TrustedProxies::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
}

fn client(peer: &str, fwd: &[&str], xff: &[&str], t: &TrustedProxies) -> IpAddr {
    client_address(ip(peer), fwd.iter().copied(), xff.iter().copied(), t)
}

#[test]
fn headers_from_an_untrusted_peer_are_ignored() {
    let none = TrustedProxies::default();
    assert_eq!(client("203.0.113.9", &[], &["1.2.3.4"], &none), ip("203.0.113.9"));
    let t = trusted(&["10.0.0.0/8"]);
    assert_eq!(
        client("203.0.113.9", &["for=1.2.3.4"], &["1.2.3.4"], &t),
        ip("203.0.113.9")
    );
}

#[test]
fn the_rightmost_untrusted_hop_is_the_client() {
    let t = trusted(&["10.0.0.1,10.0.0.2", "192.168.0.0/16"]);
    // A client that forges a first hop does not get to choose its address.
    assert_eq!(
        client("10.0.0.1", &[], &["6.6.6.6, 198.51.100.7, 192.168.1.1"], &t),
        ip("198.51.100.7")
    );
    assert_eq!(
        client(
            "10.0.0.2",
            &["for=6.6.6.6, for=\"[2001:db8::7]:443\";proto=https"],
            &[],
            &t
        ),
        ip("2001:db8::7")
    );
    // `Forwarded` is preferred over `X-Forwarded-For`.
    assert_eq!(
        client("10.0.0.1", &["for=198.51.100.8:5555"], &["9.9.9.9"], &t),
        ip("198.51.100.8")
    );
    // Every hop trusted: the leftmost.
    assert_eq!(client("10.0.0.1", &[], &["10.0.0.2"], &t), ip("10.0.0.2"));
    // No header: the peer.
    assert_eq!(client("10.0.0.1", &[], &[], &t), ip("10.0.0.1"));
    // A garbled hop stops the walk at the last good one.
    assert_eq!(client("10.0.0.1", &[], &["1.1.1.1, garbage"], &t), ip("10.0.0.1"));
    assert_eq!(client("10.0.0.1", &["for=unknown"], &[], &t), ip("10.0.0.1"));
}

#[test]
fn star_trusts_everyone_and_mapped_addresses_are_ipv4() {
    let t = trusted(&["*"]);
    assert_eq!(client("::ffff:10.1.1.1", &[], &["::ffff:1.2.3.4"], &t), ip("1.2.3.4"));
    let t = trusted(&["127.0.0.1"]);
    assert_eq!(client("::ffff:127.0.0.1", &[], &["1.2.3.4"], &t), ip("1.2.3.4"));
}

#[test]
fn bad_entries_are_refused() {
    assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
    assert!(TrustedProxies::parse(&["proxy.local".to_owned()]).is_err());
    assert!(TrustedProxies::parse(&[String::new()]).unwrap().is_empty());
}
