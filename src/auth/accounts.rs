//! System accounts for hub users (upstream's `LocalAuthenticator.create_system_users`, with
//! systemdspawner's `username_template`, TLJH's `jupyter-{USERNAME}`): the account name a hub
//! user's servers run as, the names `useradd` may be given, and creating an account, as root
//! directly or through the privileged helper. Accounts are never deleted here.

use std::path::Path;

use crate::privileged::protocol;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Refused(String),
    #[error("could not create the system account {name:?}: {message}")]
    Create { name: String, message: String },
    #[error("privileged helper: {0}")]
    Helper(String),
}

/// The placeholder `username_template` must contain (systemdspawner's).
pub const USERNAME: &str = "{USERNAME}";

/// The longest account name `useradd` takes on Debian and RHEL.
const MAX_NAME: usize = 32;

/// Whether `name` is safe to hand to `useradd`: lower-case letters, digits, `_`, `-` and
/// `.`, starting with a letter or `_` (so never an option or a uid), at most 32 bytes.
pub fn valid_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= MAX_NAME
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
}

/// Check a `username_template` (config validation): `{USERNAME}` once, and otherwise only
/// characters an account name may hold, so the template alone cannot make a name unsafe.
pub fn check_template(template: &str) -> Result<(), String> {
    if template.matches(USERNAME).count() != 1 {
        return Err(format!("{template:?} must contain {USERNAME} exactly once"));
    }
    let rest = template.replace(USERNAME, "");
    if let Some(c) = rest
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | '.'))
    {
        return Err(format!(
            "{template:?}: {c:?} cannot be part of an account name (only {USERNAME}, a-z, \
             0-9, '_', '-', '.')"
        ));
    }
    Ok(())
}

/// The account `user`'s servers run as (systemdspawner's `username_template` applied).
pub fn apply(template: &str, user: &str) -> String {
    template.replace(USERNAME, user)
}

/// The account to create for `user`: the template applied, refused when the result is not a
/// name `useradd` would be given safely.
pub fn account_name(template: &str, user: &str) -> Result<String, Error> {
    let name = apply(template, user);
    if user.is_empty() || !valid_account_name(&name) {
        return Err(Error::Refused(format!(
            "the hub user {user:?} has no valid system account name ({name:?}: lower-case \
             letters, digits, '_', '-', '.', starting with a letter, at most {MAX_NAME} \
             characters)"
        )));
    }
    Ok(name)
}

/// A value of /etc/login.defs, or `default`.
fn login_defs(key: &str, default: u32) -> u32 {
    std::fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key))
                .filter(|v| v.starts_with([' ', '\t']))
                .find_map(|v| v.trim().parse().ok())
        })
        .unwrap_or(default)
}

/// The range of login accounts' uids (`UID_MIN`..=`UID_MAX` in /etc/login.defs).
pub fn normal_uids() -> std::ops::RangeInclusive<u32> {
    login_defs("UID_MIN", 1000)..=login_defs("UID_MAX", 60000)
}

/// What an existing account means for `ensure`: a normal-range account is the user's; any
/// other (root, daemons, `nobody`) is refused rather than run as.
fn check_existing(name: &str, uid: u32) -> Result<(), Error> {
    if normal_uids().contains(&uid) {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{name:?} exists as a system account (uid {uid}) outside the range of login \
             accounts"
        )))
    }
}

/// Whether the account was made now or was there.
pub use protocol::AccountOutcome as Outcome;

