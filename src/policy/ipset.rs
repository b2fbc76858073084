//! A set of IP networks, compiled into sorted, merged address ranges: a lookup is a binary
//! search, so 10,000 networks cost a handful of comparisons more than one.

use std::net::IpAddr;

use ipnet::IpNet;

/// IPv4 and IPv6 networks as inclusive ranges, sorted and without overlaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        IpSet {
            v4: merged(v4, |x| x.saturating_add(1)),
            v6: merged(v6, |x| x.saturating_add(1)),
        }
    }

    /// Whether `ip` is in one of the networks; an IPv4-mapped IPv6 address is taken as
    /// the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

/// Sort ranges and join those that overlap or touch (`next` is the address after one).
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= next(last.1) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // the first range that starts after x; the one before it is the only candidate
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && x <= ranges[i - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap().trunc()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_in_their_networks_only() {
        let s = set(&[
            "10.0.0.0/8",
            "192.168.1.0/24",
            "2001:db8::/32",
            "203.0.113.7/32",
        ]);
        for inside in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.9",
            "2001:db8:ffff::1",
            "203.0.113.7",
            "::ffff:10.1.2.3",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.0",
            "9.255.255.255",
            "192.168.2.1",
            "2001:db9::1",
            "203.0.113.8",
            "::1",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "0.0.0.0/0"]);
        assert_eq!(s.v4, vec![(0, u32::MAX)]);
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24"]);
        assert_eq!(s.v4.len(), 2);
        assert!(s.contains(ip("10.0.1.200")));
        assert!(!s.contains(ip("10.0.2.1")));
        assert!(set(&["::/0"]).contains(ip("2001:db8::1")));
        assert!(!set(&[]).contains(ip("10.0.0.1")));
    }

    #[test]
    fn ten_thousand_networks_answer_like_a_scan() {
        let nets: Vec<IpNet> = (0..10_000u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + i * 512).into(), 24).unwrap()))
            .collect();
        let s = IpSet::new(nets.clone());
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let a = IpAddr::V4(
                rng.u32(0x0a00_0000..0x0a00_0000 + 10_000 * 512 + 1000)
                    .into(),
            );
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)), "{a}");
        }
    }
}
