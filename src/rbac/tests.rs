//! Table-driven tests of scope expansion, intersection and checks, mostly ported from
//! upstream `jupyterhub/tests/test_scopes.py` (cited per table).

#![allow(
    clippy::type_complexity,
    reason = "test tables are tuples of string-slice lists"
)]

use super::*;
use std::collections::BTreeMap;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn set(v: &[&str]) -> Scopes {
    Scopes::parse(v).expect("well-formed test scopes")
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v = strs(v);
    v.sort();
    v.dedup();
    v
}

/// Membership from a `{group: [users]}` table, like the upstream tests' db fixtures.
fn members(groups: &[(&str, &[&str])]) -> impl Fn(&str) -> Vec<String> {
    let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, users) in groups {
        for user in *users {
            by_user
                .entry((*user).to_owned())
                .or_default()
                .push((*group).to_owned());
        }
    }
    move |user: &str| by_user.get(user).cloned().unwrap_or_default()
}

const ALICE: Owner<'static> = Owner::User { name: "alice" };

#[test]
fn scope_table_is_closed_and_complete() {
    for def in SCOPE_DEFINITIONS {
        for sub in def.subscopes {
            assert!(scope_definition(sub).is_some(), "{} -> {sub}", def.name);
        }
    }
    // The brief's list, which is upstream's 6.x table.
    for name in [
        "(no_scope)",
        "self",
        "inherit",
        "admin-ui",
        "admin:users",
        "admin:auth_state",
        "users",
        "delete:users",
        "list:users",
        "read:users",
        "read:users:name",
        "read:users:groups",
        "read:users:activity",
        "read:roles",
        "read:roles:users",
        "read:roles:services",
        "read:roles:groups",
        "users:activity",
        "admin:servers",
        "admin:server_state",
        "servers",
        "read:servers",
        "start:servers",
        "delete:servers",
        "tokens",
        "read:tokens",
        "admin:groups",
        "groups",
        "list:groups",
        "read:groups",
        "read:groups:name",
        "delete:groups",
        "admin:services",
        "list:services",
        "read:services",
        "read:services:name",
        "read:hub",
        "access:servers",
        "access:services",
        "users:shares",
        "read:users:shares",
        "groups:shares",
        "read:groups:shares",
        "read:shares",
        "shares",
        "proxy",
        "shutdown",
        "read:metrics",
    ] {
        assert!(scope_definition(name).is_some(), "{name}");
    }
    assert_eq!(SCOPE_DEFINITIONS.len(), 48);
}

#[test]
fn default_roles_match_upstream() {
    // Upstream: jupyterhub/roles.py::get_default_roles
    let roles = default_roles();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["user", "admin", "server", "token"]);
    assert_eq!(roles[0].scopes, strs(&["self"]));
    assert_eq!(roles[1].scopes.len(), 16);
    assert_eq!(roles[1].scopes[0], "admin-ui");
    assert_eq!(roles[1].scopes[15], "shares");
    assert_eq!(
        roles[2].scopes,
        strs(&["users:activity!user", "access:servers!server"])
    );
    assert_eq!(roles[3].scopes, strs(&["inherit"]));
    assert_eq!(
        roles[1].description,
        "Elevated privileges (can do anything)"
    );
    for r in &roles {
        validate(&r.scopes).expect("default roles are valid");
        validate_role_name(&r.name).expect("default role names are valid");
    }
    assert_eq!(
        find_role(&roles, "nope").map_err(|e| e.to_string()),
        Err("Role nope does not exist".to_owned())
    );
}

#[test]
fn validate_table() {
    // Upstream: jupyterhub/scopes.py::_check_scopes_exist
    let cases: &[(&str, Result<(), &str>)] = &[
        ("read:users", Ok(())),
        ("read:users!user=alice", Ok(())),
        ("read:users!user", Ok(())),
        ("access:servers!server", Ok(())),
        ("access:servers!server=alice/", Ok(())),
        ("access:services!service", Ok(())),
        ("read:groups!group=g", Ok(())),
        ("self", Ok(())),
        ("inherit", Ok(())),
        ("(no_scope)", Ok(())),
        ("all", Err("Draft scope 'all' is now called 'inherit'")),
        (
            "all!user=x",
            Err("Draft scope 'all' is now called 'inherit'"),
        ),
        ("read:user", Err("Scope 'read:user' does not exist")),
        (
            "custom:undefined",
            Err("Scope 'custom:undefined' does not exist"),
        ),
        (
            "read:users!group",
            Err("Scope filter group '!group' in scope 'read:users!group' does not exist"),
        ),
        (
            "read:users!kind=x",
            Err("Scope filter kind=x '!kind=x' in scope 'read:users!kind=x' does not exist"),
        ),
        (
            "read:users!user=",
            Err("Empty string is not a valid filter: read:users!user="),
        ),
        (
            "read:users!",
            Err("Empty string is not a valid filter: read:users!"),
        ),
    ];
    for (scope, expected) in cases {
        let got = validate(&strs(&[scope])).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{scope}");
    }
}

