//! Pod IPs from the node's `spec.podCIDR` (a loopback range, so every address is bindable on Linux
//! without configuration).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid pod CIDR {0:?}: expected an IPv4 a.b.c.d/n")]
    InvalidCidr(String),
    #[error("pod CIDR {0} has no free address left")]
    Exhausted(String),
}

/// Hands out the addresses of one CIDR, lowest free first.
#[derive(Debug)]
pub struct PodIps {
    cidr: String,
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
}

impl PodIps {
    pub fn new(cidr: &str) -> Result<Self, IpamError> {
        let invalid = || IpamError::InvalidCidr(cidr.to_string());
        let (addr, bits) = cidr.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let bits: u32 = bits.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&bits) {
            return Err(invalid());
        }
        let size = 1u32 << (32 - bits);
        let network = u32::from(addr) & !(size - 1);
        // Skip the network and broadcast addresses, as Kubernetes' node IPAM does.
        Ok(Self { cidr: cidr.to_string(), first: network + 1, last: network + size - 2, used: BTreeSet::new() })
    }

    /// Marks an address as taken (a pod that already has it).
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        let n = u32::from(ip);
        if (self.first..=self.last).contains(&n) {
            self.used.insert(n);
        }
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let free = (self.first..=self.last).find(|n| !self.used.contains(n));
        let n = free.ok_or_else(|| IpamError::Exhausted(self.cidr.clone()))?;
        self.used.insert(n);
        Ok(Ipv4Addr::from(n))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_lowest_first_skip_reserved_and_are_reused_after_release() {
        let mut ips = PodIps::new("127.64.4.0/30").expect("cidr");
        ips.reserve(Ipv4Addr::new(127, 64, 4, 1));
        assert_eq!(ips.allocate().ok(), Some(Ipv4Addr::new(127, 64, 4, 2)));
        assert!(matches!(ips.allocate(), Err(IpamError::Exhausted(_))));
        ips.release(Ipv4Addr::new(127, 64, 4, 1));
        assert_eq!(ips.allocate().ok(), Some(Ipv4Addr::new(127, 64, 4, 1)));
        assert!(PodIps::new("nonsense").is_err());
    }
}
