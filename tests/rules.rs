//! Rules end to end against a running node: stored over HTTP and checked against the device
//! type; telemetry over MQTT; alerts and events over WebSocket at the right time; desired state
//! set by a rule reaching the device as a delta; commands with replies and timeouts; a room
//! aggregating its sensors; a restart in the middle of a `for` window; the alert history,
//! traces, tests and dry runs over the API.

use doppel_tests::{
    api::Api,
    device::{self, Device, WAIT},
    eventually,
    node::{ADMIN_TOKEN, Node, Options},
    ws::{self, WsClient},
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

const THERMOSTAT_RULE: &str = r#"
rule high_temp for type Thermostat {
  when exists(telemetry.temp) and telemetry.temp > 30 for 2s
  clear when (telemetry.temp ?? 0) < 27
  then {
    alert HighTemp severity major "temp {telemetry.temp}"
    set desired.fan = "on"
  }
  on clear { set desired.fan = "auto" }
}

test "fires after two seconds" {
  at 0s telemetry {temp: 35}
  at 1999ms expect no alert HighTemp
  at 2s expect alert HighTemp firing
  at 2s expect desired.fan == "on"
}
"#;

async fn thermostat(admin: &Api) {
    admin
        .put_type(
            "Thermostat",
            json!({"schemas": {
                "telemetry": {"type": "object", "properties": {"temp": {"type": "number"}}, "additionalProperties": false},
                "desired": {"type": "object", "properties": {"fan": {"type": "string"}}}
            }}),
        )
        .await;
}

async fn put_rule(api: &Api, name: &str, source: &str) -> (u16, Value) {
    api.put(&format!("/v1/rules/{name}"), json!({ "source": source }))
        .await
}

/// The next `event` frame of `kind`.
async fn event(app: &mut WsClient, kind: &str) -> Value {
    loop {
        let frame = app.next_of("event").await;
        if frame["kind"] == kind {
            return frame;
        }
    }
}

async fn connect(node: &Node, thing: &str, token: &str) -> Device {
    device::connect(node.mqtt(), thing, token).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_condition_fires_on_time_sets_desired_and_resolves() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    thermostat(&admin).await;
    let token = admin.register("t-1", Some("Thermostat")).await;
    let operator = Api::with(&node, Some(&admin.create_key("operator", None).await));
    let (status, stored) = put_rule(&operator, "high_temp", THERMOSTAT_RULE).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["type"], "Thermostat");
    let (status, tests) = operator.post("/v1/rules/high_temp/test", json!({})).await;
    assert_eq!((status, &tests["passed"]), (200, &json!(true)), "{tests}");

    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["t-1"]}))
        .await;
    let mut d = connect(&node, "t-1", &token).await;
    d.subscribe("$aws/things/t-1/shadow/update/delta").await;

    let sent = Instant::now();
    d.publish_acked("things/t-1/telemetry", &json!({"temp": 35}))
        .await;
    let fired = event(&mut app, "alert").await;
    let elapsed = sent.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "fired after {elapsed:?}, before the 2 s hold"
    );
    assert!(elapsed < Duration::from_secs(4), "fired late: {elapsed:?}");
    assert_eq!(
        (&fired["rule"], &fired["thing"], &fired["payload"]),
        (
            &json!("high_temp"),
            &json!("t-1"),
            &json!({"name": "HighTemp", "severity": "major", "state": "firing", "message": "temp 35"})
        )
    );
    let delta = d.message_on("$aws/things/t-1/shadow/update/delta").await;
    assert_eq!(delta["state"], json!({"fan": "on"}));

    // Below the clear threshold: resolved at once, and desired goes back.
    d.publish_acked("things/t-1/telemetry", &json!({"temp": 20}))
        .await;
    let resolved = event(&mut app, "alert").await;
    assert_eq!(resolved["payload"]["state"], "resolved");
    let delta = d.message_on("$aws/things/t-1/shadow/update/delta").await;
    assert_eq!(delta["state"], json!({"fan": "auto"}));

    let (status, history) = operator.get("/v1/alerts?thing=t-1").await;
    assert_eq!(status, 200);
    let states: Vec<&Value> = history["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["state"])
        .collect();
    assert_eq!(states, [&json!("firing"), &json!("resolved")], "{history}");
    let (_, trace) = operator.get("/v1/things/t-1/rules/trace").await;
    let notes: Vec<&str> = trace["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(
        notes.contains(&"fired") && notes.contains(&"cleared"),
        "{trace}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_in_the_middle_of_a_hold_still_fires_on_time() {
    let mut node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    thermostat(&admin).await;
    let token = admin.register("t-2", Some("Thermostat")).await;
    let source = THERMOSTAT_RULE.replace("for 2s", "for 3s").replace(
        "at 1999ms expect no alert HighTemp\n  at 2s expect alert HighTemp firing\n  at 2s expect desired.fan == \"on\"",
        "at 3s expect alert HighTemp firing",
    );
    assert_eq!(put_rule(&admin, "high_temp", &source).await.0, 201);
    let mut d = connect(&node, "t-2", &token).await;
    let sent = Instant::now();
    d.publish_acked("things/t-2/telemetry", &json!({"temp": 40}))
        .await;
    drop(d);
    assert!(node.terminate().success());
    node.restart();

    let admin = Api::admin(&node);
    let fired = eventually(Duration::from_secs(10), "the alert", async || {
        let (_, history) = admin.get("/v1/alerts?thing=t-2").await;
        let alerts = history["alerts"].as_array()?.clone();
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    let elapsed = sent.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "fired after {elapsed:?}, before the 3 s hold"
    );
    assert_eq!(fired.len(), 1, "fired once: {fired:?}");
    assert_eq!(fired[0]["state"], "firing");
    let (_, shadow) = admin.get("/v1/things/t-2/shadow").await;
    assert_eq!(shadow["state"]["desired"]["fan"], "on");
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_reach_the_device_and_their_replies_or_timeouts_are_recorded() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Door", json!({})).await;
    let token = admin.register("door-1", Some("Door")).await;
    let source = r#"
rule door for type Door {
  when rising((telemetry.state ?? "closed") == "open")
  then {
    emit event "door_opened" {door: "front"}
    command lock {mode: "auto"} timeout 2s on timeout { alert LockSilent severity minor "the lock did not answer" }
  }
}
"#;
    assert_eq!(put_rule(&admin, "door", source).await.0, 201);
    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "doors", "thing_type": "Door"}))
        .await;
    app.send(json!({"type": "get", "id": "sync", "thing": "door-1"}))
        .await;
    app.next().await;
    let mut d = connect(&node, "door-1", &token).await;
    d.subscribe("things/door-1/commands/+").await;

    d.publish_acked("things/door-1/telemetry", &json!({"state": "open"}))
        .await;
    let opened = event(&mut app, "door_opened").await;
    assert_eq!(
        (&opened["sub"], &opened["payload"]),
        (&json!("doors"), &json!({"door": "front"}))
    );
    let command = d.message_on("things/door-1/commands/lock").await;
    assert_eq!(command["mode"], "auto");
    let request_id = command["request_id"].as_str().unwrap().to_owned();
    d.publish_acked(
        "things/door-1/commands/lock/reply",
        &json!({"request_id": request_id, "status": "locked"}),
    )
    .await;
    let replied = loop {
        let e = event(&mut app, "command").await;
        if e["payload"]["state"] == "replied" {
            break e;
        }
    };
    assert_eq!(
        (
            &replied["payload"]["request_id"],
            &replied["payload"]["reply"]["status"]
        ),
        (&json!(request_id), &json!("locked"))
    );

    // Closed and opened again; this time the lock stays silent.
    d.publish_acked("things/door-1/telemetry", &json!({"state": "closed"}))
        .await;
    let sent = Instant::now();
    d.publish_acked("things/door-1/telemetry", &json!({"state": "open"}))
        .await;
    let silent = event(&mut app, "alert").await;
    assert!(sent.elapsed() >= Duration::from_secs(2));
    assert_eq!(silent["payload"]["name"], "LockSilent");

    // A reply that is not JSON is refused; one nobody waits for changes nothing.
    d.publish_raw("things/door-1/commands/lock/reply", b"nope".to_vec())
        .await;
    d.publish_acked(
        "things/door-1/commands/unknown/reply",
        &json!({"request_id": "x"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_aggregates_its_sensors() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Room", json!({})).await;
    admin.put_type("Sensor", json!({})).await;
    admin.register("room-1", Some("Room")).await;
    let mut tokens = Vec::new();
    for s in ["s-1", "s-2"] {
        let (status, body) = admin
            .post(
                "/v1/things",
                json!({"name": s, "type": "Sensor", "attributes": {"parent": "room-1"}}),
            )
            .await;
        assert_eq!(status, 201);
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    let source = r#"
rule stuffy for type Room {
  children of type Sensor
  when (max(children.reported.co2) ?? 0) > 1000
  then { set desired.vent = "open"; set reported.worst = max(children.reported.co2) ?? 0 }
  on clear { set desired.vent = "closed" }
}
"#;
    assert_eq!(put_rule(&admin, "stuffy", source).await.0, 201);
    for (s, co2) in [("s-1", 600), ("s-2", 1400)] {
        let mut d = connect(&node, s, &tokens[if s == "s-1" { 0 } else { 1 }]).await;
        d.publish_acked(
            &format!("$aws/things/{s}/shadow/update"),
            &json!({"state": {"reported": {"co2": co2}}}),
        )
        .await;
    }
    let shadow = eventually(WAIT, "the room's rule", async || {
        let (_, shadow) = admin.get("/v1/things/room-1/shadow").await;
        (shadow["state"]["desired"]["vent"] == "open").then_some(shadow)
    })
    .await;
    assert_eq!(shadow["state"]["reported"]["worst"], 1400);
    // The stuffy sensor goes: the worst one left is fine.
    assert_eq!(admin.delete("/v1/things/s-2").await.0, 204);
    eventually(WAIT, "the room's rule to clear", async || {
        let (_, shadow) = admin.get("/v1/things/room-1/shadow").await;
        (shadow["state"]["desired"]["vent"] == "closed").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_checked_scoped_and_managed_over_http() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    thermostat(&admin).await;
    admin.put_type("Pump", json!({})).await;
    let viewer = Api::with(&node, Some(&admin.create_key("viewer", None).await));
    let pumps = Api::with(
        &node,
        Some(&admin.create_key("operator", Some(&["Pump"])).await),
    );

    // Diagnostics with positions, against the type's schema; nothing stored.
    let bad = "rule high_temp for type Thermostat {\n  when telemetry.tmp > 30\n  then { set desired.fan = 1 }\n}\n";
    let (status, body) = admin.post("/v1/rules/check", json!({"source": bad})).await;
    assert_eq!((status, &body["ok"]), (200, &json!(false)), "{body}");
    let diagnostics = body["diagnostics"].as_array().unwrap();
    assert_eq!(
        (
            &diagnostics[0]["code"],
            &diagnostics[0]["line"],
            &diagnostics[0]["column"]
        ),
        (&json!("E020"), &json!(2), &json!(8))
    );
    assert_eq!(diagnostics[0]["hint"], "did you mean `temp`?");
    let (status, body) = put_rule(&admin, "high_temp", bad).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("rule_invalid")));
    assert!(body["details"]["diagnostics"].as_array().unwrap().len() >= 2);
    assert_eq!(admin.get("/v1/rules/high_temp").await.0, 404);

    // Names must agree; unknown types are refused; roles and scopes apply.
    let (status, body) = put_rule(&admin, "other", THERMOSTAT_RULE).await;
    assert_eq!(status, 400, "{body}");
    let unknown = THERMOSTAT_RULE.replace("type Thermostat", "type Boiler");
    assert_eq!(put_rule(&admin, "high_temp", &unknown).await.0, 400);
    assert_eq!(put_rule(&viewer, "high_temp", THERMOSTAT_RULE).await.0, 403);
    assert_eq!(put_rule(&pumps, "high_temp", THERMOSTAT_RULE).await.0, 403);
    assert_eq!(put_rule(&admin, "high_temp", THERMOSTAT_RULE).await.0, 201);
    assert_eq!(put_rule(&admin, "high_temp", THERMOSTAT_RULE).await.0, 200);
    let (_, listed) = viewer.get("/v1/rules").await;
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1);
    let (_, listed) = pumps.get("/v1/rules").await;
    assert!(
        listed["rules"].as_array().unwrap().is_empty(),
        "outside the key's types"
    );
    assert_eq!(pumps.delete("/v1/rules/high_temp").await.0, 404);

    // A dry run over recorded telemetry says what would have fired, and when.
    let token = admin.register("t-9", Some("Thermostat")).await;
    let mut d = connect(&node, "t-9", &token).await;
    let base = 1_700_000_000_000u64 + (actors_now() - 1_700_000_000_000) / 1000 * 1000 - 60_000;
    for (i, temp) in [25, 35, 36, 37, 20].iter().enumerate() {
        d.publish_acked(
            "things/t-9/telemetry",
            &json!({"ts": base + i as u64 * 1_000, "temp": temp}),
        )
        .await;
    }
    let (status, run) = viewer
        .post(
            "/v1/rules/high_temp/dry-run",
            json!({"thing": "t-9", "from": base, "to": base + 10_000}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["samples"], 5);
    let alerts: Vec<(u64, &str)> = run["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "alert")
        .map(|o| {
            (
                o["at"].as_u64().unwrap() - base,
                o["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(alerts, [(3_000, "firing"), (4_000, "resolved")]);
    let (_, shadow) = admin.get("/v1/things/t-9/shadow").await;
    assert!(
        shadow["state"]["desired"].is_null(),
        "a dry run changes nothing"
    );

    assert_eq!(admin.delete("/v1/rules/high_temp").await.0, 204);
    assert_eq!(admin.get("/v1/rules/high_temp").await.0, 404);
    assert_eq!(admin.delete("/v1/rules/high_temp").await.0, 404);
}

fn actors_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
