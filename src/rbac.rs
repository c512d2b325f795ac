//! Scopes, roles and filters as JupyterHub 2+ defines them. Interim version with the final
//! API; the complete scope table and expansion rules replace it.

use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown scope: {0}")]
    UnknownScope(String),
    #[error("unknown role: {0}")]
    UnknownRole(String),
    #[error("bad scope filter: {0}")]
    BadFilter(String),
}

pub struct RoleDef {
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
}

pub fn default_roles() -> Vec<RoleDef> {
    let role = |name: &str, description: &str, scopes: &[&str]| RoleDef {
        name: name.into(),
        description: description.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        role("user", "Standard user privileges", &["self"]),
        role("admin", "Elevated privileges (can do anything)", &["all"]),
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

pub fn validate(_raw: &[String]) -> Result<(), Error> {
    Ok(())
}

pub enum Owner<'a> {
    User { name: &'a str },
    Service { name: &'a str },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scopes(BTreeSet<String>);

pub enum Filters {
    All,
    Some(Vec<Filter>),
}

pub enum Filter {
    User(String),
    Server { user: String, server: String },
    Group(String),
    Service(String),
}

pub enum Resource<'a> {
    Hub,
    User {
        name: &'a str,
        groups: &'a [String],
    },
    Server {
        user: &'a str,
        server: &'a str,
        groups: &'a [String],
    },
    Group {
        name: &'a str,
    },
    Service {
        name: &'a str,
    },
}

impl Scopes {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    pub fn sorted(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
    pub fn contains_exact(&self, s: &str) -> bool {
        self.0.contains(s)
    }
    pub fn filters(&self, base: &str) -> Option<Filters> {
        if self.0.contains(base) || self.0.contains("all") {
            return Some(Filters::All);
        }
        let prefix = format!("{base}!");
        let list: Vec<Filter> = self
            .0
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix))
            .filter_map(|f| {
                let (kind, value) = f.split_once('=')?;
                Some(match kind {
                    "user" => Filter::User(value.into()),
                    "group" => Filter::Group(value.into()),
                    "service" => Filter::Service(value.into()),
                    "server" => {
                        let (user, server) = value.split_once('/')?;
                        Filter::Server {
                            user: user.into(),
                            server: server.into(),
                        }
                    }
                    _ => return None,
                })
            })
            .collect();
        (!list.is_empty()).then_some(Filters::Some(list))
    }
    pub fn has(&self, base: &str) -> bool {
        self.filters(base).is_some()
    }
    pub fn allows(&self, base: &str, resource: &Resource<'_>) -> bool {
        match self.filters(base) {
            None => false,
            Some(Filters::All) => true,
            Some(Filters::Some(list)) => list.iter().any(|f| match (f, resource) {
                (Filter::User(u), Resource::User { name, .. }) => u == name,
                (Filter::User(u), Resource::Server { user, .. }) => u == user,
                (Filter::Server { user: u, server: s }, Resource::Server { user, server, .. }) => {
                    u == user && s == server
                }
                (
                    Filter::Group(g),
                    Resource::User { groups, .. } | Resource::Server { groups, .. },
                ) => groups.contains(g),
                (Filter::Group(g), Resource::Group { name }) => g == name,
                (Filter::Service(s), Resource::Service { name }) => s == name,
                _ => false,
            }),
        }
    }
}

pub fn expand(raw: &[String], owner: &Owner<'_>) -> Result<Scopes, Error> {
    let mut set = BTreeSet::new();
    for scope in raw {
        match (scope.as_str(), owner) {
            ("self", Owner::User { name }) => {
                for base in [
                    "read:users",
                    "users:activity",
                    "servers",
                    "tokens",
                    "access:servers",
                    "read:users:name",
                    "read:users:groups",
                ] {
                    set.insert(format!("{base}!user={name}"));
                }
            }
            (s, Owner::User { name }) if s.ends_with("!user") => {
                set.insert(format!("{s}={name}"));
            }
            (s, Owner::User { name }) if s.ends_with("!server") => {
                set.insert(format!("{s}={name}/"));
            }
            (s, _) => {
                set.insert(s.to_owned());
            }
        }
    }
    Ok(Scopes(set))
}

pub fn intersect(token: &Scopes, owner: &Scopes, _owner_groups: &[String]) -> Scopes {
    if token.0.contains("inherit") {
        return owner.clone();
    }
    Scopes(token.0.intersection(&owner.0).cloned().collect())
}

pub fn excess(requested: &Scopes, owner: &Scopes, _owner_groups: &[String]) -> Vec<String> {
    if owner.0.contains("all") {
        return Vec::new();
    }
    requested
        .0
        .difference(&owner.0)
        .filter(|s| *s != "inherit")
        .cloned()
        .collect()
}

pub fn server_token_scopes(user: &str, server: &str) -> Vec<String> {
    vec![
        format!("access:servers!server={user}/{server}"),
        format!("read:users:activity!user={user}"),
        format!("read:users:groups!user={user}"),
        format!("read:users:name!user={user}"),
        format!("users:activity!user={user}"),
    ]
}

pub fn access_scopes_for_server(user: &str, server: &str) -> Vec<String> {
    vec![
        format!("access:servers!server={user}/{server}"),
        format!("access:servers!user={user}"),
    ]
}

pub fn access_scopes_for_service(name: &str) -> Vec<String> {
    vec![
        "access:services".into(),
        format!("access:services!service={name}"),
    ]
}

pub fn identify_scopes(user: &str) -> Vec<String> {
    vec![
        format!("read:users:name!user={user}"),
        format!("read:users:groups!user={user}"),
    ]
}