#[test]
fn parse_and_reduce() {
    // Upstream: test_scopes.py::test_scope_constructor, test_scope_precendence
    let s = set(&["users", "read:users!user=george", "read:users!user=michael"]);
    assert_eq!(s.filters("users"), Some(Filters::All));
    assert_eq!(
        s.filters("read:users"),
        Some(Filters::Some(vec![
            Filter::User("george".into()),
            Filter::User("michael".into())
        ]))
    );
    let s = set(&["read:users!user=maeby", "read:users"]);
    assert_eq!(s.filters("read:users"), Some(Filters::All));
    assert_eq!(s.sorted(), strs(&["read:users"]));
    // reduce_scopes: access:services absorbs access:services!service=x
    let s = set(&["access:services!service=x", "access:services"]);
    assert_eq!(s.sorted(), strs(&["access:services"]));
    let s = set(&[
        "servers!server=alice/",
        "servers!group=g",
        "servers!service=s",
    ]);
    assert_eq!(
        s.filters("servers"),
        Some(Filters::Some(vec![
            Filter::Server {
                user: "alice".into(),
                server: "".into()
            },
            Filter::Group("g".into()),
            Filter::Service("s".into()),
        ]))
    );
    assert_eq!(s.filters("users"), None);
    assert!(s.has("servers") && !s.has("users"));
    assert!(s.contains_exact("servers!server=alice/") && !s.contains_exact("servers"));
    assert!(Scopes::parse(["x!user="]).is_err());
    assert!(Scopes::parse(["x!bogus=1"]).is_err());
    let u = set(&["a!user=x"]).union(&set(&["a!user=y", "b"]));
    assert_eq!(u.sorted(), strs(&["a!user=x", "a!user=y", "b"]));
    let u = set(&["a!user=x"]).union(&set(&["a"]));
    assert_eq!(u.sorted(), strs(&["a"]));
}

/// Map an upstream-style filtered scope string onto `allows`, with `user_groups` as the groups
/// of any user named in it.
fn has_scope(have: &Scopes, scope: &str, user_groups: &[String]) -> bool {
    let (base, filter) = split(scope);
    let resource = match filter.split_once('=') {
        None => Resource::Hub,
        Some(("user", name)) => Resource::User {
            name,
            groups: user_groups,
        },
        Some(("server", full)) => {
            let (user, server) = full.split_once('/').expect("server filter has a slash");
            Resource::Server {
                user,
                server,
                groups: user_groups,
            }
        }
        Some(("group", name)) => Resource::Group { name },
        Some(("service", name)) => Resource::Service { name },
        Some(_) => panic!("test scope {scope}"),
    };
    have.allows(base, &resource)
}

