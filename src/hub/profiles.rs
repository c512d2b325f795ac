//! Server profiles (`[[Spawner.profiles]]`): which one a spawn gets from its `user_options`,
//! who may use which, and the choices the spawn form offers.

use serde_json::{Value, json};

use crate::config::Profile;

use super::{Error, Hub, Result, UserRow};

/// Whether a member of `groups` may use `profile`.
fn open_to(profile: &Profile, groups: &[String]) -> bool {
    profile.groups.is_empty() || profile.groups.iter().any(|g| groups.contains(g))
}

impl Hub {
    /// The profile a spawn of `user` with `options` runs with: the one `options.profile`
    /// names (unknown: 400; not open to the user's groups: 403), else the default one if
    /// open to them, else the first that is. `None` when the config has no profiles.
    pub fn profile_for(&self, user: &UserRow, options: Option<&Value>) -> Result<Option<&Profile>> {
        let spawner = &self.config.spawner;
        if spawner.profiles.is_empty() {
            return Ok(None);
        }
        let groups = self.user_groups(user)?;
        match options.and_then(|o| o.get("profile")) {
            None | Some(Value::Null) => {
                let fallback = spawner
                    .default_profile()
                    .filter(|p| open_to(p, &groups))
                    .or_else(|| spawner.profiles.iter().find(|p| open_to(p, &groups)));
                match fallback {
                    Some(profile) => Ok(Some(profile)),
                    None => Err(Error::Forbidden(format!(
                        "No server profile is open to {}",
                        user.name
                    ))),
                }
            }
            Some(Value::String(slug)) => {
                let profile = spawner.profile(slug).ok_or_else(|| {
                    let known: Vec<&str> =
                        spawner.profiles.iter().map(|p| p.slug.as_str()).collect();
                    Error::BadRequest(format!(
                        "Unknown profile {slug:?}; the profiles are: {}",
                        known.join(", ")
                    ))
                })?;
                if open_to(profile, &groups) {
                    Ok(Some(profile))
                } else {
                    Err(Error::Forbidden(format!(
                        "{} may not use the profile {slug:?} (it is for {})",
                        user.name,
                        profile.groups.join(", ")
                    )))
                }
            }
            Some(other) => Err(Error::BadRequest(format!(
                "user_options.profile must be a profile's slug (a string), not {other}"
            ))),
        }
    }

    /// The profiles the spawn form offers `user` (those open to them), the one a spawn
    /// without a choice gets marked `checked`.
    pub fn profile_choices(&self, user: &UserRow) -> Result<Vec<Value>> {
        let spawner = &self.config.spawner;
        if spawner.profiles.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.user_groups(user)?;
        let chosen = self
            .profile_for(user, None)
            .ok()
            .flatten()
            .map(|p| p.slug.clone());
        Ok(spawner
            .profiles
            .iter()
            .filter(|p| open_to(p, &groups))
            .map(|p| {
                json!({
                    "slug": p.slug,
                    "display_name": if p.display_name.is_empty() { &p.slug } else { &p.display_name },
                    "description": p.description,
                    "checked": chosen.as_deref() == Some(p.slug.as_str()),
                })
            })
            .collect())
    }
}
