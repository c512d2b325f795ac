//! Hand-written zbus 6 proxies for the few systemd D-Bus calls we need (Manager, Unit,
//! Service), plus the unit-name ↔ object-path escaping. Signatures follow systemd 252's
//! `org.freedesktop.systemd1` interfaces exactly; nothing here knows about JupyterHub.

use zbus::{OwnedObjectPath, Variant, proxy};

/// Bus name of the service manager.
pub const DESTINATION: &str = "org.freedesktop.systemd1";
/// Prefix of every unit's object path.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// One row of `ListUnitsByPatterns`: id, description, load state, active state, sub state,
/// following, unit path, job id, job type, job path.
pub type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// `StartTransientUnit(s name, s mode, a(sv) properties, a(sa(sv)) aux) -> o job`.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Variant<'_>)],
        aux: &[(&str, &[(&str, Variant<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    /// `mode` is `replace` in practice; returns the stop job's path.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// `whom` is `all`, `main` or `control`.
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    /// Answers once the unit's cgroup is frozen (cgroup v2 freezer); `NotSupported` when
    /// the unit's cgroup cannot be frozen.
    fn freeze_unit(&self, name: &str) -> zbus::Result<()>;
    /// Answers once the unit's cgroup runs again.
    fn thaw_unit(&self, name: &str) -> zbus::Result<()>;
    /// Fails with `org.freedesktop.systemd1.NoSuchUnit` when the unit is not loaded.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Without a subscriber systemd does not emit unit `PropertiesChanged` signals.
    fn subscribe(&self) -> zbus::Result<()>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitRow>>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, `reloading`.
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// `running`, `freezing`, `frozen`, `thawing`.
    #[zbus(property)]
    fn freezer_state(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    /// `success`, `exit-code`, `signal`, `core-dump`, `timeout`, `oom-kill`, ...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    /// A `CLD_*` code: 1 exited, 2 killed, 3 dumped.
    #[zbus(property, name = "ExecMainCode")]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    /// The exit status, or the signal number when killed.
    #[zbus(property, name = "ExecMainStatus")]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property, name = "ExecMainPID")]
    fn exec_main_pid(&self) -> zbus::Result<u32>;
    /// Realtime µs since the epoch; 0 if the main process never started.
    #[zbus(property, name = "ExecMainStartTimestamp")]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
    // Not change-signalled: the cache must be bypassed or the first value is read forever.
    #[zbus(property(emits_changed_signal = "false"), name = "MemoryCurrent")]
    fn memory_current(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"), name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"), name = "ControlGroup")]
    fn control_group(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Slice",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Slice {
    #[zbus(property(emits_changed_signal = "false"), name = "MemoryCurrent")]
    fn memory_current(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"), name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;
    /// `MemoryMax=`; `u64::MAX` is "infinity".
    #[zbus(property, name = "MemoryMax")]
    fn memory_max(&self) -> zbus::Result<u64>;
}

/// The object path systemd gives a unit: bytes outside `[A-Za-z0-9]` (and a leading digit)
/// become `_xx` in lowercase hex.
pub fn unit_object_path(unit: &str) -> String {
    let mut path = String::with_capacity(UNIT_PATH_PREFIX.len() + unit.len() * 3);
    path.push_str(UNIT_PATH_PREFIX);
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// The inverse of `unit_object_path`; `None` for a path that is not a unit's.
pub fn unit_from_object_path(path: &str) -> Option<String> {
    let escaped = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a zbus error is systemd's "no such unit" (the unit is not loaded).
pub fn is_no_such_unit(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

/// systemd's words when a zbus error is its refusal to freeze a unit it cannot freeze (a
/// host without the unified cgroup hierarchy answers `Unit 'x' does not support freezing.`).
/// zbus hands `org.freedesktop.DBus.Error.*` replies over as `Error::FDO`; both forms count.
pub fn not_supported_message(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::FDO(e) => match &**e {
            zbus::fdo::Error::NotSupported(message) => Some(message.clone()),
            _ => None,
        },
        zbus::Error::MethodError(name, message, _)
            if name.as_str() == "org.freedesktop.DBus.Error.NotSupported" =>
        {
            Some(message.clone().unwrap_or_else(|| name.to_string()))
        }
        _ => None,
    }
}

/// Whether a zbus error is systemd's "unit exists" (a transient unit of that name is loaded).
pub fn is_unit_exists(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.systemd1.UnitExists")
}

/// Whether a zbus error is systemd's answer to a second `Subscribe` on one connection.
pub fn is_already_subscribed(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd's refusal arrives as zbus's `FDO` form (what a real systemd 252 sends).
    #[test]
    fn not_supported_keeps_systemds_words() {
        let words = "Unit 'jupyter-a-singleuser.service' does not support freezing.";
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::NotSupported(words.into())));
        assert_eq!(not_supported_message(&fdo).as_deref(), Some(words));
        let other = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(words.into())));
        assert_eq!(not_supported_message(&other), None);
    }

    fn check(unit: &str, expected: &str) {
        let path = unit_object_path(unit);
        assert_eq!(path, format!("{UNIT_PATH_PREFIX}{expected}"));
        assert_eq!(unit_from_object_path(&path).as_deref(), Some(unit));
    }

    #[test]
    fn object_paths() {
        check("jupyter-alice.service", "jupyter_2dalice_2eservice");
        check("1a.service", "_31a_2eservice");
        check(
            "jupyter-a\\x40b-singleuser.service",
            "jupyter_2da_5cx40b_2dsingleuser_2eservice",
        );
        assert_eq!(
            unit_from_object_path("/org/freedesktop/systemd1/job/1"),
            None
        );
        assert_eq!(
            unit_from_object_path(&format!("{UNIT_PATH_PREFIX}_zz")),
            None
        );
    }
}
