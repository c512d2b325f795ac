//! The scope table (`scope_definitions`), the default roles and the runtime registry of custom
//! scopes, copied from upstream `jupyterhub/scopes.py` and `roles.py` (6.x: `servers` ⊃ `start:servers`).
//! Invariant: every subscope named here is itself defined, and the graph is acyclic.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::Error;

/// One entry of upstream's `scope_definitions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeDef {
    pub name: &'static str,
    pub description: &'static str,
    pub subscopes: &'static [&'static str],
    /// Longer text for the documentation, where upstream has one.
    pub doc_description: Option<&'static str>,
}

const fn def(
    name: &'static str,
    description: &'static str,
    subscopes: &'static [&'static str],
) -> ScopeDef {
    ScopeDef {
        name,
        description,
        subscopes,
        doc_description: None,
    }
}

/// Upstream's `scope_definitions`, in upstream order.
pub const SCOPE_DEFINITIONS: &[ScopeDef] = &[
    def(
        "(no_scope)",
        "Identify the owner of the requesting entity.",
        &[],
    ),
    ScopeDef {
        name: "self",
        description: "Your own resources",
        subscopes: &[],
        doc_description: Some(
            "The user’s own resources _(metascope for users, resolves to (no_scope) for services)_",
        ),
    },
    ScopeDef {
        name: "inherit",
        description: "Anything you have access to",
        subscopes: &[],
        doc_description: Some(
            "Everything that the token-owning entity can access _(metascope for tokens)_",
        ),
    },
    ScopeDef {
        name: "admin-ui",
        description: "Access the admin page.",
        subscopes: &[],
        doc_description: Some(
            "Access the admin page. Permission to take actions via the admin page granted separately.",
        ),
    },
    def(
        "admin:users",
        "Read, modify, create, and delete users and their authentication state, not including their servers or tokens. This is an extremely privileged scope and should be considered tantamount to superuser.",
        &[
            "admin:auth_state",
            "users",
            "read:roles:users",
            "delete:users",
        ],
    ),
    def(
        "admin:auth_state",
        "Read a user’s authentication state.",
        &[],
    ),
    def(
        "users",
        "Read and write permissions to user models (excluding servers, tokens and authentication state).",
        &["read:users", "list:users", "users:activity"],
    ),
    def("delete:users", "Delete users.", &[]),
    def(
        "list:users",
        "List users, including at least their names.",
        &["read:users:name"],
    ),
    def(
        "read:users",
        "Read user models (including the URL of the default server if it is running).",
        &[
            "read:users:name",
            "read:users:groups",
            "read:users:activity",
        ],
    ),
    def("read:users:name", "Read names of users.", &[]),
    def("read:users:groups", "Read users’ group membership.", &[]),
    def(
        "read:users:activity",
        "Read time of last user activity.",
        &[],
    ),
    def(
        "read:roles",
        "Read role assignments.",
        &[
            "read:roles:users",
            "read:roles:services",
            "read:roles:groups",
        ],
    ),
    def("read:roles:users", "Read user role assignments.", &[]),
    def("read:roles:services", "Read service role assignments.", &[]),
    def("read:roles:groups", "Read group role assignments.", &[]),
    def(
        "users:activity",
        "Update time of last user activity.",
        &["read:users:activity"],
    ),
    def(
        "admin:servers",
        "Read, start, stop, create and delete user servers and their state.",
        &["admin:server_state", "servers"],
    ),
    def(
        "admin:server_state",
        "Read and write users’ server state.",
        &[],
    ),
    def(
        "servers",
        "Start and stop user servers.",
        &["read:servers", "start:servers", "delete:servers"],
    ),
    def(
        "read:servers",
        "Read users’ names and their server models (excluding the server state).",
        &["read:users:name"],
    ),
    def(
        "start:servers",
        "Start and edit users' servers. (added in JupyterHub 6)",
        &[],
    ),
    def("delete:servers", "Stop and delete users' servers.", &[]),
    def(
        "tokens",
        "Read, write, create and delete user tokens.",
        &["read:tokens"],
    ),
    def("read:tokens", "Read user tokens.", &[]),
    def(
        "admin:groups",
        "Read and write group information, create and delete groups.",
        &["groups", "read:roles:groups", "delete:groups"],
    ),
    def(
        "groups",
        "Read and write group information, including adding/removing any users to/from groups. Note: adding users to groups may affect permissions.",
        &["read:groups", "list:groups"],
    ),
    def(
        "list:groups",
        "List groups, including at least their names.",
        &["read:groups:name"],
    ),
    def("read:groups", "Read group models.", &["read:groups:name"]),
    def("read:groups:name", "Read group names.", &[]),
    def("delete:groups", "Delete groups.", &[]),
    def(
        "admin:services",
        "Create, read, update, delete services, not including services defined from config files.",
        &["list:services", "read:services", "read:roles:services"],
    ),
    def(
        "list:services",
        "List services, including at least their names.",
        &["read:services:name"],
    ),
    def(
        "read:services",
        "Read service models.",
        &["read:services:name"],
    ),
    def("read:services:name", "Read service names.", &[]),
    def("read:hub", "Read detailed information about the Hub.", &[]),
    def(
        "access:servers",
        "Access user servers via API or browser.",
        &[],
    ),
    def(
        "access:services",
        "Access services via API or browser.",
        &[],
    ),
    def(
        "users:shares",
        "Read and revoke a user's access to shared servers.",
        &["read:users:shares"],
    ),
    def("read:users:shares", "Read servers shared with a user.", &[]),
    def(
        "groups:shares",
        "Read and revoke a group's access to shared servers.",
        &["read:groups:shares"],
    ),
    def(
        "read:groups:shares",
        "Read servers shared with a group.",
        &[],
    ),
    def(
        "read:shares",
        "Read information about shared access to servers.",
        &[],
    ),
    def(
        "shares",
        "Manage access to shared servers.",
        &[
            "access:servers",
            "read:shares",
            "users:shares",
            "groups:shares",
        ],
    ),
    def(
        "proxy",
        "Read information about the proxy’s routing table, sync the Hub with the proxy and notify the Hub about a new proxy.",
        &[],
    ),
    def("shutdown", "Shutdown the hub.", &[]),
    def("read:metrics", "Read prometheus metrics.", &[]),
];