#[test]
fn has_scope_table() {
    // Upstream: test_scopes.py::test_has_scope (USER is a member of GROUP)
    let cases: &[(&str, &str, bool)] = &[
        // exact matches
        ("read:users", "read:users", true),
        ("read:users!user=USER", "read:users!user=USER", true),
        (
            "read:servers!server=USER/x",
            "read:servers!server=USER/x",
            true,
        ),
        ("read:groups!group=GROUP", "read:groups!group=GROUP", true),
        // subscopes
        ("read:users:name", "read:users", true),
        // subscopes with matching filter
        ("read:users:name!user=USER", "read:users!user=USER", true),
        ("read:users!user=USER", "read:users!group=GROUP", true),
        ("read:users!user=USER", "read:users", true),
        ("read:servers!server=USER/x", "read:servers", true),
        ("read:servers!server=USER/x", "servers!server=USER/x", true),
        ("read:servers!server=USER/x", "servers!user=USER", true),
        ("read:servers!server=USER/x", "servers!group=GROUP", true),
        // shouldn't match
        ("read:users", "read:users!user=USER", false),
        ("read:users!user=USER", "read:users!user=other", false),
        ("read:users!user=USER", "read:users!group=other", false),
        (
            "read:servers!server=USER/x",
            "servers!server=other/x",
            false,
        ),
        ("read:servers!server=USER/x", "servers!user=other", false),
        ("read:servers!server=USER/x", "servers!group=other", false),
        ("servers!server=USER/x", "read:servers!server=USER/x", false),
        // Upstream: test_scope_check_not_present, test_scope_filters, test_scope_parse_server_name
        ("read:users!user=gob", "read:users!user=maeby", false),
        (
            "read:users!server=gob/server",
            "read:users!user=maeby",
            false,
        ),
        (
            "read:users!group=bluth",
            "read:users,read:users!group=bluths",
            true,
        ),
        (
            "servers!server=maeby/server1",
            "servers!server=maeby/server1,read:users!user=maeby",
            true,
        ),
        // the brief's cases: a server is inside its user, not inside a sibling server
        (
            "access:servers!server=alice/x",
            "access:servers!user=alice",
            true,
        ),
        (
            "access:servers!server=alice/",
            "access:servers!server=alice/x",
            false,
        ),
        (
            "access:servers!user=alice",
            "access:servers!server=alice/x",
            false,
        ),
        ("read:services!service=s", "read:services!service=s", true),
        ("read:services!service=t", "read:services!service=s", false),
        ("read:groups!group=other", "read:groups!group=GROUP", false),
    ];
    let groups = strs(&["GROUP"]);
    for (scope, have, ok) in cases {
        let have: Vec<String> = have.split(',').map(str::to_owned).collect();
        let have = expand_for(&have, None, None).expect("valid");
        assert_eq!(
            has_scope(&have, scope, &groups),
            *ok,
            "{scope} with {have:?}"
        );
    }
}

#[test]
fn has_for_post_filter() {
    // Upstream: test_scopes.py::test_has_scope_post_filter
    let cases: &[(&str, &str, bool)] = &[
        ("read:users", "read:users", true),
        ("read:users", "read:users!user=x", true),
        ("read:users", "read:groups!user=x", false),
    ];
    for (base, have, ok) in cases {
        assert_eq!(set(&[have]).has(base), *ok, "{base} {have}");
    }
}

#[test]
fn expand_scopes_table() {
    // Upstream: test_scopes.py::test_expand_scopes (owner alice; client: server alice/salmon
    // when the scopes mention a server, else the service `svc`)
    let cases: &[(&[&str], &[&str])] = &[
        (&["read:users:name!user"], &["read:users:name!user=alice"]),
        (
            &["users:activity!user"],
            &[
                "read:users:activity!user=alice",
                "users:activity!user=alice",
            ],
        ),
        (
            &["access:services", "access:services!service=x"],
            &["access:services"],
        ),
        (
            &["access:services!service"],
            &["access:services!service=svc"],
        ),
        (
            &["access:servers!server"],
            &["access:servers!server=alice/salmon"],
        ),
    ];
    for (raw, expected) in cases {
        let client = if raw.iter().any(|s| s.contains("server")) {
            Client::Spawner {
                user: "alice",
                server: "salmon",
            }
        } else {
            Client::Service { name: "svc" }
        };
        let got = expand_for(&strs(raw), Some(&ALICE), Some(&client)).expect("valid");
        assert_eq!(got.sorted(), sorted(expected), "{raw:?}");
    }
}

