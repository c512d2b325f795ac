//! Property tests of what the hub reads from outside: the config file, signed cookies and
//! XSRF tokens, cookie and `Authorization` headers, the privileged helper's wire messages,
//! and login names on their way into LDAP. Each must answer garbage with `Ok` or a clean error, never a panic, and what
//! our own encoder writes must decode back. (The proxy's framing has its own in
//! `src/proxy/h1.rs`; the helper's request handling in `src/privileged/helper.rs`.)
//!
//! Case counts are small so CI runs these in seconds; run longer by hand with
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use axum::http::{HeaderMap, HeaderValue, header};
use jupyterhub::auth::cookie::{self, CookieSecret};
use jupyterhub::config::Config;
use jupyterhub::privileged::protocol::{self, Request, Response, StartedWire};
use jupyterhub::spawner::{LimitsSpec, SpawnRequest};
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default),
    )
}

// ---------------------------------------------------------------- the config file

/// Every key the loader knows, by section (as `packaging/jupyterhub.toml.example` spells them).
const KEYS: &[(&str, &[&str])] = &[
    (
        "JupyterHub",
        &[
            "ip",
            "port",
            "base_url",
            "hub_bind_url",
            "hub_connect_url",
            "public_url",
            "db_url",
            "cookie_secret_file",
            "cookie_max_age_days",
            "admin_access",
            "allow_named_servers",
            "named_server_limit_per_user",
            "active_server_limit",
            "concurrent_spawn_limit",
            "authenticator_class",
            "spawner_class",
            "upgrade_db",
            "ssl_cert",
            "ssl_key",
            "subdomain_host",
            "logo_file",
            "default_url",
            "redirect_to_server",
            "shutdown_on_logout",
            "api_page_default_limit",
            "api_page_max_limit",
            "user_redirect_limit",
            "slow_spawn_timeout",
            "slow_stop_timeout",
            "last_activity_interval",
            "token_expires_in_max_seconds",
            "oauth_token_expires_in",
            "authenticate_prometheus",
            "template_paths",
            "api_tokens",
            "services",
            "load_roles",
            "load_groups",
            "login_rate_limit",
            "login_rate_window",
            "trusted_downstream_ips",
        ],
    ),
    (
        "Authenticator",
        &[
            "admin_users",
            "allowed_users",
            "blocked_users",
            "allow_all",
            "allow_existing_users",
            "username_pattern",
            "username_map",
            "auto_login",
            "enable_auth_state",
            "delete_invalid_users",
        ],
    ),
    (
        "PAMAuthenticator",
        &["service", "admin_groups", "allowed_groups", "check_account"],
    ),
    ("DummyAuthenticator", &["password"]),
    (
        "LDAPAuthenticator",
        &[
            "server_address",
            "server_port",
            "tls_strategy",
            "use_ssl",
            "tls_kwargs",
            "bind_dn_template",
            "escape_userdn",
            "lookup_dn",
            "user_search_base",
            "user_attribute",
            "lookup_dn_search_filter",
            "lookup_dn_search_user",
            "lookup_dn_search_password",
            "lookup_dn_user_dn_attribute",
            "use_lookup_dn_username",
            "search_filter",
            "attributes",
            "allowed_groups",
            "group_search_filter",
            "group_attributes",
            "auth_state_attributes",
            "valid_username_regex",
        ],
    ),
    (
        "SharedPasswordAuthenticator",
        &["user_password", "admin_password"],
    ),
    (
        "Spawner",
        &[
            "cmd",
            "args",
            "notebook_dir",
            "default_url",
            "environment",
            "env_keep",
            "mem_limit",
            "mem_guarantee",
            "cpu_limit",
            "cpu_guarantee",
            "tasks_max",
            "user_limits",
            "group_limits",
            "start_timeout",
            "http_timeout",
            "poll_interval",
            "options_form",
            "pre_spawn_hook",
            "ip",
            "debug",
            "disable_user_config",
            "oauth_client_allowed_scopes",
        ],
    ),
    (
        "SystemdSpawner",
        &[
            "slice",
            "isolate_tmp",
            "isolate_devices",
            "disable_user_sudo",
            "readonly_paths",
            "readwrite_paths",
            "unit_extra_properties",
            "dynamic_users",
            "helper_socket",
            "env_dir",
        ],
    ),
    (
        "Proxy",
        &[
            "header_timeout",
            "body_timeout",
            "keepalive_timeout",
            "max_connections_per_ip",
        ],
    ),
];