/// The built-in definition of `name`, if any.
pub fn scope_definition(name: &str) -> Option<&'static ScopeDef> {
    SCOPE_DEFINITIONS.iter().find(|d| d.name == name)
}

/// A scope defined at runtime (`JupyterHub.custom_scopes`); names start with `custom:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomScope {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub subscopes: Vec<String>,
}

/// Custom scopes, like upstream's module-global `scope_definitions` dict they extend.
static CUSTOM_SCOPES: RwLock<BTreeMap<String, CustomScope>> = RwLock::new(BTreeMap::new());

fn custom_scopes() -> std::sync::RwLockReadGuard<'static, BTreeMap<String, CustomScope>> {
    // The map is only ever replaced whole, so a poisoned lock still holds a consistent value.
    CUSTOM_SCOPES.read().unwrap_or_else(|e| e.into_inner())
}

/// Whether `name` is a defined scope, built-in or custom.
pub fn is_defined(name: &str) -> bool {
    scope_definition(name).is_some() || custom_scopes().contains_key(name)
}

/// The direct subscopes of a defined scope (`None` when undefined).
pub(super) fn subscopes_of(name: &str) -> Option<Vec<String>> {
    if let Some(d) = scope_definition(name) {
        return Some(d.subscopes.iter().map(|s| (*s).to_owned()).collect());
    }
    custom_scopes().get(name).map(|c| c.subscopes.clone())
}

/// The description of a defined scope, for the OAuth consent page.
pub fn scope_description(name: &str) -> Option<String> {
    if let Some(d) = scope_definition(name) {
        return Some(d.description.to_owned());
    }
    custom_scopes().get(name).map(|c| c.description.clone())
}

const CUSTOM_SCOPE_RULES: &str = "Custom scopes must start with `custom:` and contain only lowercase ascii letters, numbers, hyphen, underscore, colon, and asterisk (-_:*). The part after `custom:` must start with a letter or number. Scopes may not end with a hyphen or colon.";

/// Upstream's `^custom:[a-z0-9][a-z0-9_\-\*:]+[a-z0-9_\*]$`.
fn is_custom_scope_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("custom:") else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() < 3 {
        return false;
    }
    let first = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let middle = |c: u8| first(c) || matches!(c, b'_' | b'-' | b'*' | b':');
    let last = |c: u8| first(c) || matches!(c, b'_' | b'*');
    first(b[0]) && b[1..b.len() - 1].iter().all(|&c| middle(c)) && last(b[b.len() - 1])
}