#[test]
fn expand_subscopes_and_filters() {
    let cases: &[(&[&str], Owner<'_>, &[&str])] = &[
        (
            &["users"],
            ALICE,
            &[
                "users",
                "read:users",
                "list:users",
                "users:activity",
                "read:users:name",
                "read:users:groups",
                "read:users:activity",
            ],
        ),
        (
            &["admin:servers!user=bob"],
            ALICE,
            &[
                "admin:servers!user=bob",
                "admin:server_state!user=bob",
                "servers!user=bob",
                "read:servers!user=bob",
                "start:servers!user=bob",
                "delete:servers!user=bob",
                "read:users:name!user=bob",
            ],
        ),
        // a !server filter is not applied to read:users* subscopes
        (
            &["servers!server=alice/x"],
            ALICE,
            &[
                "servers!server=alice/x",
                "read:servers!server=alice/x",
                "start:servers!server=alice/x",
                "delete:servers!server=alice/x",
            ],
        ),
        (
            &["shares!group=g"],
            ALICE,
            &[
                "shares!group=g",
                "access:servers!group=g",
                "read:shares!group=g",
                "users:shares!group=g",
                "read:users:shares!group=g",
                "groups:shares!group=g",
                "read:groups:shares!group=g",
            ],
        ),
        // bare filters with nothing to resolve to are dropped
        (&["access:servers!server", "read:users!service"], ALICE, &[]),
        (
            &["users:activity!user", "read:services!service"],
            Owner::Service { name: "s" },
            &["read:services!service=s", "read:services:name!service=s"],
        ),
        // Upstream: test_scopes.py::test_metascope_self_expansion (service: nothing)
        (&["self"], Owner::Service { name: "s" }, &[]),
        // inherit and (no_scope) stay as plain scopes
        (
            &["inherit", "(no_scope)"],
            ALICE,
            &["inherit", "(no_scope)"],
        ),
        (&[], ALICE, &[]),
    ];
    for (raw, owner, expected) in cases {
        let got = expand(&strs(raw), owner).expect("valid");
        assert_eq!(got.sorted(), sorted(expected), "{raw:?}");
    }
    assert_eq!(
        expand(&strs(&["all"]), &ALICE).map_err(|e| e.to_string()),
        Err("Draft scope 'all' is now called 'inherit'".to_owned())
    );
}

#[test]
fn self_expansion_is_upstream_6x() {
    // Upstream: scopes.py::_expand_self_scope (6.x computes it, so start:servers is included)
    let got = expand(&strs(&["self"]), &ALICE).expect("valid");
    let expected: Vec<String> = [
        "read:users",
        "read:users:name",
        "read:users:groups",
        "read:users:activity",
        "users:shares",
        "read:users:shares",
        "read:shares",
        "users:activity",
        "servers",
        "read:servers",
        "start:servers",
        "delete:servers",
        "tokens",
        "read:tokens",
        "access:servers",
    ]
    .iter()
    .map(|s| format!("{s}!user=alice"))
    .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(got.sorted(), expected);
}

#[test]
fn intersect_expanded_scopes_table() {
    // Upstream: test_scopes.py::test_intersect_expanded_scopes (no db)
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&[], &[], &[]),
        (&[], &["users"], &[]),
        (&["users!user=x", "users!group=y"], &[], &[]),
        (
            &["users!user=x", "users!user=y", "users!group=y"],
            &["users!user=x"],
            &["users!user=x"],
        ),
        (
            &["users!user=x", "users!group=y"],
            &["users!user=x", "users!group=y", "users!user=z"],
            &["users!user=x", "users!group=y"],
        ),
        (&["users!group=y", "users!user=z"], &["users!user=x"], &[]),
        (
            &["users!group=y", "users!user=z"],
            &["users!server=x/y"],
            &[],
        ),
        (
            &["users!group=y", "users!user=x"],
            &["users!server=x/y"],
            &["users!server=x/y"],
        ),
        (
            &["read:servers!user=abc"],
            &["read:servers!server=abc/xyz"],
            &["read:servers!server=abc/xyz"],
        ),
        (
            &["read:servers!user=abc"],
            &["read:servers!server=abcd/xyz"],
            &[],
        ),
        // ALL ∩ X = X
        (
            &["read:users"],
            &["read:users!user=a", "read:groups"],
            &["read:users!user=a"],
        ),
        (
            &["a!service=s", "a!user=u"],
            &["a!service=s"],
            &["a!service=s"],
        ),
    ];
    for (left, right, expected) in cases {
        for (a, b) in [(left, right), (right, left)] {
            let got = intersect_expanded(&set(a), &set(b), &NoGroups);
            assert_eq!(got.sorted(), sorted(expected), "{a:?} ∩ {b:?}");
        }
    }
}

