//! Scopes, roles and filters as JupyterHub 2+ defines them (upstream `scopes.py`, `roles.py`).
//! Pure logic: the hub supplies owners, raw scopes and group membership; this module validates,
//! expands, intersects and checks. Invariant: a `Scopes` is always reduced (an unfiltered scope
//! absorbs every filtered form of its base) and holds only well-formed filters.

mod definitions;

pub use definitions::{
    CustomScope, RoleDef, SCOPE_DEFINITIONS, ScopeDef, check_custom_scopes, default_roles,
    define_custom_scopes, find_role, is_defined, roles_to_scopes, scope_definition,
    scope_description, validate_role_name,
};

use std::collections::{BTreeMap, BTreeSet};

/// Errors of scope and role handling; messages follow upstream's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The scope string (with its filter, if any) whose base is not defined.
    #[error("{}", unknown_scope_message(.0))]
    UnknownScope(String),
    #[error("Role {0} does not exist")]
    UnknownRole(String),
    /// The whole scope string whose filter is malformed.
    #[error("{}", bad_filter_message(.0))]
    BadFilter(String),
    #[error("{0}")]
    InvalidCustomScope(String),
    #[error(
        "Invalid role name: {0:?}. Role names must:\n - be 3-255 characters\n - contain only lowercase ascii letters, numbers, and URL unreserved special characters '-.~_'\n - start with a letter\n - end with letter or number\n"
    )]
    InvalidRoleName(String),
}

fn unknown_scope_message(scope: &str) -> String {
    if split(scope).0 == "all" {
        "Draft scope 'all' is now called 'inherit'".to_owned()
    } else {
        format!("Scope '{scope}' does not exist")
    }
}

fn bad_filter_message(scope: &str) -> String {
    let filter = split(scope).1;
    if filter.is_empty() || filter.ends_with('=') {
        format!("Empty string is not a valid filter: {scope}")
    } else {
        format!("Scope filter {filter} '!{filter}' in scope '{scope}' does not exist")
    }
}

/// `base!filter` → (`base`, `filter`); `filter` is empty without `!`.
fn split(scope: &str) -> (&str, &str) {
    scope.split_once('!').unwrap_or((scope, ""))
}

/// Who holds scopes; resolves `self` and bare `!user` / `!service` filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    User { name: &'a str },
    Service { name: &'a str },
}

/// The OAuth client that issued a token; resolves bare `!server` / `!service` filters and
/// gives the token its access scope. Tokens of the `jupyterhub` client pass `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client<'a> {
    /// The OAuth client of a user's server (`jupyterhub-user-alice`, `…-alice-nb1`).
    Spawner {
        user: &'a str,
        server: &'a str,
    },
    Service {
        name: &'a str,
    },
}

/// Group membership of users, to resolve `!group=` filters against `!user=`/`!server=` ones
/// (upstream's `db` argument). Closures `|user: &str| -> Vec<String>` implement it.
pub trait Membership {
    fn groups_of(&self, user: &str) -> Vec<String>;
}

impl<F: Fn(&str) -> Vec<String>> Membership for F {
    fn groups_of(&self, user: &str) -> Vec<String> {
        self(user)
    }
}

/// No membership information: like upstream without a db, `!group=` never meets `!user=`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGroups;

impl Membership for NoGroups {
    fn groups_of(&self, _user: &str) -> Vec<String> {
        Vec::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    User,
    Server,
    Group,
    Service,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "user" => Some(Kind::User),
            "server" => Some(Kind::Server),
            "group" => Some(Kind::Group),
            "service" => Some(Kind::Service),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Server => "server",
            Kind::Group => "group",
            Kind::Service => "service",
        }
    }
}

type FilterMap = BTreeMap<Kind, BTreeSet<String>>;

/// Upstream's parsed form of one base scope: `Scope.ALL` or `{entity: {names}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    All,
    Filtered(FilterMap),
}

type Parsed = BTreeMap<String, Held>;

/// One filter of a held scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    User(String),
    /// `!server=user/server`; the default server has `server == ""`.
    Server {
        user: String,
        server: String,
    },
    Group(String),
    Service(String),
}

/// How a base scope is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filters {
    All,
    Some(Vec<Filter>),
}

