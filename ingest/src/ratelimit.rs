//! In-memory token-bucket rate limits (per reporter token and per client address) and the
//! client address itself (socket peer, or `X-Forwarded-For` behind a trusted proxy).
//!
//! Each instance limits on its own: behind N replicas a client gets up to N times the
//! configured rate, which is acceptable for abuse protection (the point is that no single
//! client can monopolise an instance). Memory is bounded: buckets that have refilled completely
//! are indistinguishable from new ones and are dropped when a shard grows past its share of
//! `max_keys`; if a shard is still full after that (a flood of distinct keys), its oldest half is
//! dropped, which can only make the limiter more lenient, never block a client wrongly.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

const SHARDS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A set of token buckets keyed by `K`, all with the same rate and capacity.
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    max_keys_per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_sec <= 0` (or not finite) disables the limit.
    pub fn new(per_sec: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            per_sec: if per_sec.is_finite() { per_sec } else { 0.0 },
            burst: f64::from(burst.max(1)),
            max_keys_per_shard: (max_keys / SHARDS).max(16),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_sec > 0.0
    }

    /// Takes one token for `key`; when none is left, says how long until one is.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let shard = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut map = self.shards[shard].lock().expect("rate limiter lock");
        if map.len() >= self.max_keys_per_shard && !map.contains_key(key) {
            self.prune(&mut map, now);
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_sec;
            Err(Duration::from_secs_f64(wait))
        }
    }

    fn prune(&self, map: &mut HashMap<K, Bucket>, now: Instant) {
        let full_after = self.burst / self.per_sec;
        map.retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() < full_after);
        if map.len() >= self.max_keys_per_shard {
            let mut ages: Vec<Instant> = map.values().map(|b| b.updated).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            map.retain(|_, b| b.updated > cutoff);
        }
    }

    /// Keys currently held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("rate limiter lock").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The key a client address is limited under: the address itself, or its /64 for IPv6 (one
/// subscriber usually holds a whole /64).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Finds the client's address from the socket peer and, only when the peer is a trusted proxy,
/// from `X-Forwarded-For` (walking from the right past trusted hops).
#[derive(Clone, Debug, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted: &[String]) -> Result<Self, String> {
        let trusted = trusted
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Self { trusted })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A malformed entry: stop believing the chain here.
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let l = RateLimiter::new(2.0, 3, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(&"a", t0).is_ok());
        }
        let wait = l.check_at(&"a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        // Another key has its own bucket.
        assert!(l.check_at(&"b", t0).is_ok());
        // Half a second later one token is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check_at(&"a", t1).is_ok());
        assert!(l.check_at(&"a", t1).is_err());
    }

    #[test]
    fn zero_rate_disables() {
        let l = RateLimiter::new(0.0, 1, 10);
        for _ in 0..100 {
            assert!(l.check(&1u32).is_ok());
        }
        assert!(l.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let l = RateLimiter::new(1.0, 5, 16 * 16);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let _ = l.check_at(&i, t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(l.len() <= 16 * 16, "{}", l.len());
    }

    #[test]
    fn networks_and_ipv6_keys() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
        assert_eq!(
            ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let r = ClientIpResolver::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8, 10.0.0.7"),
        );
        // From a trusted proxy: right-most untrusted hop.
        assert_eq!(
            r.resolve(Some("127.0.0.1".parse().unwrap()), &h),
            Some("5.6.7.8".parse().unwrap())
        );
        // From anyone else: the header is ignored.
        assert_eq!(
            r.resolve(Some("9.9.9.9".parse().unwrap()), &h),
            Some("9.9.9.9".parse().unwrap())
        );
        // No proxies configured: never believed.
        let none = ClientIpResolver::new(&[]).unwrap();
        assert_eq!(
            none.resolve(Some("127.0.0.1".parse().unwrap()), &h),
            Some("127.0.0.1".parse().unwrap())
        );
        // Garbage in the header stops the walk.
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, junk"));
        assert_eq!(
            r.resolve(Some("127.0.0.1".parse().unwrap()), &h),
            Some("127.0.0.1".parse().unwrap())
        );
        assert!(ClientIpResolver::new(&["bad".into()]).is_err());
    }
}
