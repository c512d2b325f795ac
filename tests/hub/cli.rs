//! The command line: config checks, generate-config, the cookie-secret check, upgrade-db.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{BIN, TestHub, call, config_text};

#[test]
fn version_and_generate_config() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("5.3.0"));
    let out = Command::new(BIN)
        .arg("generate-config")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    for key in [
        "[JupyterHub]",
        "#port = 8000",
        "[Spawner]",
        "#mem_limit",
        "[Authenticator]",
        "#admin_users",
    ] {
        assert!(text.contains(key), "generate-config lacks {key}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("generated.toml");
    std::fs::write(&path, &text).expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[JupyterHub]\nport = 8000\n\n[Spawner]\nmem_limt = \"2G\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 5") && err.contains("mem_limt"),
        "{err}"
    );
    std::fs::write(&path, "[Spawner]\ncpu_limit = -1\n").expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cpu_limit")
            || String::from_utf8_lossy(&out.stderr).contains("CPU")
    );
    // Serving with a bad config refuses to start, with the same message.
    let out = Command::new(BIN)
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}

/// `freeze_idle_after` is refused with the local spawner, and by `check-config` on a host
/// whose cgroups cannot freeze (no unified cgroup v2 hierarchy), saying why; accepted where
/// they can. Which of the two this host is decides the expectation; both are checked.
#[test]
fn freeze_idle_after_is_checked_against_the_spawner_and_the_host() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jupyterhub.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).expect("write");
        Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run")
    };
    let out = check(
        "[JupyterHub]\nspawner_class = \"local\"\n[SystemdSpawner]\nfreeze_idle_after = 60\n",
    );
    assert!(!out.status.success(), "accepted with the local spawner");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("freeze_idle_after") && err.contains("only the systemd spawner"),
        "{err}"
    );
    // Off (0) is fine anywhere.
    let out =
        check("[JupyterHub]\nspawner_class = \"local\"\n[SystemdSpawner]\nfreeze_idle_after = 0\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(
        "[JupyterHub]\nspawner_class = \"systemd\"\n[SystemdSpawner]\nfreeze_idle_after = 60\n",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert!(out.status.success(), "refused on a cgroup v2 host: {said}");
    } else {
        assert!(
            !out.status.success(),
            "accepted on a host that cannot freeze: {said}"
        );
        assert!(
            said.contains("SystemdSpawner.freeze_idle_after: this host cannot freeze servers")
                && said.contains("not the unified cgroup v2 hierarchy"),
            "{said}"
        );
    }
}

/// Options upstream has and this hub does not build yet are refused, naming the key, rather
/// than accepted and ignored.
#[test]
fn options_not_built_yet_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jupyterhub.toml");
    for (text, key) in [
        (
            "[JupyterHub]\nsubdomain_host = \"https://hub.example.org\"\n",
            "subdomain_host",
        ),
        ("[Authenticator]\nauto_login = true\n", "auto_login"),
        (
            "[JupyterHub]\ndb_url = \"postgresql://hub@db/jupyterhub\"\n",
            "db_url",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let out = Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(err.contains(key), "{key}: {err}");
    }
    // SQLite URLs and plain paths are fine.
    for url in [
        "sqlite:///jupyterhub.sqlite",
        "/var/lib/jupyterhub/hub.sqlite",
    ] {
        std::fs::write(&path, format!("[JupyterHub]\ndb_url = \"{url}\"\n")).expect("write");
        let out = Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Upstream's `init_users`: users the authenticator no longer accepts are kept (and logged)
/// unless `delete_invalid_users`, then deleted at start-up.
#[tokio::test]
async fn delete_invalid_users_at_start_up() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    for name in ["alice", "carol"] {
        let (status, body) = call(&hub, "POST", &format!("/users/{name}"), &admin, None).await;
        assert_eq!(status, 201, "{body}");
    }
    hub.stop();
    // Only names starting with a or the admin are valid now.
    let text = std::fs::read_to_string(&hub.config).expect("config");
    let text = text.replace(
        "[Authenticator]\n",
        "[Authenticator]\nusername_pattern = \"(a.*)\"\n",
    );
    std::fs::write(&hub.config, &text).expect("write");
    hub.launch().await;
    let (status, _) = call(&hub, "GET", "/users/carol", &admin, None).await;
    assert_eq!(status, 200, "kept without delete_invalid_users");
    assert!(hub.log().contains("delete_invalid_users"), "{}", hub.log());
    hub.stop();
    let text = text.replace(
        "[Authenticator]\n",
        "[Authenticator]\ndelete_invalid_users = true\n",
    );
    std::fs::write(&hub.config, &text).expect("write");
    hub.launch().await;
    let (status, _) = call(&hub, "GET", "/users/carol", &admin, None).await;
    assert_eq!(status, 404, "carol was not deleted:\n{}", hub.log());
    let (status, _) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(status, 200, "a valid user was deleted");
    let (status, _) = call(&hub, "GET", "/users/admin", &admin, None).await;
    assert_eq!(status, 200, "the admin was deleted");
}

#[test]
fn cookie_secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("jupyterhub.toml");
    std::fs::write(&config, config_text(0, 0, dir.path(), "", "")).expect("write");
    let secret = dir.path().join("cookie_secret");
    std::fs::write(
        &secret,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(BIN)
        .arg("-f")
        .arg(&config)
        .env_remove("JPY_COOKIE_SECRET")
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "started with a world-readable secret"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cookie secret") && err.contains("chmod 600"),
        "{err}"
    );
}