#[test]
fn intersect_groups_table() {
    // Upstream: test_scopes.py::test_intersect_groups (with db)
    type Groups<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: &[(&[&str], &[&str], &[&str], Groups<'_>)] = &[
        (
            &["users!group=gx"],
            &["users!user=ux"],
            &["users!user=ux"],
            &[("gx", &["ux"])],
        ),
        (
            &["read:users!group=gx"],
            &["read:users!user=nosuchuser"],
            &[],
            &[],
        ),
        (
            &["read:users!group=gx"],
            &["read:users!server=nosuchuser/server"],
            &[],
            &[],
        ),
        (
            &["read:users!group=gx"],
            &["read:users!server=ux/server"],
            &["read:users!server=ux/server"],
            &[("gx", &["ux"])],
        ),
        (
            &["read:users!group=gx"],
            &["read:users!server=ux/server", "read:users!user=uy"],
            &["read:users!server=ux/server"],
            &[("gx", &["ux"]), ("gy", &["uy"])],
        ),
        (
            &["read:users!group=gy"],
            &["read:users!server=ux/server", "read:users!user=uy"],
            &["read:users!user=uy"],
            &[("gx", &["ux"]), ("gy", &["uy"])],
        ),
        (
            &["read:servers!server=ux/server", "read:servers!group=gy"],
            &["read:servers!server=uy/server", "read:servers!user=ux"],
            &[
                "read:servers!server=ux/server",
                "read:servers!server=uy/server",
            ],
            &[("gx", &["ux"]), ("gy", &["uy"])],
        ),
        (
            &["read:servers!user=ux", "read:servers!group=gy"],
            &["read:servers!user=uy", "read:servers!group=gx"],
            &["read:servers!user=ux", "read:servers!user=uy"],
            &[("gx", &["ux"]), ("gy", &["uy"])],
        ),
    ];
    for (left, right, expected, groups) in cases {
        let groups = members(groups);
        for (a, b) in [(left, right), (right, left)] {
            let got = intersect_expanded(&set(a), &set(b), &groups);
            assert_eq!(got.sorted(), sorted(expected), "{a:?} ∩ {b:?}");
        }
    }
}

#[test]
fn resolve_token_permissions_table() {
    // Upstream: test_scopes.py::test_resolve_token_permissions (owner temp_user_1, no groups)
    let cases: &[(&str, &[&str], &[&str], &[&str])] = &[
        (
            "no_filter",
            &["users:activity"],
            &["users:activity"],
            &["users:activity", "read:users:activity"],
        ),
        (
            "valid_own_filter",
            &["read:users:activity"],
            &["read:users:activity!user"],
            &["read:users:activity!user=temp_user_1"],
        ),
        (
            "valid_other_filter",
            &["read:users:activity"],
            &["read:users:activity!user=otheruser"],
            &["read:users:activity!user=otheruser"],
        ),
        (
            "no_filter_owner_filter",
            &["read:users:activity!user"],
            &["read:users:activity"],
            &["read:users:activity!user=temp_user_1"],
        ),
        (
            "valid_own_filter",
            &["read:users:activity!user"],
            &["read:users:activity!user"],
            &["read:users:activity!user=temp_user_1"],
        ),
        (
            "invalid_filter",
            &["read:users:activity!user"],
            &["read:users:activity!user=otheruser"],
            &[],
        ),
        (
            "subscopes_cross_filter",
            &["users!user=x"],
            &["read:users:name"],
            &["read:users:name!user=x"],
        ),
        (
            "multiple_user_filter",
            &["users!user=x", "users!user=y"],
            &["read:users:name!user=x"],
            &["read:users:name!user=x"],
        ),
        (
            "no_intersection_group_user",
            &["users!group=y"],
            &["users!user=x"],
            &[],
        ),
        (
            "no_intersection_user_server",
            &["servers!user=y"],
            &["servers!server=x"],
            &[],
        ),
        (
            "users_and_groups_both",
            &["users!group=x", "users!user=y"],
            &["read:users:name!group=x", "read:users!user=y"],
            &[
                "read:users:name!group=x",
                "read:users!user=y",
                "read:users:name!user=y",
                "read:users:groups!user=y",
                "read:users:activity!user=y",
            ],
        ),
        (
            "users_and_groups_user_only",
            &["users!group=x", "users!user=y"],
            &["read:users:name!group=z", "read:users!user=y"],
            &[
                "read:users!user=y",
                "read:users:name!user=y",
                "read:users:groups!user=y",
                "read:users:activity!user=y",
            ],
        ),
    ];
    let owner = Owner::User {
        name: "temp_user_1",
    };
    for (name, user_scopes, token, expected) in cases {
        let owner_scopes = expand(&strs(user_scopes), &owner).expect("valid");
        let got =
            token_scopes(&strs(token), &owner, None, &owner_scopes, &NoGroups).expect("valid");
        assert_eq!(got.sorted(), sorted(expected), "{name}");
    }
}

#[test]
fn inherit_and_user_filter_expansion() {
    // Upstream: test_scopes.py::test_metascope_inherit_expansion, test_user_filter_expansion
    let owner_scopes = expand(&strs(&["self"]), &ALICE).expect("valid");
    let inherit =
        token_scopes(&strs(&["inherit"]), &ALICE, None, &owner_scopes, &NoGroups).expect("valid");
    assert_eq!(inherit, owner_scopes);
    // the same via intersect on expanded scopes
    let t = expand(&strs(&["inherit"]), &ALICE).expect("valid");
    assert_eq!(intersect(&t, &owner_scopes, &NoGroups), owner_scopes);
    // no scopes: only identify scopes remain
    let none = token_scopes(&[], &ALICE, None, &owner_scopes, &NoGroups).expect("valid");
    assert_eq!(
        none.sorted(),
        sorted(
            &identify_scopes("alice")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        )
    );
    // `self` spelled out with bare !user equals inherit
    let bare: Vec<String> = expand(&strs(&["self"]), &Owner::User { name: "ignored" })
        .expect("valid")
        .iter()
        .map(|s| s.split_once('=').expect("filtered").0.to_owned())
        .collect();
    let manual = token_scopes(&bare, &ALICE, None, &owner_scopes, &NoGroups).expect("valid");
    assert_eq!(manual, inherit);
    // a service's `self` token has nothing but what the service holds
    let svc = Owner::Service { name: "s" };
    let svc_scopes = expand(&strs(&["self"]), &svc).expect("valid");
    assert!(svc_scopes.is_empty());
    let t = token_scopes(&strs(&["self"]), &svc, None, &svc_scopes, &NoGroups).expect("valid");
    assert!(t.is_empty());
}

#[test]
fn oauth_token_gets_access_scope_if_owner_holds_it() {
    // Upstream: scopes.py::get_scopes_for (client_id != "jupyterhub" adds access_scopes)
    let client = Client::Spawner {
        user: "alice",
        server: "",
    };
    let owner_scopes = expand(&strs(&["self"]), &ALICE).expect("valid");
    let t = token_scopes(
        &strs(&["read:users:name!user"]),
        &ALICE,
        Some(&client),
        &owner_scopes,
        &NoGroups,
    )
    .expect("valid");
    assert_eq!(
        t.sorted(),
        sorted(&[
            "access:servers!server=alice/",
            "read:users:groups!user=alice",
            "read:users:name!user=alice"
        ])
    );
    // bob does not hold access to alice's server: not granted
    let bob = Owner::User { name: "bob" };
    let bob_scopes = expand(&strs(&["self"]), &bob).expect("valid");
    let t = token_scopes(&[], &bob, Some(&client), &bob_scopes, &NoGroups).expect("valid");
    assert_eq!(
        t.sorted(),
        sorted(&["read:users:groups!user=bob", "read:users:name!user=bob"])
    );
    let svc = Client::Service { name: "grader" };
    let admin = expand(&default_roles()[1].scopes, &bob).expect("valid");
    let t = token_scopes(&[], &bob, Some(&svc), &admin, &NoGroups).expect("valid");
    assert!(t.contains_exact("access:services!service=grader"));
}

#[test]
fn excess_table() {
    // Upstream: scopes.py::_check_token_scopes, test_scopes.py::test_refuse_exceeding_token_permissions
    let alice_groups = members(&[("g", &["alice"]), ("class", &["bob"])]);
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["self"], &["inherit"], &[]),
        (&["self"], &["inherit", "read:users!user"], &[]),
        (
            &["self"],
            &["read:users!user=alice", "access:servers!server=alice/x"],
            &[],
        ),
        (
            &["self"],
            &["admin:users"],
            &[
                "admin:users",
                "admin:auth_state",
                "delete:users",
                "list:users",
                "read:roles:users",
                "read:users",
                "read:users:activity",
                "read:users:groups",
                "read:users:name",
                "users",
                "users:activity",
            ],
        ),
        (
            &["self"],
            &["read:users!user=bob"],
            &[
                "read:users!user=bob",
                "read:users:activity!user=bob",
                "read:users:groups!user=bob",
                "read:users:name!user=bob",
            ],
        ),
        (&["self"], &["(no_scope)"], &["(no_scope)"]),
        (
            &["read:users!group=class"],
            &["read:users:name!user=bob"],
            &[],
        ),
        (
            &["read:users!group=class"],
            &["read:users:name!user=carol"],
            &["read:users:name!user=carol"],
        ),
        (
            &["servers!group=class"],
            &["read:servers!server=bob/x"],
            &[],
        ),
    ];
    for (owner_raw, requested, expected) in cases {
        let owner = expand(&strs(owner_raw), &ALICE).expect("valid");
        let req = expand(&strs(requested), &ALICE).expect("valid");
        assert_eq!(
            excess(&req, &owner, &alice_groups),
            sorted(expected),
            "{owner_raw:?} {requested:?}"
        );
    }
}

