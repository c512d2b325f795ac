//! Bad input never crashes the hub: malformed and random bodies, headers and paths get 4xx.
//! A stop (`systemctl restart`) loses no request of a client that had just connected.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::support::TestHub;

#[tokio::test]
async fn malformed_json_gets_the_jupyterhub_error_shape() {
    let hub = TestHub::start("", "").await;
    let token = hub.admin_token();
    let client = reqwest::Client::new();
    for body in [
        "{",
        "[1,2",
        "\u{0}",
        "{\"usernames\": 5}",
        "null",
        "\"text\"",
    ] {
        let r = client
            .post(hub.api("/users"))
            .header("Authorization", format!("token {token}"))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "{body:?}");
        let value: serde_json::Value = r.json().await.expect("json");
        assert_eq!(value["status"], 400);
        assert!(value["message"].is_string());
    }
    let r = client
        .post(hub.api("/users"))
        .header("Authorization", format!("token {token}"))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400, "invalid UTF-8 is 400, not 500");
}

#[tokio::test]
async fn random_bodies_headers_and_paths_never_cause_5xx() {
    let hub = TestHub::start("", "").await;
    let token = hub.admin_token();
    let client = reqwest::Client::new();
    let endpoints = [
        ("POST", "/users"),
        ("POST", "/users/alice"),
        ("PATCH", "/users/admin"),
        ("POST", "/users/admin/tokens"),
        ("POST", "/users/admin/activity"),
        ("POST", "/groups"),
        ("POST", "/groups/g"),
        ("POST", "/groups/g/users"),
        ("PUT", "/groups/g/properties"),
        ("DELETE", "/users/admin/server"),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 40,
        ..Config::default()
    });
    let strategy = (
        0..endpoints.len(),
        prop_oneof![
            any::<Vec<u8>>(),
            "\\PC{0,40}".prop_map(String::into_bytes),
            proptest::collection::vec(
                prop_oneof![
                    Just("{".to_string()),
                    Just("}".to_string()),
                    Just("\"usernames\":".to_string()),
                    Just("[\"x\"]".to_string()),
                    Just("null".to_string()),
                    Just(",".to_string()),
                    Just("1e999".to_string())
                ],
                0..8
            )
            .prop_map(|v| v.concat().into_bytes()),
        ],
        "[ -~]{0,20}".prop_map(String::from),
    );
    let cases: Vec<_> = (0..60)
        .map(|_| strategy.new_tree(&mut runner).expect("tree").current())
        .collect();
    for (index, body, path_noise) in cases {
        let (method, path) = endpoints[index];
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = client
            .request(method.clone(), hub.api(path))
            .header("Authorization", format!("token {token}"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert!(
            r.status().as_u16() < 500,
            "{method} {path} {body:?} -> {}",
            r.status()
        );
        let noisy = format!(
            "{}/users/{}",
            hub.api(""),
            percent_encoding::utf8_percent_encode(&path_noise, percent_encoding::NON_ALPHANUMERIC)
        );
        let r = client
            .get(&noisy)
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .expect("request");
        assert!(r.status().as_u16() < 500, "GET {noisy} -> {}", r.status());
        let r = client
            .get(hub.api("/user"))
            .header("Authorization", format!("token {path_noise}"))
            .send()
            .await
            .expect("request");
        assert!(r.status().as_u16() < 500);
    }
    let r = client.get(hub.api("/")).send().await.expect("still alive");
    assert_eq!(r.status(), 200);
}

/// A client that connected just before SIGTERM and sends its request a moment later is
/// answered, on the public port (fast path handing over to hyper) and the internal one.
#[tokio::test]
async fn a_connection_made_just_before_a_stop_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hub = TestHub::start("", "").await;
    let public = hub.url.trim_start_matches("http://").to_string();
    let internal = hub.internal_addr();
    let mut conns = Vec::new();
    for addr in [&public, &internal] {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conns.push((addr.clone(), stream));
    }
    // Accepted by the hub (not just queued by the kernel) before the signal.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    hub.terminate();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (addr, mut stream) in conns {
        let request = format!("GET /hub/api/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 200"),
            "{addr}: {read:?} {answer:?}\n{}",
            hub.log()
        );
        assert!(answer.contains("\"version\""), "{addr}: {answer}");
    }
    hub.exited(std::time::Duration::from_secs(10)).await;
}

/// Started by hand with the usual soft limit of 1024 open files, the hub raises it to the hard
/// limit: every client and proxied connection holds a descriptor.
#[tokio::test]
async fn the_hub_raises_its_soft_open_file_limit() {
    let mut hub = TestHub::prepare("", "", &[]);
    hub.open_files_soft = Some(256);
    hub.launch().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", hub.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_ne!(numbers[0], "256", "the soft limit was raised: {line}");
    assert_eq!(numbers[0], numbers[1], "soft = hard: {line}");
}