/// Strings that mean something to some key (sizes, CPU amounts, patterns, addresses, URLs)
/// next to arbitrary ones.
fn toml_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,20}(\\.[0-9]{0,4})?[KMGTkmgt%]?i?[Bb]?",
        "-?[0-9]{0,4}m?",
        "(https?|ftp)://[a-z0-9.:\\[\\]@/%]{0,24}",
        "[0-9a-f:.]{0,24}(/[0-9]{1,3})?",
        "[\\[\\](){}*+?|^$\\\\.a-z]{0,12}",
        "sqlite:///[a-z/]{0,12}",
        "\\PC{0,24}",
        any::<String>(),
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        toml_string().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![
            any::<f64>(),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(-0.0),
            Just(1e300),
            -100.0..100_000.0f64,
        ]
        .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map(
                prop_oneof!["[a-z_]{1,12}".boxed(), Just("name".to_owned()).boxed()],
                inner,
                0..4
            )
            .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A config file of known keys with arbitrary values.
fn config_table() -> impl Strategy<Value = toml::Table> {
    let entry = (0..KEYS.len()).prop_flat_map(|section| {
        let keys = KEYS[section].1;
        (Just(section), 0..keys.len(), toml_value())
    });
    proptest::collection::vec(entry, 0..8).prop_map(|entries| {
        let mut table = toml::Table::new();
        for (section, key, value) in entries {
            let (name, keys) = KEYS[section];
            let section = table
                .entry(name)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(section) = section {
                section.insert(keys[key].to_owned(), value);
            }
        }
        table
    })
}

/// What the hub does with a config it loaded; none of it may panic.
fn use_config(text: &str) -> Result<(), String> {
    let config = Config::parse(text)?;
    config.validate()?;
    let _ = config.proxy.limits();
    let _ = config.spawner.limits_for("someone", &["group".to_owned()]);
    let _ = config.db_path();
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_text_is_parsed_or_refused(text in "\\PC{0,200}") {
        let _ = use_config(&text);
    }

    #[test]
    fn toml_ish_text_is_parsed_or_refused(
        lines in proptest::collection::vec(
            prop_oneof![
                "\\[(JupyterHub|Spawner|Proxy|Authenticator|x)\\]",
                "\\[\\[JupyterHub\\.(services|load_roles)\\]\\]",
                "[a-z_]{1,16} = [-+0-9a-z.\"'\\[\\]{}, _:]{0,24}",
                "[a-z_]{1,16}\\.[a-z_]{1,8} = \"[^\"\\\\]{0,8}\"",
                "\\PC{0,24}",
            ],
            0..12,
        )
    ) {
        let _ = use_config(&lines.join("\n"));
    }

    #[test]
    fn arbitrary_values_for_known_keys_are_parsed_or_refused(table in config_table()) {
        let text = toml::to_string(&table).expect("a table serializes");
        if let Err(message) = use_config(&text) {
            prop_assert!(!message.is_empty());
        }
    }
}

// ---------------------------------------------------------------- cookies and XSRF

fn secret() -> CookieSecret {
    CookieSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec())
}

