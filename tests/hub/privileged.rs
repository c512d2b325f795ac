//! The privileged helper over its unix socket: PAM checks for an unprivileged hub, refusal
//! of unit starts for system accounts and foreign commands, and of callers other than the
//! hub's account (root only: it starts the real helper).

use std::process::{Command, Stdio};
use std::time::Duration;

use jupyterhub::privileged::protocol::AccountOutcome;
use jupyterhub::privileged::{Request, Response, call};
use jupyterhub::spawner::{LimitsSpec, SpawnRequest};

struct Helper(std::process::Child);
impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real helper on `socket`, once it listens.
fn start_helper(socket: &std::path::Path, config: &std::path::Path) -> Helper {
    start_helper_under(&[], socket, config)
}

/// The real helper, run by the command `wrapper` (which ends by running its arguments), on
/// `socket`, once it listens.
fn start_helper_under(
    wrapper: &[&str],
    socket: &std::path::Path,
    config: &std::path::Path,
) -> Helper {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(crate::support::BIN);
            command
        }
        None => Command::new(crate::support::BIN),
    };
    let mut child = command
        .args(["privileged-helper", "--allowed-user", "jh-e2e", "--socket"])
        .arg(socket)
        .arg("-f")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper");
    let stderr = child.stderr.take().expect("stderr");
    let helper = Helper(child);
    // Logged once its socket listens.
    crate::support::wait_for_lines(
        stderr,
        "privileged helper ready",
        1,
        Duration::from_secs(30),
    );
    helper
}

fn spawn_request(system_user: &str, argv: &[&str]) -> SpawnRequest {
    SpawnRequest {
        user: system_user.into(),
        server_name: String::new(),
        system_user: system_user.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        working_dir: None,
        ip: "127.0.0.1".into(),
        port: 40000,
        limits: LimitsSpec::default(),
        groups: Vec::new(),
        profile: None,
    }
}

