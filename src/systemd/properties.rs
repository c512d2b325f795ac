//! Typed unit properties, as `StartTransientUnit` takes them: `(name, variant)` pairs, and
//! the parser that turns a unit-file style `Key=Value` line (sizes, time spans, percentages,
//! octal, lists) into its D-Bus form. Unknown keys are errors, so a typo never passes silently.

use zbus::Variant;

use super::Error;

/// A property as sent to `StartTransientUnit`.
pub type Property = (String, Variant<'static>);

/// A property from a name and anything zbus can turn into a variant.
pub fn prop(name: &str, value: impl Into<Variant<'static>>) -> Property {
    (name.to_owned(), value.into())
}

/// The kind of D-Bus value a known key takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Str,
    /// `t`; accepts `K`/`M`/`G`/`T` suffixes (base 1024) and `infinity`.
    Bytes,
    U64,
    I32,
    /// `u` written in octal (`UMask`).
    Octal,
    /// `as`, whitespace-separated.
    StrList,
    /// A time span; the D-Bus name ends in `USec` instead of `Sec` (`t`, microseconds).
    Sec,
    /// `CPUQuota=150%` → `CPUQuotaPerSecUSec`.
    Percent,
}

/// The keys `parse` accepts (what a transient service may set and we know the type of).
const KNOWN: &[(&str, Kind)] = &[
    ("CPUAccounting", Kind::Bool),
    ("Delegate", Kind::Bool),
    ("IOAccounting", Kind::Bool),
    ("IPAccounting", Kind::Bool),
    ("LockPersonality", Kind::Bool),
    ("MemoryAccounting", Kind::Bool),
    ("MemoryDenyWriteExecute", Kind::Bool),
    ("NoNewPrivileges", Kind::Bool),
    ("PrivateDevices", Kind::Bool),
    ("PrivateIPC", Kind::Bool),
    ("PrivateMounts", Kind::Bool),
    ("PrivateNetwork", Kind::Bool),
    ("PrivateTmp", Kind::Bool),
    ("PrivateUsers", Kind::Bool),
    ("ProtectClock", Kind::Bool),
    ("ProtectControlGroups", Kind::Bool),
    ("ProtectHostname", Kind::Bool),
    ("ProtectKernelLogs", Kind::Bool),
    ("ProtectKernelModules", Kind::Bool),
    ("ProtectKernelTunables", Kind::Bool),
    ("RemoveIPC", Kind::Bool),
    ("RestrictRealtime", Kind::Bool),
    ("RestrictSUIDSGID", Kind::Bool),
    ("SendSIGHUP", Kind::Bool),
    ("SendSIGKILL", Kind::Bool),
    ("TasksAccounting", Kind::Bool),
    ("Description", Kind::Str),
    ("DevicePolicy", Kind::Str),
    ("KillMode", Kind::Str),
    ("PAMName", Kind::Str),
    ("ProcSubset", Kind::Str),
    ("ProtectHome", Kind::Str),
    ("ProtectProc", Kind::Str),
    ("ProtectSystem", Kind::Str),
    ("StandardError", Kind::Str),
    ("StandardOutput", Kind::Str),
    ("SyslogIdentifier", Kind::Str),
    ("LimitAS", Kind::Bytes),
    ("LimitCORE", Kind::Bytes),
    ("LimitDATA", Kind::Bytes),
    ("LimitFSIZE", Kind::Bytes),
    ("LimitMEMLOCK", Kind::Bytes),
    ("LimitSTACK", Kind::Bytes),
    ("MemoryHigh", Kind::Bytes),
    ("MemoryLow", Kind::Bytes),
    ("MemoryMax", Kind::Bytes),
    ("MemoryMin", Kind::Bytes),
    ("MemorySwapMax", Kind::Bytes),
    ("CPUWeight", Kind::U64),
    ("IOWeight", Kind::U64),
    ("LimitNOFILE", Kind::U64),
    ("LimitNPROC", Kind::U64),
    ("StartupCPUWeight", Kind::U64),
    ("StartupIOWeight", Kind::U64),
    ("TasksMax", Kind::U64),
    ("IOSchedulingClass", Kind::I32),
    ("IOSchedulingPriority", Kind::I32),
    ("KillSignal", Kind::I32),
    ("Nice", Kind::I32),
    ("OOMScoreAdjust", Kind::I32),
    ("UMask", Kind::Octal),
    ("ExecPaths", Kind::StrList),
    ("InaccessiblePaths", Kind::StrList),
    ("NoExecPaths", Kind::StrList),
    ("ReadOnlyPaths", Kind::StrList),
    ("ReadWritePaths", Kind::StrList),
    ("SupplementaryGroups", Kind::StrList),
    ("RuntimeMaxSec", Kind::Sec),
    ("RuntimeRandomizedExtraSec", Kind::Sec),
    ("TimeoutAbortSec", Kind::Sec),
    ("TimeoutStartSec", Kind::Sec),
    ("TimeoutStopSec", Kind::Sec),
    ("WatchdogSec", Kind::Sec),
    ("CPUQuota", Kind::Percent),
];

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn parse_bytes(value: &str) -> Option<u64> {
    if value == "infinity" {
        return Some(u64::MAX);
    }
    let (number, shift) = match value.as_bytes().last()? {
        b'K' | b'k' => (&value[..value.len() - 1], 10),
        b'M' | b'm' => (&value[..value.len() - 1], 20),
        b'G' | b'g' => (&value[..value.len() - 1], 30),
        b'T' | b't' => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    number
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

/// A systemd time span (`90`, `1min 30s`, `500ms`, `infinity`) in microseconds.
fn parse_timespan_usec(value: &str) -> Option<u64> {
    if value == "infinity" {
        return Some(u64::MAX);
    }
    let mut total: u64 = 0;
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let factor: f64 = match &rest[..unit_end] {
            "us" | "usec" => 1.0,
            "ms" | "msec" => 1e3,
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86400e6,
            _ => return None,
        };
        rest = rest[unit_end..].trim_start();
        total = total.checked_add((number * factor) as u64)?;
    }
    Some(total)
}

/// Convert one `Key=Value` entry to its typed D-Bus form.
/// Unknown keys and malformed values are errors, so a typo never passes silently.
pub fn parse(entry: &str) -> Result<Property, Error> {
    let bad = |why: &'static str| Error::BadProperty {
        entry: entry.to_owned(),
        why,
    };
    let (key, value) = entry
        .split_once('=')
        .ok_or_else(|| bad("expected Key=Value"))?;
    let (key, value) = (key.trim(), value.trim());
    let kind = KNOWN
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| bad("unknown or unsupported key"))?;
    Ok(match kind {
        Kind::Bool => prop(
            key,
            parse_bool(value).ok_or_else(|| bad("expected a boolean"))?,
        ),
        Kind::Str => prop(key, value.to_owned()),
        Kind::Bytes => prop(
            key,
            parse_bytes(value).ok_or_else(|| bad("expected a size"))?,
        ),
        Kind::U64 => prop(
            key,
            value.parse::<u64>().map_err(|_| bad("expected a number"))?,
        ),
        Kind::I32 => prop(
            key,
            value.parse::<i32>().map_err(|_| bad("expected a number"))?,
        ),
        Kind::Octal => prop(
            key,
            u32::from_str_radix(value, 8).map_err(|_| bad("expected an octal number"))?,
        ),
        Kind::StrList => prop(
            key,
            value
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<String>>(),
        ),
        Kind::Sec => {
            let usec = parse_timespan_usec(value).ok_or_else(|| bad("expected a time span"))?;
            let name = format!("{}USec", key.strip_suffix("Sec").unwrap_or(key));
            prop(&name, usec)
        }
        Kind::Percent => {
            let percent: f64 = value
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad("expected a percentage"))?;
            if percent.is_nan() || percent <= 0.0 {
                return Err(bad("expected a positive percentage"));
            }
            prop("CPUQuotaPerSecUSec", (percent * 10_000.0) as u64)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_properties() {
        let check = |entry: &str, name: &str, value: Variant<'static>| {
            let (n, v) = parse(entry).expect("valid entry");
            assert_eq!(n, name);
            assert_eq!(v, value, "{entry}");
        };
        check("IOWeight=50", "IOWeight", Variant::from(50u64));
        check("PrivateNetwork=yes", "PrivateNetwork", Variant::from(true));
        check(
            "RuntimeMaxSec=1h 30min",
            "RuntimeMaxUSec",
            Variant::from(5_400_000_000u64),
        );
        check(
            "TimeoutStopSec=500ms",
            "TimeoutStopUSec",
            Variant::from(500_000u64),
        );
        check("MemoryHigh=1G", "MemoryHigh", Variant::from(1u64 << 30));
        check(
            "CPUQuota=150%",
            "CPUQuotaPerSecUSec",
            Variant::from(1_500_000u64),
        );
        check("Nice=-5", "Nice", Variant::from(-5i32));
        check("UMask=0077", "UMask", Variant::from(0o77u32));
        check(
            "ProtectSystem=strict",
            "ProtectSystem",
            Variant::from("strict"),
        );
        check(
            "InaccessiblePaths=/a /b",
            "InaccessiblePaths",
            Variant::from(vec!["/a".to_owned(), "/b".to_owned()]),
        );
        for bad in [
            "Bogus=1",
            "IOWeight=x",
            "PrivateNetwork=maybe",
            "noequals",
            "RuntimeMaxSec=3 fortnights",
            "CPUQuota=0%",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