#[test]
fn resolve_requested_scopes_table() {
    // Upstream: test_scopes.py::test_resolve_requested_scopes (client: server alice/salmon when
    // `!server` is mentioned, else service svc)
    let cases: &[(&[&str], &[&str], &[&str], &[&str])] = &[
        (
            &["read:users:name!user"],
            &["read:users:name!user=alice"],
            &["read:users:name!user"],
            &[],
        ),
        (
            &["read:servers!server"],
            &["read:servers!user"],
            &["read:servers!server"],
            &[],
        ),
        (
            &["read:servers!server=alice/salmon"],
            &["read:servers"],
            &["read:servers!server=alice/salmon"],
            &[],
        ),
        (
            &["admin:servers!server"],
            &["read:servers"],
            &["read:servers!server=alice/salmon"],
            &["admin:servers!server"],
        ),
        (
            &["admin:servers", "read:users"],
            &["read:users"],
            &["read:users"],
            &["admin:servers"],
        ),
    ];
    for (requested, have, allowed, disallowed) in cases {
        let client = if requested
            .iter()
            .chain(have.iter())
            .any(|s| s.contains("!server"))
        {
            Client::Spawner {
                user: "alice",
                server: "salmon",
            }
        } else {
            Client::Service { name: "svc" }
        };
        let got = resolve_requested(
            &strs(requested),
            &strs(have),
            &ALICE,
            Some(&client),
            &NoGroups,
        )
        .expect("valid");
        assert_eq!(
            got,
            (sorted(allowed), sorted(disallowed)),
            "{requested:?} / {have:?}"
        );
    }
}

