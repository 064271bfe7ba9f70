//! The client address a limit is keyed by: the peer, or — when the peer is a trusted proxy — the
//! right-most `X-Forwarded-For` address that is not a trusted proxy. Anything left of that is
//! what the client itself wrote and is never believed, so a spoofed `X-Forwarded-For` changes
//! nothing.

use std::net::IpAddr;

/// The `trusted_proxies` list, compiled to address prefixes.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Compiles validated CIDRs (invalid entries were refused by `conf::validate`).
    pub fn compile(list: &[String]) -> Self {
        Self {
            nets: list
                .iter()
                .filter_map(|text| conf::parse_cidr(text).ok())
                .collect(),
        }
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.nets
            .iter()
            .any(|&(net, bits)| in_net(address, net, bits))
    }

    /// The client address for `peer` and the request's `X-Forwarded-For` values.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for value in forwarded.rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let Some(address) = parse_entry(entry) else {
                    // A trusted proxy passed on garbage: the last address we trust is the client.
                    return client;
                };
                client = address;
                if !self.contains(address) {
                    return address;
                }
            }
        }
        client
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(address: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (address, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn right_most_untrusted_address() {
        let trusted = TrustedProxies::compile(&["10.0.0.0/8".into(), "127.0.0.1".into()]);
        let xff: [&[u8]; 1] = [b"6.6.6.6, 1.2.3.4, 10.1.1.1"];
        assert_eq!(
            trusted.client(ip("127.0.0.1"), xff.into_iter()),
            ip("1.2.3.4")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client(ip("8.8.8.8"), xff.into_iter()),
            ip("8.8.8.8")
        );
        // Only trusted hops: the left-most one.
        let hops: [&[u8]; 1] = [b"10.0.0.2"];
        assert_eq!(
            trusted.client(ip("127.0.0.1"), hops.into_iter()),
            ip("10.0.0.2")
        );
        let garbage: [&[u8]; 1] = [b"nonsense"];
        assert_eq!(
            trusted.client(ip("127.0.0.1"), garbage.into_iter()),
            ip("127.0.0.1")
        );
        assert!(trusted.contains(ip("::ffff:10.2.3.4")));
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
    }
}