#[tokio::test]
async fn cookie_secret_is_generated_0600() {
    let hub = TestHub::start("", "").await;
    let mode = std::fs::metadata(hub.dir.path().join("cookie_secret"))
        .expect("secret")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn upgrade_db_migrates_an_old_schema_after_a_backup() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(serde_json::json!({"usernames": ["alice"]})),
    )
    .await;
    hub.stop();
    // Turn the database back into schema version 1 (as written by an older release).
    let db = hub.dir.path().join("jupyterhub.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE spawners_v1 AS SELECT id, user_id, name, state, user_options, url, started, last_activity FROM spawners;
             DROP TABLE spawners;
             CREATE TABLE spawners (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
               name TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT '{}', user_options TEXT NOT NULL DEFAULT '{}',
               url TEXT, started INTEGER, last_activity INTEGER, UNIQUE (user_id, name));
             INSERT INTO spawners SELECT * FROM spawners_v1; DROP TABLE spawners_v1;
             ALTER TABLE oauth_clients DROP COLUMN owner_user;
             ALTER TABLE oauth_clients DROP COLUMN owner_server;
             ALTER TABLE oauth_clients DROP COLUMN owner_service;
             ALTER TABLE services DROP COLUMN from_config;
             ALTER TABLE services DROP COLUMN spec;
             DROP TABLE share_codes;
             DROP TABLE shares;
             DROP TRIGGER first_use_passwords_follow_rename;
             DROP TRIGGER first_use_passwords_go_with_user;
             DROP TABLE first_use_passwords;
             PRAGMA user_version = 1;",
        )
        .expect("downgrade");
    }
    let out = Command::new(BIN)
        .arg("-f")
        .arg(&hub.config)
        .output()
        .expect("run");
    assert!(!out.status.success(), "hub must refuse an old schema");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upgrade-db"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hub.cli(&["upgrade-db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backups: Vec<_> = std::fs::read_dir(hub.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "one timestamped backup");
    let version: i64 = rusqlite::Connection::open(backups[0].path())
        .expect("backup")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 1, "the backup holds the old schema");
    hub.launch().await;
    let (status, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(status, 200, "data survived the upgrade: {alice}");
}

/// Python JupyterHub's database (Debian's `jupyterhub` package leaves one behind) is named as
/// such, by the hub and by `upgrade-db`, and left untouched.
#[tokio::test]
async fn a_python_jupyterhub_database_is_refused_by_name() {
    let mut hub = TestHub::start("", "").await;
    hub.stop();
    let db = hub.dir.path().join("jupyterhub.sqlite");
    std::fs::remove_file(&db).expect("remove ours");
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
             INSERT INTO alembic_version VALUES ('4621fec11365');
             CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(255), admin BOOLEAN);
             INSERT INTO users (name, admin) VALUES ('alice', 1);",
        )
        .expect("a Python JupyterHub schema");
    }
    let before = std::fs::read(&db).expect("read");
    let out = Command::new(BIN)
        .arg("-f")
        .arg(&hub.config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Python JupyterHub's database (alembic revision 4621fec11365)"),
        "{stderr}"
    );
    let out = hub.cli(&["upgrade-db"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Python JupyterHub's database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&db).expect("read") == before,
        "the file was changed"
    );
}