#[tokio::test]
async fn helper_checks_pam_and_refuses_what_it_must() {
    crate::pam::prepare();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("helper.toml");
    std::fs::write(&config, "[PAMAuthenticator]\nservice = \"jupyterhub-test\"\n[Spawner]\ncmd = [\"/opt/jupyterhub/user-env/bin/jupyterhub-singleuser\"]\n").expect("config");
    let socket = dir.path().join("helper.sock");
    let _helper = start_helper(&socket, &config);
    let check = |password: &str| Request::CheckPam {
        user: crate::pam::USER.into(),
        password: password.into(),
    };
    match call(&socket, &check(crate::pam::PASSWORD))
        .await
        .expect("call")
    {
        Response::Pam { valid } => assert!(valid, "the right password"),
        other => panic!("{other:?}"),
    }
    match call(&socket, &check("wrong")).await.expect("call") {
        Response::Pam { valid } => assert!(!valid, "a wrong password"),
        other => panic!("{other:?}"),
    }
    let configured = ["/opt/jupyterhub/user-env/bin/jupyterhub-singleuser"];
    for (request, why) in [
        (spawn_request("root", &configured), "system account"),
        (
            spawn_request("jh-e2e", &["/bin/sh", "-c", "id"]),
            "not the configured",
        ),
    ] {
        match call(
            &socket,
            &Request::StartUnit {
                request: Box::new(request),
            },
        )
        .await
        .expect("call")
        {
            Response::Error { message } => assert!(message.contains(why), "{message}"),
            other => panic!("expected a refusal ({why}), got {other:?}"),
        }
    }
    // Thawing (for freeze_idle_after) only when the helper's own config freezes, and only a
    // user server's unit: ThawUnit is a start to systemd.
    let thaw = |unit: &str| Request::ThawUnit { unit: unit.into() };
    match call(&socket, &thaw("jupyter-jh\\x2de2e-singleuser.service"))
        .await
        .expect("call")
    {
        Response::Error { message } => {
            assert!(message.contains("freeze_idle_after is off"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let freezing = dir.path().join("freezing.toml");
    std::fs::write(&freezing, "[SystemdSpawner]\nfreeze_idle_after = 60\n").expect("config");
    let freezing_socket = dir.path().join("freezing.sock");
    let _freezing_helper = start_helper(&freezing_socket, &freezing);
    for unit in [
        "sshd.service",
        "jupyterhub-service-x.service",
        "jupyter-.service",
    ] {
        match call(&freezing_socket, &thaw(unit)).await.expect("call") {
            Response::Error { message } => {
                assert!(
                    message.contains("not a user server's unit"),
                    "{unit}: {message}"
                )
            }
            other => panic!("{unit}: expected a refusal, got {other:?}"),
        }
    }
    // Another account may not use the helper at all.
    let script = format!(
        "import socket,json\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({path:?})\n s.sendall(json.dumps({{'op':'check_pam','user':'x','password':'y'}}).encode()+b'\\n')\n print(s.recv(4096).decode())\nexcept OSError as e:\n print('refused', e)\n",
        path = socket.display().to_string()
    );
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", &script])
        .output()
        .expect("runuser");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused") || text.contains("may not use"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("\"pam\""), "nobody got an answer: {text}");
}

/// Accounts the helper test creates, removed with their homes on drop (also on failure).
struct Accounts(&'static [&'static str]);
impl Drop for Accounts {
    fn drop(&mut self) {
        for name in self.0 {
            let _ = Command::new("userdel")
                .args(["--remove", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[tokio::test]
async fn helper_creates_accounts_only_as_its_config_says() {
    const USER: &str = "jh-acct-helper";
    let _accounts = Accounts(&[USER]);
    assert!(
        nix::unistd::User::from_name(USER).ok().flatten().is_none(),
        "{USER} exists before the test"
    );
    let dir = tempfile::tempdir().expect("dir");
    let start = |text: &str| {
        let config = dir.path().join("helper.toml");
        std::fs::write(&config, text).expect("config");
        let socket = dir.path().join("helper.sock");
        (start_helper(&socket, &config), socket)
    };
    let create = |user: &str| Request::CreateAccount { user: user.into() };
    // The helper's own config does not create accounts: refused, whatever the hub thinks.
    let (helper, socket) = start("");
    match call(&socket, &create(USER)).await.expect("call") {
        Response::Error { message } => {
            assert!(message.contains("create_system_users"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(nix::unistd::User::from_name(USER).ok().flatten().is_none());
    drop(helper);

    let (_helper, socket) = start("[PAMAuthenticator]\ncreate_system_users = true\n");
    match call(&socket, &create(USER)).await.expect("call") {
        Response::Account { outcome } => assert_eq!(outcome, AccountOutcome::Created),
        other => panic!("{other:?}"),
    }
    let account = nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .expect("the account exists");
    assert!(
        account.dir.is_dir(),
        "{} was created",
        account.dir.display()
    );
    match call(&socket, &create(USER)).await.expect("call") {
        Response::Account { outcome } => assert_eq!(outcome, AccountOutcome::Existed),
        other => panic!("{other:?}"),
    }
    // Existing accounts outside the login range, and names useradd must not see.
    for (user, why) in [
        ("daemon", "outside the range"),
        ("root", "outside the range"),
        ("-rf", "no valid system account name"),
        ("Admin", "no valid system account name"),
    ] {
        match call(&socket, &create(user)).await.expect("call") {
            Response::Error { message } => assert!(message.contains(why), "{user}: {message}"),
            other => panic!("{user}: {other:?}"),
        }
    }
}

/// The helper killed in the middle of a request (a PAM check, which pam_unix holds for ~2 s
/// on a wrong password): the caller gets a clear error at once instead of waiting, and the
/// next helper on the same socket (as systemd restarts it) answers.
#[tokio::test]
async fn a_helper_killed_mid_request_is_reported_and_its_successor_answers() {
    crate::pam::prepare();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("helper.toml");
    std::fs::write(
        &config,
        "[PAMAuthenticator]\nservice = \"jupyterhub-test\"\n",
    )
    .expect("config");
    let socket = dir.path().join("helper.sock");
    let mut helper = start_helper(&socket, &config);
    let request = Request::CheckPam {
        user: crate::pam::USER.into(),
        password: "wrong".into(),
    };
    let pending = {
        let socket = socket.clone();
        tokio::spawn(async move { call(&socket, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the PAM check answered before the kill"
    );
    helper.0.kill().expect("kill -9 the helper");
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the caller still waits on a dead helper")
        .expect("task");
    let error = outcome
        .expect_err("an answer from a killed helper")
        .to_string();
    assert!(
        error.contains("closed the connection without answering"),
        "{error}"
    );

    helper.0.wait().expect("reap the helper");
    // Nobody listening (the socket file is left behind): the error names the socket.
    let check = |password: &str| Request::CheckPam {
        user: crate::pam::USER.into(),
        password: password.into(),
    };
    let error = call(&socket, &check(crate::pam::PASSWORD))
        .await
        .expect_err("no helper runs")
        .to_string();
    assert!(
        error.contains("cannot reach the privileged helper"),
        "{error}"
    );
    assert!(error.contains(&socket.display().to_string()), "{error}");

    drop(helper);
    let _successor = start_helper(&socket, &config);
    match call(&socket, &check(crate::pam::PASSWORD))
        .await
        .expect("call")
    {
        Response::Pam { valid } => assert!(valid, "the right password, to the new helper"),
        other => panic!("{other:?}"),
    }
}

/// A helper whose /etc is read-only (as under a unit's `ProtectSystem=full`) says so instead
/// of useradd's "cannot lock /etc/passwd; try again later".
#[tokio::test]
async fn a_read_only_etc_is_named_when_an_account_cannot_be_made() {
    crate::support::require_root("the test mounts /etc read-only in a namespace of its own");
    const USER: &str = "jh-acct-readonly";
    let _accounts = Accounts(&[USER]);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("helper.toml");
    std::fs::write(&config, "[PAMAuthenticator]\ncreate_system_users = true\n").expect("config");
    let socket = dir.path().join("helper.sock");
    let read_only_etc =
        r#"mount --bind /etc /etc && mount -o remount,bind,ro /etc && exec "$0" "$@""#;
    let unshare = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
    ];
    let wrapper: Vec<&str> = unshare.into_iter().chain([read_only_etc]).collect();
    let _helper = start_helper_under(&wrapper, &socket, &config);
    let request = Request::CreateAccount { user: USER.into() };
    match call(&socket, &request).await.expect("call") {
        Response::Error { message } => {
            assert!(message.contains("/etc is read-only"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(nix::unistd::User::from_name(USER).ok().flatten().is_none());
}
