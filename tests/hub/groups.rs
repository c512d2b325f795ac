//! `/hub/api/groups`.

use serde_json::json;

use crate::support::{TestHub, call};

#[tokio::test]
async fn group_lifecycle() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice", "bob"]})),
    )
    .await;
    let (status, group) = call(
        &hub,
        "POST",
        "/groups/physics",
        &admin,
        Some(json!({"users": ["alice"]})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["users"], json!(["alice"]));
    assert_eq!(group["kind"], "group");
    let (status, _) = call(&hub, "POST", "/groups/physics", &admin, None).await;
    assert_eq!(status, 409);
    let (status, group) = call(
        &hub,
        "POST",
        "/groups/physics/users",
        &admin,
        Some(json!({"users": ["bob"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(group["users"], json!(["alice", "bob"]));
    let (status, body) = call(
        &hub,
        "POST",
        "/groups/physics/users",
        &admin,
        Some(json!({"users": ["nobody"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, group) = call(
        &hub,
        "DELETE",
        "/groups/physics/users",
        &admin,
        Some(json!({"users": ["alice"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(group["users"], json!(["bob"]));
    let (status, group) = call(
        &hub,
        "PUT",
        "/groups/physics/properties",
        &admin,
        Some(json!({"course": "101"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(group["properties"], json!({"course": "101"}));
    let (status, _) = call(
        &hub,
        "PUT",
        "/groups/physics/properties",
        &admin,
        Some(json!([1, 2])),
    )
    .await;
    assert_eq!(status, 400);
    let (status, created) = call(
        &hub,
        "POST",
        "/groups",
        &admin,
        Some(json!({"groups": ["a", "b"], "users": ["alice"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, list) = call(&hub, "GET", "/groups", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(3));
    let (_, bob) = call(&hub, "GET", "/users/bob", &admin, None).await;
    assert_eq!(bob["groups"], json!(["physics"]));
    let alice = hub.token("alice", &[]);
    let (status, _) = call(&hub, "GET", "/groups", &alice, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&hub, "DELETE", "/groups/physics", &alice, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&hub, "DELETE", "/groups/physics", &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&hub, "GET", "/groups/physics", &admin, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn groups_and_roles_from_config() {
    let hub = TestHub::start(
        "[[JupyterHub.load_roles]]\nname = \"readers\"\nscopes = [\"list:users\", \"read:users\"]\ngroups = [\"staff\"]\n\
         [JupyterHub.load_groups.staff]\nusers = [\"carol\"]\nproperties = { level = 3 }\n",
        "",
    )
    .await;
    let carol = hub.token("carol", &[]);
    let (status, users) = call(&hub, "GET", "/users", &carol, None).await;
    assert_eq!(status, 200, "group role grants list:users: {users}");
    let admin = hub.admin_token();
    let (_, staff) = call(&hub, "GET", "/groups/staff", &admin, None).await;
    assert_eq!(staff["properties"], json!({"level": 3}));
    assert_eq!(staff["roles"], json!(["readers"]));
}
