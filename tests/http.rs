//! The node's HTTP API with a real HTTP client: health, readiness, registration (single and
//! bulk) with the admin token, shadow reads, and JSON errors for everything refused.

use doppel_tests::{
    device,
    node::{ADMIN_TOKEN, Node, Options},
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

async fn post(node: &Node, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(node.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let node = Node::start(BIN, Options::default());
    let health = reqwest::get(node.url("/healthz")).await.unwrap();
    assert_eq!(
        (health.status().as_u16(), health.text().await.unwrap()),
        (200, "ok".to_owned())
    );
    assert_eq!(
        reqwest::get(node.url("/readyz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_needs_the_admin_token() {
    let node = Node::start(BIN, Options::default());
    let (status, body) = post(&node, "/v1/things", None, json!({"name": "a"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = post(
        &node,
        "/v1/things",
        Some("not-the-token"),
        json!({"name": "a"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = post(
        &node,
        "/v1/things",
        Some(ADMIN_TOKEN),
        json!({"name": "a", "attributes": {"site": "north"}}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        (body["name"].as_str(), body["attributes"]["site"].as_str()),
        (Some("a"), Some("north"))
    );
    assert_eq!(body["token"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registrations_are_refused_with_json_errors() {
    let node = Node::start(BIN, Options::default());
    let table = [
        (json!({"name": "a/b"}), 400, "invalid_request"),
        (json!({"name": ""}), 400, "invalid_request"),
        (json!({"nom": "x"}), 400, "invalid_request"),
        (
            json!({"name": "x", "type": "NoSuchType"}),
            400,
            "type_not_found",
        ),
        (json!([1, 2]), 400, "invalid_request"),
    ];
    for (body, status, code) in table {
        let (got, reply) = post(&node, "/v1/things", Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(
            (got, reply["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    post(
        &node,
        "/v1/things",
        Some(ADMIN_TOKEN),
        json!({"name": "dup"}),
    )
    .await;
    let (status, reply) = post(
        &node,
        "/v1/things",
        Some(ADMIN_TOKEN),
        json!({"name": "dup"}),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (409, Some("thing_exists"))
    );
    let garbage = reqwest::Client::new()
        .post(node.url("/v1/things"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_registration_is_all_or_nothing() {
    let node = Node::start(BIN, Options::default());
    let things: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("fleet-{i}")}))
        .collect();
    let (status, body) = post(
        &node,
        "/v1/things/bulk",
        Some(ADMIN_TOKEN),
        json!({"things": things}),
    )
    .await;
    assert_eq!(status, 201);
    let registered = body["things"].as_array().unwrap();
    assert_eq!(registered.len(), 500);
    let token = registered[42]["token"].as_str().unwrap();
    assert!(
        device::connect(node.mqtt(), "fleet-42", token)
            .await
            .is_ok(),
        "bulk tokens work"
    );

    let (status, reply) = post(
        &node,
        "/v1/things/bulk",
        Some(ADMIN_TOKEN),
        json!({"things": [{"name": "new-1"}, {"name": "fleet-3"}]}),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (409, Some("thing_exists"))
    );
    let (status, _) = post(
        &node,
        "/v1/things/bulk",
        Some(ADMIN_TOKEN),
        json!({"things": [{"name": "new-1"}]}),
    )
    .await;
    assert_eq!(status, 201, "nothing of the refused batch was registered");
    let (status, _) = post(
        &node,
        "/v1/things/bulk",
        Some(ADMIN_TOKEN),
        json!({"things": [{"name": "x"}, {"name": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &node,
        "/v1/things/bulk",
        None,
        json!({"things": [{"name": "y"}]}),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_reads_answer_404_for_unknown_things_and_shadows() {
    let node = Node::start(BIN, Options::default());
    let (status, body) = node.shadow("nobody", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("thing \"nobody\" not found"))
    );
    node.register("known").await;
    let (status, body) = node.shadow("known", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("No shadow exists with name: known"))
    );
    let (status, _) = node.shadow("known", Some("bad/name")).await;
    assert_eq!(status, 400);
    let response = node.get("/v1/things/a%2Fb/shadow").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shadow_carries_its_version_as_etag() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("tagged").await;
    let mut d = device::connect(node.mqtt(), "tagged", &token)
        .await
        .unwrap();
    d.subscribe("$aws/things/tagged/shadow/update/accepted")
        .await;
    for n in 0..3 {
        d.request(
            "$aws/things/tagged/shadow/update",
            &json!({"state": {"reported": {"n": n}}}),
            "$aws/things/tagged/shadow/update/accepted",
        )
        .await;
    }
    let response = node.get("/v1/things/tagged/shadow").await;
    assert_eq!(response.headers()["etag"], "\"3\"");
    assert_eq!(response.json::<Value>().await.unwrap()["version"], 3);
}
