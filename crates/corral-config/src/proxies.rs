//! The client's address behind trusted reverse proxies (`FORWARDED_ALLOW_IPS`).
//!
//! Behind a reverse proxy every request comes from the proxy's address, so a limiter keyed on
//! the TCP peer gives all users one budget. The proxy names the client in `Forwarded`
//! (RFC 7239) or `X-Forwarded-For`, but anyone can send those headers, so they are read only
//! when the peer is a trusted proxy, and then from the right: each hop appends the address
//! it received from, so the rightmost address that is not itself a trusted proxy is the
//! client (as uvicorn and Open WebUI read `FORWARDED_ALLOW_IPS`).

use std::net::IpAddr;

use ipnet::IpNet;

#[cfg(test)]
mod tests;

/// Which peers may name the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    any: bool,
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses entries such as `10.0.0.1`, `10.0.0.0/8`, `::1` or `*`; an entry may itself hold
    /// several separated by `,` (uvicorn's form). The error says what did not parse.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies::default();
        for item in entries.iter().flat_map(|e| e.split([',', ';'])) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                trusted.any = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                trusted.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                trusted.nets.push(IpNet::from(ip));
            } else {
                return Err(format!("{item:?} is neither an IP address, a CIDR range nor `*`"));
            }
        }
        Ok(trusted)
    }

    /// Whether no proxy is trusted (headers are never read).
    pub fn is_empty(&self) -> bool {
        !self.any && self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.any || self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The client's address: the TCP `peer`, or, when the peer is trusted, the rightmost address
/// in `Forwarded` (preferred) or `X-Forwarded-For` that is not a trusted proxy. Values that do
/// not parse end the walk (nothing left of a garbled hop can be believed); when every hop is
/// trusted, the leftmost is the client.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    x_forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = forwarded
        .flat_map(|v| v.split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v))
        })
        .collect();
    if hops.is_empty() {
        hops = x_forwarded_for.flat_map(|v| v.split(',')).map(parse_node).collect();
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// An address as `Forwarded` or `X-Forwarded-For` gives it: `1.2.3.4`, `"[2001:db8::1]:443"`,
/// `1.2.3.4:5678`; obfuscated identifiers and `unknown` give nothing.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(canonical);
    }
    let (ip, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// An IPv4 address mapped into IPv6 (`::ffff:1.2.3.4`, from a dual-stack socket) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
