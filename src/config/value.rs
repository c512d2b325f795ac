//! Config value types that validate while they are parsed, so a bad value's error carries
//! the TOML span (line and key) that serde reports.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// A byte count written as a number or as upstream's strings: `"512M"`, `"2G"`, `"1.5G"`, `"1T"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            Some((i, _)) => (&text[..i], &text[i..]),
            None => (text, ""),
        };
        let factor: u64 = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KI" | "KIB" => 1 << 10,
            "M" | "MB" | "MI" | "MIB" => 1 << 20,
            "G" | "GB" | "GI" | "GIB" => 1 << 30,
            "T" | "TB" | "TI" | "TIB" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {unit:?}, expected K, M, G or T"
                ));
            }
        };
        let value: f64 = number.trim().parse().map_err(|_| {
            format!("invalid size {text:?}: expected a number with an optional K, M, G or T suffix")
        })?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "invalid size {text:?}: must be a non-negative number"
            ));
        }
        Ok(ByteSize((value * factor as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            de::Error::custom("invalid size: expected a number of bytes or a string like \"2G\"")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

/// A number of CPUs (`1.5` = one and a half cores), as upstream's `cpu_limit`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct CpuAmount(pub f64);

impl<'de> Deserialize<'de> for CpuAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !value.is_finite() || value <= 0.0 || value > 4096.0 {
            return Err(de::Error::custom(format!(
                "invalid CPU amount {value}: expected a positive number of CPUs such as 0.5 or 2"
            )));
        }
        Ok(CpuAmount(value))
    }
}

impl fmt::Display for CpuAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A regular expression that must match a whole string.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    pub fn is_full_match(&self, text: &str) -> bool {
        self.0
            .find(text)
            .is_some_and(|m| m.start() == 0 && m.end() == text.len())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regular expression {text:?}: {e}")))
    }
}

/// An IP address or a CIDR network (`10.0.0.0/8`, `fd00::/8`), as `trusted_downstream_ips`
/// lists the reverse proxies whose `X-Forwarded-For` the hub believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let bad = || format!("{text:?} is not an IP address or network (`10.0.0.1`, `10.0.0.0/8`)");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpRange { network, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let masked = |bits: u128, width: u32| {
            let keep = u32::from(self.prefix);
            if keep == 0 { 0 } else { bits >> (width - keep) }
        };
        match (self.network, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                masked(u128::from(u32::from(n)), 32) == masked(u128::from(u32::from(a)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                masked(u128::from(n), 128) == masked(u128::from(a), 128)
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IpRange::parse(&text).map_err(de::Error::custom)
    }
}

/// A secret string whose `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A shell variable name (what an environment file can carry).
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        for (text, bytes) in [
            ("512", 512),
            ("1K", 1024),
            ("512M", 512 << 20),
            ("2G", 2 << 30),
            ("1.5G", 3 << 29),
            ("1T", 1 << 40),
            ("2gib", 2 << 30),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "G", "2X", "-1G", "nanG"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(2 << 30).to_string(), "2G");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn pattern_is_anchored() {
        let p = Pattern(regex::Regex::new("[a-z]+").expect("valid"));
        assert!(p.is_full_match("alice"));
        assert!(!p.is_full_match("alice1"));
    }

    #[test]
    fn ip_ranges() {
        let one = IpRange::parse("10.0.0.1").expect("ip");
        assert!(one.contains("10.0.0.1".parse().expect("ip")));
        assert!(!one.contains("10.0.0.2".parse().expect("ip")));
        let net = IpRange::parse("10.0.0.0/8").expect("net");
        assert!(net.contains("10.200.3.4".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        let all = IpRange::parse("0.0.0.0/0").expect("all");
        assert!(all.contains("192.0.2.9".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        let v6 = IpRange::parse("fd00::/8").expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        for bad in ["", "10.0.0", "10.0.0.0/33", "::/129", "host.example"] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_debug_hides_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