/// As root: make `name` (already checked with `account_name`) unless a normal-range account
/// of that name exists. `useradd` without a password leaves it locked (no password login),
/// in its own group only (never sudo), with a home directory.
pub fn ensure_as_root(name: &str) -> Result<Outcome, Error> {
    if !valid_account_name(name) {
        return Err(Error::Refused(format!(
            "{name:?} is not a safe account name"
        )));
    }
    if let Ok(Some(account)) = nix::unistd::User::from_name(name) {
        check_existing(name, account.uid.as_raw())?;
        return Ok(Outcome::Existed);
    }
    // useradd only says "cannot lock /etc/passwd; try again later" when /etc is read-only
    // (a unit's ProtectSystem=full or strict): say what is wrong instead.
    for dir in ["/etc", "/home"] {
        if let Err(nix::errno::Errno::EROFS) =
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
        {
            return Err(Error::Create {
                name: name.into(),
                message: format!(
                    "{dir} is read-only here (a systemd unit's ProtectSystem= or ProtectHome=?), \
                     so no account can be made"
                ),
            });
        }
    }
    // One useradd at a time here, and a few tries when another program (an admin's adduser,
    // a package's postinst, a concurrent chpasswd) holds the password files' lock: useradd
    // gives up at once ("cannot lock /etc/passwd; try again later").
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut wait = std::time::Duration::from_millis(100);
    let mut tries = 0;
    loop {
        let output = std::process::Command::new("useradd")
            .args([
                "--create-home",
                "--user-group",
                "--shell",
                "/bin/bash",
                name,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::Create {
                name: name.into(),
                message: format!("useradd: {e}"),
            })?;
        if output.status.success() {
            break;
        }
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        tries += 1;
        if message.contains("cannot lock") && tries < 6 {
            tracing::info!(account = %name, tries, "useradd: the password files are locked; trying again");
            std::thread::sleep(wait);
            wait *= 2;
            continue;
        }
        return Err(Error::Create {
            name: name.into(),
            message,
        });
    }
    tracing::info!(account = %name, "created system account");
    Ok(Outcome::Created)
}

/// The hub's side: make `user`'s account (the template applied), as root directly or else
/// through the privileged helper, which re-derives the name from its own config.
pub async fn ensure(template: &str, user: &str, helper_socket: &Path) -> Result<Outcome, Error> {
    let name = account_name(template, user)?;
    if nix::unistd::geteuid().is_root() {
        return tokio::task::spawn_blocking(move || ensure_as_root(&name))
            .await
            .map_err(|e| Error::Helper(format!("account thread failed: {e}")))?;
    }
    let request = protocol::Request::CreateAccount { user: user.into() };
    match protocol::call(helper_socket, &request).await {
        Ok(protocol::Response::Account { outcome }) => Ok(outcome),
        Ok(protocol::Response::Error { message }) => Err(Error::Helper(message)),
        Ok(other) => Err(Error::Helper(format!("unexpected answer: {other:?}"))),
        Err(e) => Err(Error::Helper(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_account_names() {
        let tljh = "jupyter-{USERNAME}";
        check_template(tljh).expect("TLJH's");
        check_template(USERNAME).expect("the default");
        for bad in [
            "jupyter",
            "{USERNAME}-{USERNAME}",
            "{USERID}-{USERNAME}",
            "j u-{USERNAME}",
        ] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
        assert_eq!(account_name(tljh, "alice").expect("alice"), "jupyter-alice");
        assert_eq!(account_name(USERNAME, "a.b_c-1").expect("dots"), "a.b_c-1");
        // Safe after a prefix, but an option or a uid alone.
        for user in ["-rf", "1000"] {
            assert!(account_name(USERNAME, user).is_err(), "{user:?}");
            assert!(account_name(tljh, user).is_ok(), "{user:?}");
        }
        for user in [
            "",
            "Alice",
            "al ice",
            "a/b",
            "a:b",
            "al\nice",
            "élise",
            "a@example.org",
        ] {
            assert!(account_name(tljh, user).is_err(), "{user:?}");
            assert!(account_name(USERNAME, user).is_err(), "{user:?}");
        }
        // 32 characters is the limit, template included.
        assert!(account_name(tljh, &"x".repeat(24)).is_ok());
        assert!(account_name(tljh, &"x".repeat(25)).is_err());
    }

    #[test]
    fn only_normal_range_accounts_count_as_existing() {
        let range = normal_uids();
        assert!(check_existing("alice", *range.start()).is_ok());
        for uid in [0, 1, *range.start() - 1, 65534] {
            assert!(check_existing("x", uid).is_err(), "{uid}");
        }
        // Unsafe names are refused before anything is looked up or run.
        assert!(ensure_as_root("-o").is_err());
        assert!(ensure_as_root("root;id").is_err());
    }
}