#[test]
fn server_token_table() {
    // Upstream: user.py::User.spawn; contract §3.6 observed model scopes
    assert_eq!(
        server_token_scopes("alice", ""),
        sorted(&["access:servers!server=alice/", "users:activity!user"])
    );
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[],
            &["access:servers!server=alice/nb", "users:activity!user"],
        ),
        (
            &["read:users!server"],
            &["read:users!server=alice/nb", "users:activity!user"],
        ),
        (&["users:activity"], &["users:activity"]),
        (&["inherit"], &["inherit"]),
        (
            &["users:activity!user", "custom:x!server"],
            &["custom:x!server=alice/nb", "users:activity!user"],
        ),
    ];
    for (requested, expected) in cases {
        assert_eq!(
            server_token_request(&strs(requested), "alice", "nb"),
            sorted(expected),
            "{requested:?}"
        );
    }
    // Resolving against the user's raw scopes plus inherit keeps the request as written,
    // and the token's effective scopes are the observed ones.
    let mut have = strs(&["self"]);
    have.push("inherit".into());
    let request = server_token_scopes("alice", "");
    let (allowed, disallowed) =
        resolve_requested(&request, &have, &ALICE, None, &NoGroups).expect("valid");
    assert_eq!((allowed.clone(), disallowed), (request, vec![]));
    let owner = expand(&strs(&["self"]), &ALICE).expect("valid");
    let t = token_scopes(&allowed, &ALICE, None, &owner, &NoGroups).expect("valid");
    assert_eq!(
        t.sorted(),
        sorted(&[
            "access:servers!server=alice/",
            "users:activity!user=alice",
            "read:users:activity!user=alice",
            "read:users:name!user=alice",
            "read:users:groups!user=alice"
        ])
    );
}

#[test]
fn access_and_identify_scopes() {
    assert_eq!(
        access_scopes_for_server("alice", ""),
        strs(&["access:servers!server=alice/"])
    );
    assert_eq!(
        access_scopes_for_server("alice", "nb"),
        strs(&["access:servers!server=alice/nb"])
    );
    assert_eq!(
        access_scopes_for_service("grader"),
        strs(&["access:services!service=grader"])
    );
    assert_eq!(
        access_scopes(&Client::Service { name: "g" }),
        strs(&["access:services!service=g"])
    );
    assert_eq!(
        identify_scopes("alice"),
        sorted(&["read:users:name!user=alice", "read:users:groups!user=alice"])
    );
    assert_eq!(
        identify_scopes_for(&Owner::Service { name: "s" }),
        strs(&["read:services:name!service=s"])
    );
}