/// What a scope is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Hub-wide actions (`read:hub`, `proxy`, listing without a target): need the unfiltered scope.
    Hub,
    /// A user; `groups` are the user's groups.
    User {
        name: &'a str,
        groups: &'a [String],
    },
    /// A server of `user` (`""` = default server); `groups` are the owning user's groups.
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

/// A fully expanded, reduced scope set, e.g. `{"read:users!user=alice", "access:servers!server=alice/"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    /// The expanded strings, kept alongside `parsed` so `iter` can lend `&str`.
    set: BTreeSet<String>,
    parsed: Parsed,
}

impl Scopes {
    /// Parse already expanded scopes (e.g. stored share scopes); reduces them.
    /// Upstream `parse_scopes` + `unparse_scopes`.
    pub fn parse<S: AsRef<str>>(expanded: impl IntoIterator<Item = S>) -> Result<Scopes, Error> {
        let mut parsed = Parsed::new();
        for scope in expanded {
            let scope = scope.as_ref();
            let (base, filter) = split(scope);
            if filter.is_empty() {
                parsed.insert(base.to_owned(), Held::All);
                continue;
            }
            let (kind, value) = filter
                .split_once('=')
                .ok_or_else(|| Error::BadFilter(scope.to_owned()))?;
            let kind = Kind::parse(kind).ok_or_else(|| Error::BadFilter(scope.to_owned()))?;
            if value.is_empty() {
                return Err(Error::BadFilter(scope.to_owned()));
            }
            let held = parsed
                .entry(base.to_owned())
                .or_insert_with(|| Held::Filtered(FilterMap::new()));
            if let Held::Filtered(map) = held {
                map.entry(kind).or_default().insert(value.to_owned());
            }
        }
        Ok(Scopes::from_parsed(parsed))
    }

    /// Normalise (drop empty filter sets) and render the strings (upstream `unparse_scopes`).
    fn from_parsed(mut parsed: Parsed) -> Scopes {
        parsed.retain(|_, held| match held {
            Held::All => true,
            Held::Filtered(map) => {
                map.retain(|_, names| !names.is_empty());
                !map.is_empty()
            }
        });
        let mut set = BTreeSet::new();
        for (base, held) in &parsed {
            match held {
                Held::All => {
                    set.insert(base.clone());
                }
                Held::Filtered(map) => {
                    for (kind, names) in map {
                        for name in names {
                            set.insert(format!("{base}!{}={name}", kind.as_str()));
                        }
                    }
                }
            }
        }
        Scopes { set, parsed }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(String::as_str)
    }

    pub fn sorted(&self) -> Vec<String> {
        self.set.iter().cloned().collect()
    }

