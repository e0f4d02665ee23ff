//! The app API with a real HTTP client against a running node: roles and scopes, things and
//! types, conditional shadow writes, decommissioning, keys, audit, telemetry history, metrics
//! and the OpenAPI document.

use doppel_tests::{
    api::Api,
    device::{self, WAIT},
    eventually,
    node::{Node, Options},
};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

async fn pump_and_valve(admin: &Api) {
    admin.put_type("Pump", json!({"schemas": {"reported": {"type": "object", "properties": {"rpm": {"type": "number"}}}}})).await;
    admin.put_type("Valve", json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_are_401_and_roles_are_403() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.register("t-1", None).await;
    let anonymous = Api::with(&node, None);
    let forged = Api::with(&node, Some("dk_0000_beef"));
    for (method, path) in [
        (Method::GET, "/v1/things"),
        (Method::GET, "/v1/things/t-1/shadow"),
        (Method::POST, "/v1/things"),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/audit"),
    ] {
        for api in [&anonymous, &forged] {
            let (status, body, _) = api
                .send(method.clone(), path, Some(json!({"name": "x"})), &[])
                .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("unauthenticated")),
                "{method} {path}"
            );
        }
    }
    let viewer = Api::with(&node, Some(&admin.create_key("viewer", None).await));
    let operator = Api::with(&node, Some(&admin.create_key("operator", None).await));
    assert_eq!(viewer.get("/v1/things/t-1").await.0, 200);
    assert_eq!(viewer.get("/v1/things").await.0, 200);
    let desired = json!({"state": {"desired": {"speed": 1}}});
    let (status, body) = viewer.patch("/v1/things/t-1/shadow", desired.clone()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(viewer.post("/v1/things", json!({"name": "v"})).await.0, 403);
    assert_eq!(
        viewer.post("/v1/keys", json!({"role": "viewer"})).await.0,
        403
    );
    assert_eq!(
        operator
            .patch("/v1/things/t-1/shadow", desired.clone())
            .await
            .0,
        200
    );
    let reported = json!({"state": {"reported": {"speed": 1}}});
    assert_eq!(
        operator
            .patch("/v1/things/t-1/shadow", reported.clone())
            .await
            .0,
        403,
        "operators write desired only"
    );
    assert_eq!(
        operator.post("/v1/things", json!({"name": "o"})).await.0,
        403
    );
    assert_eq!(operator.delete("/v1/things/t-1/shadow").await.0, 403);
    assert_eq!(operator.put("/v1/types/X", json!({})).await.0, 403);
    assert_eq!(admin.patch("/v1/things/t-1/shadow", reported).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_scoped_to_types_sees_only_those_things() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    pump_and_valve(&admin).await;
    admin.register("p-1", Some("Pump")).await;
    admin.register("v-1", Some("Valve")).await;
    admin.register("u-1", None).await;
    let scoped = Api::with(
        &node,
        Some(&admin.create_key("admin", Some(&["Pump"])).await),
    );
    let (_, page) = scoped.get("/v1/things").await;
    let names: Vec<&str> = page["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p-1"]);
    for path in [
        "/v1/things/v-1",
        "/v1/things/v-1/shadow",
        "/v1/things/v-1/telemetry",
        "/v1/things/u-1",
    ] {
        assert_eq!(
            scoped.get(path).await.0,
            404,
            "{path} is invisible, not forbidden"
        );
    }
    assert_eq!(scoped.get("/v1/things/p-1").await.0, 200);
    assert_eq!(
        scoped
            .post("/v1/things", json!({"name": "v-2", "type": "Valve"}))
            .await
            .0,
        403
    );
    assert_eq!(
        scoped
            .post("/v1/things", json!({"name": "p-2", "type": "Pump"}))
            .await
            .0,
        201
    );
    assert_eq!(scoped.delete("/v1/things/v-1").await.0, 404);
    let (_, types) = scoped.get("/v1/types").await;
    assert_eq!(types["types"].as_array().unwrap().len(), 1);
    assert_eq!(scoped.get("/v1/types/Valve").await.0, 404);
    assert_eq!(
        scoped
            .post("/v1/keys", json!({"role": "viewer", "types": ["Valve"]}))
            .await
            .0,
        403,
        "no wider than its own scope"
    );
    assert_eq!(
        scoped.get("/v1/audit").await.0,
        403,
        "the audit log is for unscoped admins"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_makes_a_shadow_write_conditional() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.register("cond", None).await;
    let change = |v: i32| json!({"state": {"desired": {"v": v}}});
    let (status, _, headers) = admin
        .send(
            Method::PATCH,
            "/v1/things/cond/shadow",
            Some(change(1)),
            &[],
        )
        .await;
    assert_eq!((status, headers["etag"].to_str().unwrap()), (200, "\"1\""));
    let (status, _, headers) = admin
        .send(
            Method::PATCH,
            "/v1/things/cond/shadow",
            Some(change(2)),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!((status, headers["etag"].to_str().unwrap()), (200, "\"2\""));
    let (status, body, _) = admin
        .send(
            Method::PATCH,
            "/v1/things/cond/shadow",
            Some(change(3)),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    let (_, doc) = admin.get("/v1/things/cond/shadow").await;
    assert_eq!(
        (
            doc["version"].as_u64(),
            doc["state"]["desired"]["v"].as_i64()
        ),
        (Some(2), Some(2)),
        "the stale write changed nothing"
    );
    let (status, _) = admin
        .patch(
            "/v1/things/cond/shadow",
            json!({"state": {"desired": {"v": 4}}, "version": 1}),
        )
        .await;
    assert_eq!(
        status, 409,
        "a version in the body is AWS's conflict, not a precondition"
    );
    let (status, _, _) = admin
        .send(
            Method::DELETE,
            "/v1/things/cond/shadow",
            None,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 412);
    let (status, _, _) = admin
        .send(
            Method::DELETE,
            "/v1/things/cond/shadow",
            None,
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.get("/v1/things/cond/shadow").await.0, 404);
    assert_eq!(
        admin
            .send(
                Method::PATCH,
                "/v1/things/cond/shadow",
                Some(change(1)),
                &[("if-match", "nope")]
            )
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn desired_state_set_over_http_reaches_the_device_as_a_delta() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("fan-1", None).await;
    let mut d = device::connect(node.mqtt(), "fan-1", &token).await.unwrap();
    d.subscribe("$aws/things/fan-1/shadow/update/#").await;
    let operator = Api::with(&node, Some(&admin.create_key("operator", None).await));
    let (status, accepted) = operator
        .patch(
            "/v1/things/fan-1/shadow",
            json!({"state": {"desired": {"speed": 3}}, "clientToken": "app"}),
        )
        .await;
    assert_eq!((status, accepted["version"].as_u64()), (200, Some(1)));
    let seen = d
        .message_on("$aws/things/fan-1/shadow/update/accepted")
        .await;
    assert_eq!(seen["clientToken"], "app");
    let delta = d.message_on("$aws/things/fan-1/shadow/update/delta").await;
    assert_eq!(delta["state"], json!({"speed": 3}));
}

#[tokio::test(flavor = "multi_thread")]
async fn decommissioning_revokes_the_token_and_disconnects_the_device_at_once() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("old-1", None).await;
    let mut d = device::connect(node.mqtt(), "old-1", &token).await.unwrap();
    d.subscribe("$aws/things/old-1/shadow/update/accepted")
        .await;
    d.request(
        "$aws/things/old-1/shadow/update",
        &json!({"state": {"reported": {"a": 1}}}),
        "$aws/things/old-1/shadow/update/accepted",
    )
    .await;
    assert_eq!(admin.delete("/v1/things/old-1").await.0, 204);
    d.closed().await;
    assert!(
        device::connect(node.mqtt(), "old-1", &token).await.is_err(),
        "the token is revoked"
    );
    assert_eq!(admin.get("/v1/things/old-1").await.0, 404);
    assert_eq!(admin.get("/v1/things/old-1/shadow").await.0, 404);
    assert_eq!(admin.delete("/v1/things/old-1").await.0, 404);
    // The name can be registered again, with a fresh twin.
    let token = admin.register("old-1", None).await;
    let mut d = device::connect(node.mqtt(), "old-1", &token).await.unwrap();
    d.subscribe("$aws/things/old-1/shadow/get/+").await;
    let r = d
        .request(
            "$aws/things/old-1/shadow/get",
            &json!({}),
            "$aws/things/old-1/shadow/get/rejected",
        )
        .await;
    assert_eq!(r["code"], 404, "nothing of the old twin survives");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_types_carry_schemas_that_twins_apply_at_once() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    pump_and_valve(&admin).await;
    let (status, t) = admin.get("/v1/types/Pump").await;
    assert_eq!((status, t["name"].as_str()), (200, Some("Pump")));
    assert_eq!(
        admin
            .put(
                "/v1/types/Bad",
                json!({"schemas": {"reported": {"type": 12}}})
            )
            .await
            .0,
        400
    );
    assert_eq!(
        admin.put("/v1/types/Bad", json!({"schema": {}})).await.0,
        400,
        "unknown fields are refused"
    );
    let token = admin.register("p-9", Some("Pump")).await;
    let mut d = device::connect(node.mqtt(), "p-9", &token).await.unwrap();
    d.subscribe("$aws/things/p-9/shadow/update/+").await;
    let r = d
        .request(
            "$aws/things/p-9/shadow/update",
            &json!({"state": {"reported": {"rpm": "fast"}}}),
            "$aws/things/p-9/shadow/update/rejected",
        )
        .await;
    assert!(
        r["message"].as_str().unwrap().starts_with("reported/rpm"),
        "{r}"
    );
    admin.put_type("Pump", json!({})).await;
    let r = d
        .request(
            "$aws/things/p-9/shadow/update",
            &json!({"state": {"reported": {"rpm": "fast"}}}),
            "$aws/things/p-9/shadow/update/accepted",
        )
        .await;
    assert_eq!(
        r["version"], 1,
        "the replaced type applies to the next command"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn things_list_in_pages_with_filters_and_attributes_update() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    pump_and_valve(&admin).await;
    let things: Vec<Value> = (0..7)
        .map(|i| json!({"name": format!("n-{i}"), "type": if i < 5 { "Pump" } else { "Valve" }, "attributes": {"site": if i % 2 == 0 { "north" } else { "south" }}}))
        .collect();
    assert_eq!(
        admin
            .post("/v1/things/bulk", json!({"things": things}))
            .await
            .0,
        201
    );
    let (_, page) = admin.get("/v1/things?type=Pump&limit=2").await;
    assert_eq!(page["things"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page2) = admin
        .get(&format!("/v1/things?type=Pump&limit=2&cursor={next}"))
        .await;
    assert_eq!(page2["things"][0]["name"], "n-2");
    let (_, north) = admin.get("/v1/things?attribute=site:north").await;
    assert_eq!(north["things"].as_array().unwrap().len(), 4);
    assert_eq!(admin.get("/v1/things?limit=0").await.0, 400);
    let (status, updated) = admin
        .patch(
            "/v1/things/n-0",
            json!({"attributes": {"site": "east", "floor": "2"}}),
        )
        .await;
    assert_eq!(
        (status, updated["attributes"].clone()),
        (200, json!({"site": "east", "floor": "2"}))
    );
    let (_, updated) = admin
        .patch("/v1/things/n-0", json!({"attributes": {"floor": null}}))
        .await;
    assert_eq!(updated["attributes"], json!({"site": "east"}));
    assert_eq!(
        admin
            .patch("/v1/things/nope", json!({"attributes": {}}))
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_shown_once_listed_without_secrets_and_revoked_at_once() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let (status, created) = admin.post("/v1/keys", json!({"role": "viewer"})).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap();
    let viewer = Api::with(&node, Some(key));
    assert_eq!(viewer.get("/v1/things").await.0, 200);
    let (_, list) = admin.get("/v1/keys").await;
    let listed = list["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        !list.to_string().contains(key.rsplit('_').next().unwrap()),
        "no secret in the list"
    );
    assert_eq!(admin.post("/v1/keys", json!({"role": "root"})).await.0, 400);
    assert_eq!(
        admin
            .post("/v1/keys", json!({"role": "viewer", "types": ["Nope"]}))
            .await
            .0,
        400
    );
    assert_eq!(
        admin
            .delete(&format!("/v1/keys/{}", created["id"].as_str().unwrap()))
            .await
            .0,
        204
    );
    assert_eq!(viewer.get("/v1/things").await.0, 401, "revoked at once");
    assert_eq!(admin.delete("/v1/keys/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_is_audited_with_who_and_versions() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let (_, created) = admin.post("/v1/keys", json!({"role": "operator"})).await;
    let operator_id = created["id"].as_str().unwrap().to_owned();
    let operator = Api::with(&node, Some(created["key"].as_str().unwrap()));
    admin.register("aud-1", None).await;
    operator
        .patch(
            "/v1/things/aud-1/shadow",
            json!({"state": {"desired": {"a": 1}}}),
        )
        .await;
    operator
        .patch(
            "/v1/things/aud-1/shadow?name=cfg",
            json!({"state": {"desired": {"b": 1}}}),
        )
        .await;
    operator
        .patch(
            "/v1/things/aud-1/shadow",
            json!({"state": {"desired": {"a": 2}}}),
        )
        .await;
    operator
        .patch(
            "/v1/things/aud-1/shadow",
            json!({"state": {"desired": {"a": 2}}, "version": 99}),
        )
        .await;
    admin.delete("/v1/things/aud-1").await;
    let (status, log) = admin.get("/v1/audit").await;
    assert_eq!(status, 200);
    let entries: Vec<(String, String, Option<u64>, Option<u64>)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["before"].as_u64(),
                e["after"].as_u64(),
            )
        })
        .collect();
    let op = operator_id.as_str();
    assert_eq!(
        entries,
        [
            // The node's start with DOPPEL_ADMIN_TOKEN set it (the token itself is not logged).
            ("environment".to_owned(), "admin.set".to_owned(), None, None),
            ("bootstrap".to_owned(), "key.create".to_owned(), None, None),
            (
                "bootstrap".to_owned(),
                "thing.register".to_owned(),
                None,
                None
            ),
            (op.to_owned(), "shadow.update".to_owned(), None, Some(1)),
            (op.to_owned(), "shadow.update".to_owned(), None, Some(1)),
            (op.to_owned(), "shadow.update".to_owned(), Some(1), Some(2)),
            (
                "bootstrap".to_owned(),
                "thing.decommission".to_owned(),
                None,
                None
            ),
        ],
        "the refused write (version 99) is not recorded"
    );
    assert_eq!(log["entries"][4]["details"]["shadow"], "cfg");
    let (_, page) = admin.get("/v1/audit?limit=2").await;
    let (_, rest) = admin
        .get(&format!(
            "/v1/audit?limit=10&cursor={}",
            page["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 5);
    assert_eq!(operator.get("/v1/audit").await.0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_history_returns_downsampled_points() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("meter-1", None).await;
    let d = device::connect(node.mqtt(), "meter-1", &token)
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = (now - 2 * 3_600_000) / 3_600_000 * 3_600_000;
    for minute in 0..60u64 {
        d.publish(
            "things/meter-1/telemetry",
            &json!({"ts": start + minute * 60_000, "kwh": minute, "phase": "a"}),
        )
        .await;
    }
    let query = format!(
        "/v1/things/meter-1/telemetry?from={start}&to={}&step=15m&agg=avg",
        start + 3_600_000
    );
    // Count first: samples only accumulate, so once all 60 are counted the averages that follow
    // see all of them too.
    let points = eventually(WAIT, "60 samples in the history", async || {
        let counted: f64 = {
            let (_, counts) = admin.get(&query.replace("agg=avg", "agg=count")).await;
            counts["points"]
                .as_array()?
                .iter()
                .map(|p| p["values"]["kwh"].as_f64().unwrap_or(0.0))
                .sum()
        };
        if counted != 60.0 {
            return None;
        }
        let (_, reply) = admin.get(&query).await;
        reply["points"].as_array().cloned()
    })
    .await;
    let got: Vec<(u64, f64)> = points
        .iter()
        .map(|p| {
            (
                p["ts"].as_u64().unwrap(),
                p["values"]["kwh"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (start, 7.0),
            (start + 900_000, 22.0),
            (start + 1_800_000, 37.0),
            (start + 2_700_000, 52.0)
        ]
    );
    let (_, max) = admin.get(&query.replace("agg=avg", "agg=max")).await;
    assert_eq!(max["points"][3]["values"]["kwh"], 59.0);
    let (_, raw) = admin
        .get(&format!(
            "/v1/things/meter-1/telemetry?from={start}&to={}",
            start + 3 * 60_000
        ))
        .await;
    assert_eq!(
        raw["samples"],
        json!([{"ts": start, "values": {"kwh": 0, "phase": "a"}}, {"ts": start + 60_000, "values": {"kwh": 1, "phase": "a"}}, {"ts": start + 120_000, "values": {"kwh": 2, "phase": "a"}}])
    );
    assert_eq!(
        admin.get(&query.replace("agg=avg", "agg=median")).await.0,
        400
    );
    assert_eq!(
        admin
            .get(&format!(
                "/v1/things/meter-1/telemetry?from={start}&to={}&step=1ms",
                start + 3_600_000
            ))
            .await
            .0,
        400,
        "too many buckets"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_describe_the_node() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("m-1", None).await;
    let mut d = device::connect(node.mqtt(), "m-1", &token).await.unwrap();
    d.subscribe("$aws/things/m-1/shadow/update/+").await;
    d.request(
        "$aws/things/m-1/shadow/update",
        &json!({"state": {"reported": {"a": 1}}}),
        "$aws/things/m-1/shadow/update/accepted",
    )
    .await;
    d.request(
        "$aws/things/m-1/shadow/update",
        &json!({"state": 1}),
        "$aws/things/m-1/shadow/update/rejected",
    )
    .await;
    assert_eq!(Api::with(&node, None).get("/v1/things").await.0, 401);
    let viewer = admin.create_key("viewer", None).await;
    let mut app = doppel_tests::ws::connect(&node, Some(&viewer))
        .await
        .unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["m-1"]}))
        .await;
    app.next_of("snapshot").await;
    d.request(
        "$aws/things/m-1/shadow/update",
        &json!({"state": {"reported": {"a": 2}}}),
        "$aws/things/m-1/shadow/update/accepted",
    )
    .await;
    app.next_of("change").await;
    let text = reqwest::Client::new()
        .get(node.url("/metrics"))
        .bearer_auth(viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "doppel_messages_in_total{kind=\"shadow_update\"} 3",
        "doppel_rejections_total{code=\"400\"} 1",
        "doppel_api_errors_total{code=\"unauthenticated\"} 1",
        "doppel_commit_seconds_bucket",
        "doppel_commit_twins_bucket",
        "doppel_stage_seconds_bucket{stage=\"queue\"",
        "doppel_stage_seconds_bucket{stage=\"window\"",
        "doppel_stage_seconds_bucket{stage=\"commit\"",
        "doppel_stage_seconds_bucket{stage=\"total\"",
        "doppel_twins_active 1",
        "doppel_twins_passivated_total 0",
        "doppel_mqtt_connections 1",
        "doppel_process_resident_memory_bytes",
        "doppel_ws_connections 1",
        "doppel_ws_subscriptions 1",
        "doppel_ws_changes_sent_total 1",
        "doppel_ws_fell_behind_total 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_the_api() {
    let node = Node::start(BIN, Options::default());
    let (status, doc) = Api::with(&node, None).get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/things",
        "/v1/things/bulk",
        "/v1/things/{name}/shadow",
        "/v1/things/{name}/telemetry",
        "/v1/types/{type}",
        "/v1/keys",
        "/v1/audit",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