#[test]
fn allows_resources() {
    let groups = strs(&["g"]);
    let none: Vec<String> = Vec::new();
    let s = set(&[
        "access:servers!user=alice",
        "access:servers!server=bob/x",
        "access:servers!group=g",
        "read:groups!group=g",
        "read:services!service=s",
        "read:hub",
    ]);
    let cases: &[(&str, Resource<'_>, bool)] = &[
        ("read:hub", Resource::Hub, true),
        (
            "read:hub",
            Resource::User {
                name: "x",
                groups: &none,
            },
            true,
        ),
        ("access:servers", Resource::Hub, false),
        (
            "access:servers",
            Resource::Server {
                user: "alice",
                server: "",
                groups: &none,
            },
            true,
        ),
        (
            "access:servers",
            Resource::Server {
                user: "alice",
                server: "nb",
                groups: &none,
            },
            true,
        ),
        (
            "access:servers",
            Resource::User {
                name: "alice",
                groups: &none,
            },
            true,
        ),
        (
            "access:servers",
            Resource::Server {
                user: "bob",
                server: "x",
                groups: &none,
            },
            true,
        ),
        (
            "access:servers",
            Resource::Server {
                user: "bob",
                server: "",
                groups: &none,
            },
            false,
        ),
        (
            "access:servers",
            Resource::User {
                name: "bob",
                groups: &none,
            },
            false,
        ),
        (
            "access:servers",
            Resource::Server {
                user: "carol",
                server: "",
                groups: &groups,
            },
            true,
        ),
        (
            "access:servers",
            Resource::User {
                name: "carol",
                groups: &groups,
            },
            true,
        ),
        (
            "access:servers",
            Resource::Server {
                user: "carol",
                server: "",
                groups: &none,
            },
            false,
        ),
        ("read:groups", Resource::Group { name: "g" }, true),
        ("read:groups", Resource::Group { name: "h" }, false),
        ("read:services", Resource::Service { name: "s" }, true),
        ("read:services", Resource::Service { name: "t" }, false),
        (
            "read:users",
            Resource::User {
                name: "alice",
                groups: &none,
            },
            false,
        ),
    ];
    for (base, resource, ok) in cases {
        assert_eq!(s.allows(base, resource), *ok, "{base} on {resource:?}");
    }
}

#[test]
fn custom_scopes_table() {
    // Upstream: test_scopes.py::test_custom_scopes, test_custom_scopes_bad
    let c = |name: &str, subs: &[&str]| CustomScope {
        name: name.to_owned(),
        description: format!("about {name}"),
        subscopes: strs(subs),
    };
    define_custom_scopes(&[c("custom:okay", &[])]).expect("simple");
    define_custom_scopes(&[
        c("custom:parent", &["custom:child"]),
        c("custom:child", &[]),
    ])
    .expect("nested");
    define_custom_scopes(&[c("custom:okay", &[])]).expect("same definition again");
    let bad: &[&[CustomScope]] = &[
        &[c("read:users", &[])],
        &[CustomScope {
            description: String::new(),
            ..c("custom:empty", &[])
        }],
        &[c("notcustom:prefix", &[])],
        &[c("custom:!illegal", &[])],
        &[c("custom:ends-", &[])],
        &[c("custom:badsubscope", &["read:users"])],
        &[c("custom:nosubscope", &["custom:undefined"])],
        &[c("custom:okay", &["custom:child"])],
    ];
    for batch in bad {
        assert!(define_custom_scopes(batch).is_err(), "{batch:?}");
        assert!(!is_defined("custom:empty") && !is_defined("custom:badsubscope"));
    }
    let got = expand(&strs(&["custom:parent!user"]), &ALICE).expect("defined");
    assert_eq!(
        got.sorted(),
        sorted(&["custom:child!user=alice", "custom:parent!user=alice"])
    );
    assert_eq!(
        scope_description("custom:okay").as_deref(),
        Some("about custom:okay")
    );
}

#[test]
fn role_names() {
    // Upstream: roles.py::_validate_role_name
    for (name, ok) in [
        ("user", true),
        ("my-role.1~x_y", true),
        ("abc", true),
        ("ab", false),
        ("Abc", false),
        ("1ab", false),
        ("ab-", false),
        ("a b", false),
        ("", false),
    ] {
        assert_eq!(validate_role_name(name).is_ok(), ok, "{name}");
    }
    assert!(validate_role_name(&"a".repeat(256)).is_err());
    assert!(validate_role_name(&"a".repeat(255)).is_ok());
}

/// `whoami` adds the identify scopes to a token's expanded scopes by a union of expansions
/// instead of expanding everything again; that must be the same set.
#[test]
fn expansion_distributes_over_union() {
    let owner = Owner::User { name: "alice" };
    let identify = identify_scopes("alice");
    let mut roles: Vec<Vec<String>> = crate::rbac::definitions::default_roles()
        .into_iter()
        .map(|r| r.scopes)
        .collect();
    roles.push(vec![
        "read:users!group=g".into(),
        "servers!server=bob/x".into(),
    ]);
    roles.push(vec![]);
    for raw in roles {
        let expanded = expand(&raw, &owner).expect("expand");
        let mut all = raw.clone();
        all.extend(identify.iter().cloned());
        let whole = expand(&all, &owner).expect("expand");
        let by_union = expanded.union(&expand(&identify, &owner).expect("expand"));
        assert_eq!(whole.sorted(), by_union.sorted(), "{raw:?}");
    }
}