/// Strings shaped like signed values (`2|1:0|10:…|…`), to get past the first checks.
fn signed_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\"?2\\|([0-9]{0,3}:[-0-9a-zA-Z+/=_|:]{0,24}\\|){0,5}[0-9a-f]{0,64}\"?",
        "2\\|1:0\\|[0-9]{1,2}:[0-9-]{0,20}\\|[0-9]{1,2}:_xsrf\\|[0-9]{1,3}:[A-Za-z0-9+/=]{0,12}\\|[0-9a-f]{64}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_signed_values_never_panic(
        name in "[a-z_-]{0,24}",
        signed in signed_ish(),
        max_age in any::<i64>(),
        now in any::<i64>(),
    ) {
        let _ = secret().verify(&name, &signed, max_age, now);
        let _ = secret().xsrf_id(&signed, now);
    }

    #[test]
    fn arbitrary_xsrf_tokens_never_panic(token in "[-A-Za-z0-9_=+/]{0,200}", now in any::<i64>()) {
        prop_assert!(secret().xsrf_id(&token, now).is_none());
    }

    #[test]
    fn signed_values_decode_back(
        name in "\\PC{0,24}",
        value in "\\PC{0,64}",
        ts in 0i64..4_000_000_000,
        age in 0i64..86400,
    ) {
        let s = secret();
        let signed = s.sign(&name, &value, ts);
        prop_assert_eq!(s.verify(&name, &signed, 86400, ts + age), Some(value.clone()));
        // As a browser sends it back, quoted.
        prop_assert_eq!(s.verify(&name, &format!("\"{signed}\""), 86400, ts), Some(value.clone()));
        // Under another name, or too old: refused.
        let other = format!("{name}x");
        prop_assert_eq!(s.verify(&other, &signed, 86400, ts), None);
        prop_assert_eq!(s.verify(&name, &signed, age, ts + age + 1), None);
        // With another secret: refused.
        let other_secret = CookieSecret::from_bytes(b"another secret".to_vec());
        prop_assert_eq!(other_secret.verify(&name, &signed, 86400, ts), None);
    }

    #[test]
    fn genuine_values_at_any_clock_or_max_age_never_panic(
        ts in any::<i64>(),
        max_age in any::<i64>(),
        now in any::<i64>(),
    ) {
        // Past the signature check, the age arithmetic sees any i64 (a max age comes from
        // the float `cookie_max_age_days`).
        let s = secret();
        let signed = s.sign(cookie::LOGIN_COOKIE, "id", ts);
        let _ = s.verify(cookie::LOGIN_COOKIE, &signed, max_age, now);
        let _ = s.xsrf_id(&s.xsrf_token("id", ts), now);
    }

    #[test]
    fn xsrf_tokens_decode_back(id in "\\PC{0,64}", ts in 0i64..4_000_000_000) {
        let s = secret();
        let token = s.xsrf_token(&id, ts);
        prop_assert_eq!(s.xsrf_id(&token, ts + 30 * 86400), Some(id.clone()));
        // Padded, as some clients re-encode it.
        prop_assert_eq!(s.xsrf_id(&format!("{token}=="), ts), Some(id));
    }

    #[test]
    fn arbitrary_cookie_and_authorization_headers_never_panic(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 0..4),
        name in prop_oneof![
            Just(cookie::LOGIN_COOKIE.to_owned()),
            Just(cookie::XSRF_COOKIE.to_owned()),
            "[ -~]{0,12}",
        ],
    ) {
        let mut headers = HeaderMap::new();
        for value in &values {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(header::COOKIE, value.clone());
                headers.append(header::AUTHORIZATION, value);
            }
        }
        if let Some(found) = cookie::cookie(&headers, &name) {
            prop_assert!(!found.starts_with('"') && !found.ends_with('"'));
        }
        let _ = cookie::session_id(&headers);
        let _ = cookie::bearer_token(&headers);
        let _ = cookie::api_needs_xsrf(&axum::http::Method::POST, &headers);
    }

    #[test]
    fn a_cookie_set_is_read_back(
        value in "[!#-+\\--:<-\\[\\]-~]{1,40}",
        others in proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9]{0,8}"), 0..4),
    ) {
        let mut pairs: Vec<String> = others
            .iter()
            .filter(|(k, _)| k != "target")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.insert(pairs.len() / 2, format!("target={value}"));
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&pairs.join("; ")).expect("header"));
        prop_assert_eq!(cookie::cookie(&headers, "target"), Some(value.as_str()));
    }
}

// ---------------------------------------------------------------- the helper's protocol

