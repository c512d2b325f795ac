//! The database's filesystem fills up (a small tmpfs): writes are refused with a clear 503
//! while reads go on, every write the hub acknowledged survives a restart, and writes work
//! again once space is freed. Root only: it mounts the tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::{TestHub, call};

/// A tmpfs mounted for the test's life (unmounted on drop, also on failure).
struct Tmpfs(tempfile::TempDir);
impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fill the filesystem at `dir` to the last byte; the filler is returned so it can be removed.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    while file.write_all(&[0]).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    crate::support::require_root("the disk-full test mounts a small tmpfs for the database");
    let fs = Tmpfs::mount("4m");
    let db = fs.path().join("jupyterhub.sqlite");
    let mut hub = TestHub::start_with_db(&db).await;
    let admin = hub.admin_token();
    let (status, _) = call(&hub, "POST", "/users/before", &admin, None).await;
    assert_eq!(status, 201);

    let filler = fill(fs.path());
    // Until the database cannot grow any more, some writes may still fit in its free pages:
    // whatever was answered 2xx must be there after the restart.
    let mut acknowledged = vec!["before".to_string()];
    let mut refusal = None;
    for i in 0..2000 {
        let name = format!("during{i}");
        let body = json!({"usernames": [name], "admin": false});
        let (status, answer) = call(&hub, "POST", "/users", &admin, Some(body)).await;
        if status.is_success() {
            acknowledged.push(name);
            continue;
        }
        assert_eq!(status, 503, "{answer}\n{}", hub.log());
        assert_eq!(answer["status"], 503, "{answer}");
        refusal = Some(answer["message"].as_str().expect("message").to_owned());
        break;
    }
    let refusal = refusal.expect("no write was refused on a full disk");
    assert!(refusal.contains("disk is full"), "{refusal}");
    // Reads go on, and so does the hub.
    let (status, users) = call(&hub, "GET", "/users", &admin, None).await;
    assert_eq!(status, 200, "{users}");
    let (status, _) = call(&hub, "GET", "/", &admin, None).await;
    assert_eq!(status, 200);
    // A refused write left nothing behind: the name is free once there is room again.
    std::fs::remove_file(&filler).expect("free the space");
    let (status, body) = call(&hub, "POST", "/users/after", &admin, None).await;
    assert_eq!(status, 201, "{body}");
    acknowledged.push("after".into());

    hub.restart().await;
    let (status, users) = call(&hub, "GET", "/users?limit=10000", &admin, None).await;
    assert_eq!(status, 200, "{users}");
    let names: Vec<&str> = users
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    for name in &acknowledged {
        assert!(names.contains(&name.as_str()), "{name} lost: {names:?}");
    }
    let refused_name = format!("during{}", acknowledged.len() - 2);
    assert!(
        !names.contains(&refused_name.as_str()),
        "the refused {refused_name} was kept"
    );
    assert!(!hub.log().contains("panicked"), "{}", hub.log());
}