/// Register custom scopes (upstream `define_custom_scopes`). All or nothing: on error no scope
/// of the batch is defined. Subscopes must be custom scopes of the same batch or defined earlier.
pub fn define_custom_scopes(scopes: &[CustomScope]) -> Result<(), Error> {
    let mut registry = CUSTOM_SCOPES.write().unwrap_or_else(|e| e.into_inner());
    *registry = with_custom_scopes(&registry, scopes)?;
    Ok(())
}

/// Whether `define_custom_scopes` would accept `scopes` in a process that has none yet, for
/// checking a config without defining anything.
pub fn check_custom_scopes(scopes: &[CustomScope]) -> Result<(), Error> {
    with_custom_scopes(&BTreeMap::new(), scopes).map(drop)
}

/// `registry` with `scopes` added, or why they cannot be.
fn with_custom_scopes(
    registry: &BTreeMap<String, CustomScope>,
    scopes: &[CustomScope],
) -> Result<BTreeMap<String, CustomScope>, Error> {
    let mut next = registry.clone();
    for scope in scopes {
        let bad = |msg: String| Err(Error::InvalidCustomScope(msg));
        if scope_definition(&scope.name).is_some() {
            return bad(format!(
                "Cannot redefine scope {}. It is a built-in scope.",
                scope.name
            ));
        }
        if let Some(old) = registry.get(&scope.name)
            && old != scope
        {
            return bad(format!(
                "Cannot redefine scope {}={:?}. Already have {}={:?}",
                scope.name, scope, scope.name, old
            ));
        }
        if !is_custom_scope_name(&scope.name) {
            return bad(format!(
                "Invalid scope name: {:?}.\n{CUSTOM_SCOPE_RULES}",
                scope.name
            ));
        }
        if scope.description.is_empty() {
            return bad(format!("scope {} missing key 'description'", scope.name));
        }
        next.insert(scope.name.clone(), scope.clone());
    }
    for scope in scopes {
        for sub in &scope.subscopes {
            if scope_definition(sub).is_some() {
                return Err(Error::InvalidCustomScope(format!(
                    "non-custom subscope {sub} in {} is not allowed. Custom scopes may only have custom subscopes. Roles should be used to assign multiple scopes together.",
                    scope.name
                )));
            }
            if !next.contains_key(sub) {
                return Err(Error::InvalidCustomScope(format!(
                    "subscope {sub} in {} not found. All scopes must be defined.",
                    scope.name
                )));
            }
        }
    }
    Ok(next)
}

/// A role: a named set of raw scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn role(name: &str, description: &str, scopes: &[&str]) -> RoleDef {
    RoleDef {
        name: name.to_owned(),
        description: description.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Upstream `roles.get_default_roles()`: `user`, `admin`, `server`, `token`.
pub fn default_roles() -> Vec<RoleDef> {
    vec![
        role("user", "Standard user privileges", &["self"]),
        role(
            "admin",
            "Elevated privileges (can do anything)",
            &[
                "admin-ui",
                "admin:users",
                "admin:servers",
                "admin:services",
                "tokens",
                "admin:groups",
                "list:services",
                "read:services",
                "read:hub",
                "proxy",
                "shutdown",
                "access:services",
                "access:servers",
                "read:roles",
                "read:metrics",
                "shares",
            ],
        ),
        role(
            "server",
            "Post activity only",
            &["users:activity!user", "access:servers!server"],
        ),
        role(
            "token",
            "Token with same permissions as its owner",
            &["inherit"],
        ),
    ]
}

/// Look a role up by name (`Role {name} does not exist` otherwise).
pub fn find_role<'r>(roles: &'r [RoleDef], name: &str) -> Result<&'r RoleDef, Error> {
    roles
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::UnknownRole(name.to_owned()))
}

/// Upstream `roles_to_scopes`: the union of the roles' raw scopes, sorted.
pub fn roles_to_scopes<'r>(roles: impl IntoIterator<Item = &'r RoleDef>) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = roles
        .into_iter()
        .flat_map(|r| r.scopes.iter().map(String::as_str))
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

/// Upstream `_validate_role_name`: `^[a-z][a-z0-9\-_~\.]{1,253}[a-z0-9]$`.
pub fn validate_role_name(name: &str) -> Result<(), Error> {
    let b = name.as_bytes();
    let ok = (3..=255).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..b.len() - 1].iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'~' | b'.')
        })
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRoleName(name.to_owned()))
    }
}