fn limits_spec() -> impl Strategy<Value = LimitsSpec> {
    // Finite amounts as a config gives them; JSON has no NaN or infinity.
    let cpu = prop_oneof![
        (1u32..=6400).prop_map(|n| f64::from(n) / 100.0),
        (1u32..=64_000).prop_map(|n| f64::from(n) / 1000.0),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ];
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(cpu.clone()),
        proptest::option::of(cpu),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(mem_limit, mem_guarantee, cpu_limit, cpu_guarantee, tasks_max)| LimitsSpec {
                mem_limit,
                mem_guarantee,
                cpu_limit,
                cpu_guarantee,
                tasks_max,
            },
        )
}

fn spawn_request() -> impl Strategy<Value = SpawnRequest> {
    (
        (any::<String>(), any::<String>(), any::<String>()),
        proptest::collection::vec(any::<String>(), 0..4),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..6),
        proptest::option::of("/?\\PC{0,24}"),
        (any::<String>(), any::<u16>()),
        limits_spec(),
    )
        .prop_map(
            |((user, server_name, system_user), argv, env, dir, (ip, port), limits)| SpawnRequest {
                user,
                server_name,
                system_user,
                argv,
                env,
                working_dir: dir.map(Into::into),
                ip,
                port,
                limits,
                groups: Vec::new(),
                profile: None,
            },
        )
}

/// One line: a single `\n`, at the end (the helper reads up to the first).
fn one_line(line: &str) -> Result<(), TestCaseError> {
    prop_assert!(line.ends_with('\n'));
    prop_assert_eq!(line.matches('\n').count(), 1);
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn start_unit_requests_round_trip(request in spawn_request()) {
        let line = protocol::encode(&Request::StartUnit { request: Box::new(request.clone()) })
            .expect("encode");
        one_line(&line)?;
        match serde_json::from_str::<Request>(&line).expect("decode") {
            Request::StartUnit { request: back } => prop_assert_eq!(*back, request),
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn pam_requests_and_answers_round_trip(
        user in any::<String>(),
        password in any::<String>(),
        valid in any::<bool>(),
        message in any::<String>(),
        url in any::<String>(),
    ) {
        let line = protocol::encode(&Request::CheckPam { user: user.clone(), password: password.clone() })
            .expect("encode");
        one_line(&line)?;
        match serde_json::from_str::<Request>(&line).expect("decode") {
            Request::CheckPam { user: u, password: p } => {
                prop_assert_eq!((u, p), (user, password));
            }
            other => prop_assert!(false, "{other:?}"),
        }
        for response in [
            Response::Pam { valid },
            Response::Error { message: message.clone() },
            Response::Started {
                started: StartedWire { url: url.clone(), state: serde_json::json!({"unit": message}) },
            },
        ] {
            let line = protocol::encode(&response).expect("encode");
            one_line(&line)?;
            let back: Response = serde_json::from_str(&line).expect("decode");
            prop_assert_eq!(protocol::encode(&back).expect("encode"), line);
        }
    }

    #[test]
    fn arbitrary_request_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Request>(&bytes);
        let _ = serde_json::from_slice::<Response>(&bytes);
    }
}

// ---------------------------------------------------------------- names into LDAP

proptest! {
    #![proptest_config(cases(512))]

    /// An escaped name is one assertion value: the filter still parses, and no `*`, `(`,
    /// `)` survives unescaped, whatever the name.
    #[test]
    fn escaped_names_stay_one_filter_value(name in any::<String>()) {
        use jupyterhub::auth::ldap::escape_filter;
        let escaped = escape_filter(&name);
        prop_assert!(!escaped.contains(['*', '(', ')', '\0']));
        let filter = format!("(uid={escaped})");
        prop_assert!(ldap3::parse_filter(&filter).is_ok(), "{filter:?}");
    }

    /// An escaped name is one RDN value: every special character is behind a backslash.
    #[test]
    fn escaped_names_stay_one_dn_value(name in any::<String>()) {
        use jupyterhub::auth::ldap::escape_rdn;
        let escaped = escape_rdn(&name);
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            prop_assert!(!",+\"<>;=\0".contains(c), "unescaped {c:?} in {escaped:?}");
            if c == '\\' {
                prop_assert!(chars.next().is_some(), "dangling escape in {escaped:?}");
            }
        }
    }
}
