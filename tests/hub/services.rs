//! `/hub/api/services`: upstream's service model, filtered by the caller's scopes.

use serde_json::json;

use crate::support::{TestHub, call};

const SERVICES: &str = r#"
[[JupyterHub.services]]
name = "culler"
api_token = "culler-secret-token"

[[JupyterHub.services]]
name = "grader"
url = "http://127.0.0.1:10101"
admin = true
info = { course = "physics" }

[[JupyterHub.load_roles]]
name = "culler-role"
scopes = ["list:users"]
services = ["culler"]
"#;

#[tokio::test]
async fn service_models_show_roles_and_only_what_the_scopes_allow() {
    let hub = TestHub::start(SERVICES, "").await;
    let admin = hub.admin_token();
    let (status, services) = call(&hub, "GET", "/services", &admin, None).await;
    assert_eq!(status, 200, "{services}");
    // As observed on a live upstream hub for the same config.
    assert_eq!(
        services["culler"],
        json!({"info": {}, "name": "culler", "command": [], "kind": "service", "admin": false,
               "pid": 0, "prefix": "", "roles": ["culler-role"], "url": "", "display": true})
    );
    assert_eq!(services["grader"]["roles"], json!(["admin"]));
    assert_eq!(services["grader"]["prefix"], "/services/grader/");
    assert_eq!(services["grader"]["info"], json!({"course": "physics"}));

    let (status, one) = call(&hub, "GET", "/services/culler", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(one, services["culler"]);
    let (status, body) = call(&hub, "GET", "/services/nope", &admin, None).await;
    assert_eq!(status, 404, "{body}");

    // read:roles:services shows the roles and nothing else of the model.
    let roles_only = hub.token("admin", &["read:roles:services"]);
    let (status, one) = call(&hub, "GET", "/services/culler", &roles_only, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one,
        json!({"kind": "service", "name": "culler", "admin": false, "roles": ["culler-role"]})
    );
    // read:services:name (through list:services) shows the name only.
    let names = hub.token("admin", &["list:services"]);
    let (status, listed) = call(&hub, "GET", "/services", &names, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["grader"],
        json!({"kind": "service", "name": "grader", "admin": true})
    );
    // A plain user holds none of the service scopes.
    let alice = hub.token("alice", &[]);
    let (status, _) = call(&hub, "GET", "/services/culler", &alice, None).await;
    assert_eq!(status, 403);
}