    /// Upstream's `parsed_scopes` as templates see it: each base scope held, to `"*"` when
    /// held unfiltered or to its filters (`{"user": ["alice"]}`), so `'admin-ui' in
    /// parsed_scopes` reads as it does in JupyterHub's templates.
    pub fn parsed_json(&self) -> serde_json::Value {
        let object = self
            .parsed
            .iter()
            .map(|(base, held)| {
                let value = match held {
                    Held::All => serde_json::Value::from("*"),
                    Held::Filtered(map) => map
                        .iter()
                        .map(|(kind, names)| (kind.as_str().to_owned(), serde_json::json!(names)))
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                };
                (base.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>();
        object.into()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether exactly this expanded string is present (after reduction).
    pub fn contains_exact(&self, s: &str) -> bool {
        self.set.contains(s)
    }

    /// Filters held for a base scope: `None` = not held; `Some(Filters::All)` = unfiltered.
    pub fn filters(&self, base: &str) -> Option<Filters> {
        match self.parsed.get(base)? {
            Held::All => Some(Filters::All),
            Held::Filtered(map) => {
                let mut out = Vec::new();
                for (kind, names) in map {
                    for name in names {
                        out.push(match kind {
                            Kind::User => Filter::User(name.clone()),
                            Kind::Server => {
                                let (user, server) = name.split_once('/').unwrap_or((name, ""));
                                Filter::Server {
                                    user: user.to_owned(),
                                    server: server.to_owned(),
                                }
                            }
                            Kind::Group => Filter::Group(name.clone()),
                            Kind::Service => Filter::Service(name.clone()),
                        });
                    }
                }
                Some(Filters::Some(out))
            }
        }
    }

    /// Whether any form of `base` is held (upstream's `post_filter`, and 404-vs-403 choice).
    pub fn has(&self, base: &str) -> bool {
        self.parsed.contains_key(base)
    }

    /// Whether `base` is allowed on `resource` (upstream `has_scope` / `check_scope_filter`):
    /// `!server=u/s` covers that server, `!user=u` covers u and u's servers, `!group=g` covers
    /// members of g and their servers.
    pub fn allows(&self, base: &str, resource: &Resource<'_>) -> bool {
        let map = match self.parsed.get(base) {
            None => return false,
            Some(Held::All) => return true,
            Some(Held::Filtered(map)) => map,
        };
        let holds = |kind: Kind, name: &str| map.get(&kind).is_some_and(|s| s.contains(name));
        let in_groups = |groups: &[String]| groups.iter().any(|g| holds(Kind::Group, g.as_str()));
        match *resource {
            Resource::Hub => false,
            Resource::User { name, groups } => holds(Kind::User, name) || in_groups(groups),
            Resource::Server {
                user,
                server,
                groups,
            } => {
                holds(Kind::Server, &format!("{user}/{server}"))
                    || holds(Kind::User, user)
                    || in_groups(groups)
            }
            Resource::Group { name } => holds(Kind::Group, name),
            Resource::Service { name } => holds(Kind::Service, name),
        }
    }

    /// Union of two scope sets (reduced).
    pub fn union(&self, other: &Scopes) -> Scopes {
        let mut parsed = self.parsed.clone();
        for (base, held) in &other.parsed {
            match (parsed.get_mut(base), held) {
                (None, _) => {
                    parsed.insert(base.clone(), held.clone());
                }
                (Some(mine), Held::All) => *mine = Held::All,
                (Some(Held::All), _) => {}
                (Some(Held::Filtered(mine)), Held::Filtered(theirs)) => {
                    for (kind, names) in theirs {
                        mine.entry(*kind).or_default().extend(names.iter().cloned());
                    }
                }
            }
        }
        Scopes::from_parsed(parsed)
    }

    fn without_base(&self, base: &str) -> Scopes {
        let mut parsed = self.parsed.clone();
        parsed.remove(base);
        Scopes::from_parsed(parsed)
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a String;
    type IntoIter = std::collections::btree_set::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.set.iter()
    }
}

const FILTER_PREFIXES: &[&str] = &["!user=", "!service=", "!group=", "!server="];
const EXACT_FILTERS: &[&str] = &["!user", "!service", "!server"];

/// Validate raw scopes (from roles or token requests): defined names and well-formed filters.
/// Upstream `_check_scopes_exist`, plus the empty-value check `parse_scopes` would raise later.
pub fn validate(raw: &[String]) -> Result<(), Error> {
    validate_with(raw, &[])
}

/// `validate`, with `custom` counted as defined too (a config's scopes, checked before
/// they are defined).
pub fn validate_with(raw: &[String], custom: &[CustomScope]) -> Result<(), Error> {
    for scope in raw {
        let base = split(scope).0;
        if !is_defined(base) && !custom.iter().any(|c| c.name == base) {
            return Err(Error::UnknownScope(scope.clone()));
        }
        if scope.contains('!') {
            let full = &scope[base.len()..];
            let prefixed = FILTER_PREFIXES
                .iter()
                .any(|p| full.starts_with(p) && full.len() > p.len());
            if !EXACT_FILTERS.contains(&full) && !prefixed {
                return Err(Error::BadFilter(scope.clone()));
            }
        }
    }
    Ok(())
}

/// A scope and all its subscopes, the filter re-applied to each (upstream `_expand_scope`).
/// A `!server…` filter is not applied to `read:users*` subscopes (they are dropped), since a
/// server filter makes no sense on user fields.
fn expand_scope(scope: &str) -> BTreeSet<String> {
    let (name, filter) = split(scope);
    let mut names = BTreeSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(n) = stack.pop() {
        if names.insert(n.clone()) {
            // Custom scopes may form cycles; the visited set stops them.
            stack.extend(definitions::subscopes_of(&n).unwrap_or_default());
        }
    }
    if filter.is_empty() {
        return names;
    }
    names
        .into_iter()
        .filter(|n| !(filter.starts_with("server") && n.starts_with("read:user")))
        .map(|n| format!("{n}!{filter}"))
        .collect()
}

/// The standard user privileges behind `self` (upstream `_expand_self_scope`, 6.x).
fn expand_self(username: &str) -> BTreeSet<String> {
    [
        "read:users",
        "users:shares",
        "read:shares",
        "users:activity",
        "servers",
        "tokens",
        "access:servers",
    ]
    .iter()
    .flat_map(|s| expand_scope(s))
    .map(|s| format!("{s}!user={username}"))
    .collect()
}

/// Expand raw scopes (from roles: `self`, `inherit`, subscopes, bare filters) for an owner.
pub fn expand(raw: &[String], owner: &Owner<'_>) -> Result<Scopes, Error> {
    expand_for(raw, Some(owner), None)
}

/// Upstream `expand_scopes(scopes, owner, oauth_client)`. Bare `!user` resolves to the owning
/// user, `!service` to the owning service or the client's service, `!server` to the client's
/// server; a bare filter with nothing to resolve to is dropped, as is `self` for a non-user.
/// `inherit` and `(no_scope)` stay in the result as plain scopes, as upstream.
pub fn expand_for(
    raw: &[String],
    owner: Option<&Owner<'_>>,
    client: Option<&Client<'_>>,
) -> Result<Scopes, Error> {
    validate(raw)?;
    let mut expanded: BTreeSet<String> = raw.iter().flat_map(|s| expand_scope(s)).collect();

    let mut user_filter = None;
    let mut service_filter = None;
    let mut server_filter = None;
    let mut user_name = None;
    match owner {
        Some(Owner::User { name }) => {
            user_name = Some(*name);
            user_filter = Some(format!("user={name}"));
        }
        Some(Owner::Service { name }) => service_filter = Some(format!("service={name}")),
        None => {}
    }
    match client {
        Some(Client::Service { name }) => service_filter = Some(format!("service={name}")),
        Some(Client::Spawner { user, server }) => {
            server_filter = Some(format!("server={user}/{server}"));
        }
        None => {}
    }

    let bare: Vec<String> = expanded
        .iter()
        .filter(|s| matches!(split(s).1, "user" | "service" | "server"))
        .cloned()
        .collect();
    for scope in bare {
        expanded.remove(&scope);
        let (base, filter) = split(&scope);
        let replacement = match filter {
            "user" => &user_filter,
            "service" => &service_filter,
            _ => &server_filter,
        };
        if let Some(replacement) = replacement {
            expanded.insert(format!("{base}!{replacement}"));
        }
    }

    if expanded.remove("self")
        && let Some(name) = user_name
    {
        expanded.extend(expand_self(name));
    }
    Scopes::parse(expanded)
}

/// Upstream `_intersect_expanded_scopes`, exactly: per base, ALL ∩ X = X; otherwise filters are
/// intersected per entity, then servers under a user (or, with membership, a group) of the
/// other side and users in a group of the other side are added. No `inherit` shortcut.
pub fn intersect_expanded(a: &Scopes, b: &Scopes, groups: &impl Membership) -> Scopes {
    let mut out = Parsed::new();
    let mut group_cache: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut groups_of = |user: &str| -> BTreeSet<String> {
        group_cache
            .entry(user.to_owned())
            .or_insert_with(|| groups.groups_of(user).into_iter().collect())
            .clone()
    };
    for (base, held_a) in &a.parsed {
        let Some(held_b) = b.parsed.get(base) else {
            continue;
        };
        let (fa, fb) = match (held_a, held_b) {
            (Held::All, other) | (other, Held::All) => {
                out.insert(base.clone(), other.clone());
                continue;
            }
            (Held::Filtered(fa), Held::Filtered(fb)) => (fa, fb),
        };
        let mut common: FilterMap = fa
            .iter()
            .filter_map(|(kind, names)| {
                let other = fb.get(kind)?;
                Some((*kind, names.intersection(other).cloned().collect()))
            })
            .collect();
        let initial_servers = common.get(&Kind::Server).cloned().unwrap_or_default();
        let initial_users = common.get(&Kind::User).cloned().unwrap_or_default();
        let mut common_servers = initial_servers.clone();
        let mut common_users = initial_users.clone();

        for (x, y) in [(fa, fb), (fb, fa)] {
            if let Some(x_servers) = x.get(&Kind::Server)
                && y.get(&Kind::Server) != Some(x_servers)
            {
                let mut servers: BTreeSet<String> =
                    x_servers.difference(&common_servers).cloned().collect();
                if let Some(y_users) = y.get(&Kind::User) {
                    for server in &servers {
                        let user = server.split_once('/').map_or(server.as_str(), |p| p.0);
                        if y_users.contains(user) {
                            common_servers.insert(server.clone());
                        }
                    }
                }
                servers.retain(|s| !common_servers.contains(s));
                if let Some(y_groups) = y.get(&Kind::Group) {
                    for server in servers {
                        let user = server.split_once('/').map_or(server.as_str(), |p| p.0);
                        if !groups_of(user).is_disjoint(y_groups) {
                            common_servers.insert(server);
                        }
                    }
                }
            }
            if let (Some(x_users), Some(y_groups)) = (x.get(&Kind::User), y.get(&Kind::Group))
                && y.get(&Kind::User) != Some(x_users)
            {
                let users: Vec<String> = x_users.difference(&common_users).cloned().collect();
                for user in users {
                    if !groups_of(&user).is_disjoint(y_groups) {
                        common_users.insert(user);
                    }
                }
            }
        }
        if !common_servers.is_empty() && common_servers != initial_servers {
            common.insert(Kind::Server, common_servers);
        }
        if !common_users.is_empty() && common_users != initial_users {
            common.insert(Kind::User, common_users);
        }
        out.insert(base.clone(), Held::Filtered(common));
    }
    Scopes::from_parsed(out)
}

/// Scopes of a token from its expanded scopes and its owner's: `intersect_expanded`, except
/// that a token holding `inherit` gets exactly the owner's scopes (upstream `get_scopes_for`).
pub fn intersect(token: &Scopes, owner: &Scopes, groups: &impl Membership) -> Scopes {
    if token.has("inherit") {
        return owner.clone();
    }
    intersect_expanded(token, owner, groups)
}

/// Requested token scopes the owner does not hold (upstream `_check_token_scopes`); empty
/// means the token may be created. The API answers 400 `Not assigning requested scopes
/// {excess joined by ','} not held by User alice` otherwise.
pub fn excess(requested: &Scopes, owner: &Scopes, groups: &impl Membership) -> Vec<String> {
    let requested = requested.without_base("inherit");
    let held = intersect_expanded(&requested, owner, groups);
    requested
        .iter()
        .filter(|s| !held.contains_exact(s))
        .map(str::to_owned)
        .collect()
}

/// The effective scopes of an API token (upstream `get_scopes_for(APIToken)`): `inherit` gives
/// the owner's scopes; otherwise the expanded token scopes plus the client's access scope and
/// the owner's identify scopes, intersected with the owner's. `client` is `None` for the
/// `jupyterhub` client.
pub fn token_scopes(
    raw_token: &[String],
    owner: &Owner<'_>,
    client: Option<&Client<'_>>,
    owner_scopes: &Scopes,
    groups: &impl Membership,
) -> Result<Scopes, Error> {
    if raw_token.iter().any(|s| s == "inherit") {
        return Ok(owner_scopes.clone());
    }
    let mut token = expand_for(raw_token, Some(owner), client)?;
    let mut extra = identify_scopes_for(owner);
    if let Some(client) = client {
        extra.extend(access_scopes(client));
    }
    token = token.union(&Scopes::parse(extra)?);
    Ok(intersect_expanded(&token, owner_scopes, groups))
}

/// Resolve raw requested scopes against raw held scopes (upstream `_resolve_requested_scopes`,
/// used for server tokens and OAuth tokens). Returns (allowed, disallowed), both sorted: a
/// requested scope fully inside the held ones is kept as written (e.g. `!server` under held
/// `!user`); a partly held one contributes the held part in expanded form and stays disallowed.
pub fn resolve_requested(
    requested: &[String],
    have: &[String],
    owner: &Owner<'_>,
    client: Option<&Client<'_>>,
    groups: &impl Membership,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let requested: BTreeSet<String> = requested.iter().cloned().collect();
    let have_set: BTreeSet<String> = have.iter().cloned().collect();
    let mut allowed: BTreeSet<String> = requested.intersection(&have_set).cloned().collect();
    let mut disallowed: BTreeSet<String> = requested.difference(&have_set).cloned().collect();
    if disallowed.is_empty() {
        return Ok((allowed.into_iter().collect(), Vec::new()));
    }
    let as_vec = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
    let mut expanded_allowed = expand_for(&as_vec(&allowed), Some(owner), client)?;
    let expanded_have = expand_for(have, Some(owner), client)?;
    for scope in disallowed.clone() {
        let expanded = expand_for(std::slice::from_ref(&scope), Some(owner), client)?;
        let remaining: Vec<&str> = expanded
            .iter()
            .filter(|s| !expanded_allowed.contains_exact(s))
            .collect();
        let remaining = Scopes::parse(remaining)?;
        let granted = if remaining.is_empty() {
            Scopes::default()
        } else {
            intersect_expanded(&remaining, &expanded_have, groups)
        };
        if granted == remaining {
            allowed.insert(scope.clone());
            disallowed.remove(&scope);
            expanded_allowed = expand_for(&as_vec(&allowed), Some(owner), client)?;
        } else if !granted.is_empty() {
            allowed.extend(granted.iter().map(str::to_owned));
            expanded_allowed = expand_for(&as_vec(&allowed), Some(owner), client)?;
        }
    }
    Ok((
        allowed.into_iter().collect(),
        disallowed.into_iter().collect(),
    ))
}

/// The raw scopes to request for a server's `JUPYTERHUB_API_TOKEN` (upstream `User.spawn`):
/// `requested` (`Spawner.server_token_scopes`; empty = the `server` role), bare `!server`
/// resolved to `user/server`, and `users:activity!user` added when no activity scope is there.
/// Resolve the result with `resolve_requested` against the user's raw scopes plus `inherit`.
pub fn server_token_request(requested: &[String], user: &str, server: &str) -> Vec<String> {
    let requested: Vec<String> = if requested.is_empty() {
        definitions::default_roles()
            .into_iter()
            .find(|r| r.name == "server")
            .map(|r| r.scopes)
            .unwrap_or_default()
    } else {
        requested.to_vec()
    };
    let mut out: BTreeSet<String> = requested
        .into_iter()
        .map(|s| {
            if s.ends_with("!server") {
                format!("{s}={user}/{server}")
            } else {
                s
            }
        })
        .collect();
    const ACTIVITY: &str = "users:activity!user";
    if ![ACTIVITY, "users:activity", "inherit"]
        .iter()
        .any(|s| out.contains(*s))
    {
        out.insert(ACTIVITY.to_owned());
    }
    out.into_iter().collect()
}

/// Raw scopes of a server token with the default `server` role (contract §3.6):
/// `["access:servers!server=alice/nb", "users:activity!user"]`.
pub fn server_token_scopes(user: &str, server: &str) -> Vec<String> {
    server_token_request(&[], user, server)
}

/// Upstream `access_scopes`: what an OAuth client's own resource requires.
pub fn access_scopes(client: &Client<'_>) -> Vec<String> {
    match client {
        Client::Spawner { user, server } => access_scopes_for_server(user, server),
        Client::Service { name } => access_scopes_for_service(name),
    }
}

/// `access:servers!server=user/server` (the default server is `user/`).
pub fn access_scopes_for_server(user: &str, server: &str) -> Vec<String> {
    vec![format!("access:servers!server={user}/{server}")]
}

/// `access:services!service=name`.
pub fn access_scopes_for_service(name: &str) -> Vec<String> {
    vec![format!("access:services!service={name}")]
}

/// Upstream `identify_scopes(user)`: name and groups of that user.
pub fn identify_scopes(user: &str) -> Vec<String> {
    vec![
        format!("read:users:groups!user={user}"),
        format!("read:users:name!user={user}"),
    ]
}

/// Upstream `identify_scopes(obj)` for either kind of owner.
pub fn identify_scopes_for(owner: &Owner<'_>) -> Vec<String> {
    match owner {
        Owner::User { name } => identify_scopes(name),
        Owner::Service { name } => vec![format!("read:services:name!service={name}")],
    }
}

#[cfg(test)]
mod tests;
