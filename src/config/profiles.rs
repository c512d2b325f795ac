//! `[[Spawner.profiles]]`: the profile type, how a profile changes a spawner's command and
//! limits, and the checks a config's profiles must pass.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ByteSize, Config, CpuAmount, Limits, SpawnerConfig};

/// One `[[Spawner.profiles]]` entry: what a user may pick before a spawn, and what it
/// changes. Limits apply over the defaults, groups and user limits; `environment` over
/// `Spawner.environment`; `cmd`/`args` replace the spawner's when given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// What `user_options.profile` names (and the form's `profile` field sends).
    pub slug: String,
    pub display_name: String,
    /// HTML, as KubeSpawner's.
    pub description: String,
    /// Picked when the user picks none; else the first profile is.
    pub default: bool,
    /// Hub groups whose members may use it; empty: everyone.
    pub groups: Vec<String>,
    pub mem_limit: Option<ByteSize>,
    pub mem_guarantee: Option<ByteSize>,
    pub cpu_limit: Option<CpuAmount>,
    pub cpu_guarantee: Option<CpuAmount>,
    pub tasks_max: Option<u64>,
    pub environment: BTreeMap<String, String>,
    pub cmd: Vec<String>,
    pub args: Vec<String>,
    /// `Key=Value` unit settings for this profile's servers (systemd spawner), after
    /// `SystemdSpawner.unit_extra_properties`.
    pub unit_extra_properties: Vec<String>,
}

impl Profile {
    /// The limits it sets (`serde(flatten)` would lose `deny_unknown_fields`).
    pub fn limits(&self) -> Limits {
        Limits {
            mem_limit: self.mem_limit,
            mem_guarantee: self.mem_guarantee,
            cpu_limit: self.cpu_limit,
            cpu_guarantee: self.cpu_guarantee,
            tasks_max: self.tasks_max,
        }
    }
}

impl SpawnerConfig {
    /// The profile `slug` names.
    pub fn profile(&self, slug: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.slug == slug)
    }

    /// The profile a spawn without a choice gets: the `default` one, else the first.
    pub fn default_profile(&self) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.default)
            .or_else(|| self.profiles.first())
    }

    /// The command of a server with `profile`: its own `cmd`/`args` where it sets them.
    pub fn argv_for(&self, profile: Option<&Profile>) -> Vec<String> {
        let cmd = profile
            .map(|p| &p.cmd)
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.cmd);
        let args = profile
            .map(|p| &p.args)
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.args);
        cmd.iter().chain(args).cloned().collect()
    }

    /// `limits_for`, then the profile's limits over them.
    pub fn limits_with_profile(
        &self,
        user: &str,
        groups: &[String],
        profile: Option<&Profile>,
    ) -> Limits {
        let mut limits = self.limits_for(user, groups);
        if let Some(profile) = profile {
            limits.overlay(&profile.limits());
        }
        limits
    }
}

impl Config {
    pub(super) fn validate_profiles(&self) -> Result<(), String> {
        let profiles = &self.spawner.profiles;
        let mut seen = std::collections::BTreeSet::new();
        for (i, profile) in profiles.iter().enumerate() {
            let at = format!("Spawner.profiles[{i}]");
            let slug = &profile.slug;
            if slug.is_empty()
                || slug.len() > 63
                || !slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{at}.slug: {slug:?} must be 1 to 63 of a-z, 0-9, '-' and '_'"
                ));
            }
            if !seen.insert(slug.as_str()) {
                return Err(format!("{at}.slug: {slug:?} is used by another profile"));
            }
            for property in &profile.unit_extra_properties {
                if !property.contains('=') {
                    return Err(format!(
                        "{at}.unit_extra_properties: {property:?} is not Key=Value"
                    ));
                }
            }
            if let Some(key) = profile.environment.keys().find(|k| {
                k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return Err(format!("{at}.environment: {key:?} is not a variable name"));
            }
        }
        if profiles.iter().filter(|p| p.default).count() > 1 {
            return Err("Spawner.profiles: more than one profile has default = true".into());
        }
        if !profiles.is_empty()
            && self
                .spawner
                .options_form
                .as_deref()
                .is_some_and(|f| !f.trim().is_empty())
        {
            return Err(
                "Spawner.profiles and Spawner.options_form: set one; profiles make their own form"
                    .into(),
            );
        }
        Ok(())
    }
}
