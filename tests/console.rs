//! The web console: served by the node with its security headers and CORS; WebSocket tickets
//! for browsers; the fleet API the console pages with; and the console itself in Debian's
//! headless Chromium driven by selenium (`tests/console/browser.py`): sign-in, the fleet paged
//! through 10,000 things with one subscription for the rows on screen, the twin page live and
//! its desired edits with the conflict view, the rule editor's diagnostics, tests, deploy and
//! dry-run, alerts, the node page, and what a viewer and a scoped key see.
//!
//! Screenshots of every page go to `target/console-screenshots/`. Needs `chromium` and
//! `chromium-driver` (Debian) and the pinned `.venv` (`scripts/test` installs all of them).

use doppel_tests::{
    api::Api,
    device, eventually,
    node::{ADMIN_TOKEN, Node, Options},
    python,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::{path::PathBuf, process::Command, time::Duration};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a scenario of `tests/console/browser.py` against `node`; its figures.
async fn browser(node: &Node, scenario: &str, params: Value) -> Value {
    for (path, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "no {path}: install it with `sudo apt-get install -y {package}` (scripts/test does)"
        );
    }
    let mut params = params;
    params["url"] = json!(node.url("").trim_end_matches('/'));
    params["admin"] = json!(ADMIN_TOKEN);
    params["mqtt"] = json!(node.mqtt().to_string());
    params["shots"] = json!(shots());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
    let scenario = scenario.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(&scenario)
            .arg(params.to_string())
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser scenario failed:\n{stdout}{}\nnode log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        node.log()
    );
    let figures: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    eprintln!("console figures: {figures}");
    figures
}

/// Registers `count` things `{prefix}{i:05}` of `device_type`, 10,000 per request.
async fn register_many(api: &Api, prefix: &str, count: usize, device_type: &str) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    for start in (0..count).step_by(10_000) {
        let things: Vec<Value> = (start..count.min(start + 10_000))
            .map(|i| json!({"name": format!("{prefix}{i:05}"), "type": device_type}))
            .collect();
        let (status, body) = api
            .post("/v1/things/bulk", json!({ "things": things }))
            .await;
        assert_eq!(status, 201, "{body}");
        tokens.extend(
            body["things"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token"].as_str().unwrap().to_owned()),
        );
    }
    tokens
}

/// Publishes telemetry samples as the device, one acknowledged message each, then
/// disconnects.
async fn telemetry(node: &Node, thing: &str, token: &str, samples: &[Value]) {
    let mut device = device::connect(node.mqtt(), thing, token).await.unwrap();
    for sample in samples {
        device
            .publish_acked(&format!("things/{thing}/telemetry"), sample)
            .await;
    }
    device.client.disconnect().await.unwrap();
    let thing = thing.to_owned();
    let api = Api::admin(node);
    let want = samples.last().cloned().unwrap_or_default();
    eventually(
        Duration::from_secs(15),
        "the samples in reported, the device gone",
        async || {
            let (_, shadow) = api.get(&format!("/v1/things/{thing}/shadow")).await;
            let (_, record) = api.get(&format!("/v1/things/{thing}")).await;
            (shadow["state"]["reported"]["temp"] == want["temp"]
                && record["connectivity"]["connected"] == false)
                .then_some(())
        },
    )
    .await;
}

const HOT: &str = r#"rule hot for type Sensor {
  when exists(telemetry.temp) and telemetry.temp > 30
  then { alert Hot severity major "temperature {telemetry.temp}" }
}

test "hot above 30" {
  at 0s telemetry {temp: 35}
  at 0s expect alert Hot firing
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_with_its_security_headers() {
    let node = Node::start(BIN, Options::default());
    let client = node.client();
    let page = client.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'")
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app/main.js">"#));
    assert!(!html.contains("<script>"), "no inline script");

    // Assets: typed, revalidated by ETag, compressed for browsers that accept it.
    let js = client
        .get(node.url("/console/vendor/vendor.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript");
    let etag = js.headers()["etag"].clone();
    assert!(js.bytes().await.unwrap().len() > 100_000);
    let again = client
        .get(node.url("/console/vendor/vendor.js"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let gzipped = raw
        .get(node.url("/console/vendor/vendor.js"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert!(gzipped.bytes().await.unwrap().len() < 200_000);
    // The bundled libraries' licenses are served beside them.
    let licenses = client
        .get(node.url("/console/vendor/LICENSES.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for package in ["preact", "htm", "uplot", "@codemirror/view"] {
        assert!(licenses.contains(&format!("== {package} ")), "{package}");
    }
    let missing = client
        .get(node.url("/console/app/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let outside = client
        .get(node.url("/console/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);

    // No CORS unless configured: a preflight from another origin gets no grant.
    let preflight = client
        .request(reqwest::Method::OPTIONS, node.url("/v1/things"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_allows_only_the_configured_origins() {
    let node = Node::start(
        BIN,
        Options {
            config: Some("[cors]\nallowed_origins = [\"https://app.example.com\"]\n".into()),
            ..Options::default()
        },
    );
    let client = node.client();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, node.url("/v1/things/t-1/shadow"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PATCH")
            .header("Access-Control-Request-Headers", "authorization, if-match")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    let allowed_headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("if-match"));
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    // A real request from the allowed origin can read the ETag.
    node.register("t-1").await;
    let get = client
        .get(node.url("/v1/things/t-1"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        get.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_opens_one_websocket_as_its_key() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    admin.register("w-1", Some("Sensor")).await;
    let viewer = admin.create_key("viewer", None).await;
    let as_viewer = Api::with(&node, Some(&viewer));

    // No key, no ticket.
    let (status, _) = Api::with(&node, None)
        .post("/v1/ws/ticket", json!({}))
        .await;
    assert_eq!(status, 401);
    let (status, body) = as_viewer.post("/v1/ws/ticket", json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert!(!ticket.contains(&viewer), "a ticket does not carry the key");

    let ws_url = |ticket: &str| {
        format!(
            "ws://{}/v1/ws?ticket={ticket}",
            node.url("")
                .trim_start_matches("http://")
                .trim_end_matches('/')
        )
    };
    // The ticket opens a stream as the viewer: it reads, and may not write.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_url(&ticket).into_client_request().unwrap())
            .await
            .expect("the ticket opens the stream");
    ws.send(Message::text(
        json!({"type": "update", "id": "u1", "thing": "w-1", "desired": {"on": true}}).to_string(),
    ))
    .await
    .unwrap();
    let answer = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "forbidden", "{answer}");

    // Used once: the same ticket, or one made up, opens nothing.
    for bad in [ticket.as_str(), "0123456789abcdef"] {
        let refused =
            tokio_tungstenite::connect_async(ws_url(bad).into_client_request().unwrap()).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("a used or unknown ticket opened a stream: {other:?}"),
        }
    }
    // A ticket does not outlive its key.
    let operator = admin.create_key("operator", None).await;
    let (_, body) = Api::with(&node, Some(&operator))
        .post("/v1/ws/ticket", json!({}))
        .await;
    let orphan = body["ticket"].as_str().unwrap().to_owned();
    let id = operator.split('_').nth(1).unwrap();
    let (status, _) = admin.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, 204);
    match tokio_tungstenite::connect_async(ws_url(&orphan).into_client_request().unwrap()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a revoked key's ticket opened a stream: {other:?}"),
    }
    // A key holds a bounded number of unused tickets.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(as_viewer.post("/v1/ws/ticket", json!({})).await.0);
    }
    assert!(statuses[..16].iter().all(|s| *s == 201), "{statuses:?}");
    assert!(statuses[16..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_api_searches_counts_and_shows_connectivity() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    admin.put_type("Valve", json!({"schemas": {}})).await;
    let sensors = register_many(&admin, "s-", 1_200, "Sensor").await;
    register_many(&admin, "v-", 30, "Valve").await;
    let device = device::connect(node.mqtt(), "s-00042", &sensors[42])
        .await
        .unwrap();

    let (_, summary) = admin.get("/v1/fleet/summary").await;
    assert_eq!(summary["things"], 1_230);
    assert_eq!(summary["by_type"]["Sensor"]["things"], 1_200);
    assert_eq!(summary["by_type"]["Valve"]["things"], 30);
    eventually(
        Duration::from_secs(10),
        "the device counted as connected",
        async || {
            let (_, summary) = admin.get("/v1/fleet/summary").await;
            (summary["connected"] == 1 && summary["by_type"]["Sensor"]["connected"] == 1)
                .then_some(())
        },
    )
    .await;

    // Name prefix: a range of the index, paged by cursor.
    let (status, page) = admin.get("/v1/things?prefix=s-011&limit=60").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = page["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 60);
    assert!(names.iter().all(|n| n.starts_with("s-011")));
    let next = page["next"].as_str().unwrap();
    let (_, rest) = admin
        .get(&format!("/v1/things?prefix=s-011&limit=60&cursor={next}"))
        .await;
    assert_eq!(rest["things"].as_array().unwrap().len(), 40);
    assert!(rest.get("next").is_none());

    // Connected or not, with connectivity on every row.
    let (_, on) = admin.get("/v1/things?connected=true").await;
    assert_eq!(on["things"].as_array().unwrap().len(), 1);
    assert_eq!(on["things"][0]["name"], "s-00042");
    assert_eq!(on["things"][0]["connectivity"]["connected"], true);
    let (_, off) = admin
        .get("/v1/things?connected=false&type=Valve&limit=1000")
        .await;
    assert_eq!(off["things"].as_array().unwrap().len(), 30);

    // A scoped key counts and lists only its types; bad filters are refused.
    let scoped = admin.create_key("viewer", Some(&["Valve"])).await;
    let as_scoped = Api::with(&node, Some(&scoped));
    let (_, summary) = as_scoped.get("/v1/fleet/summary").await;
    assert_eq!(summary["things"], 30);
    assert!(summary["by_type"].get("Sensor").is_none());
    let (_, me) = as_scoped.get("/v1/me").await;
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["types"], json!(["Valve"]));
    for bad in ["prefix=a%20b", "connected=maybe", "prefix="] {
        let (status, body) = admin.get(&format!("/v1/things?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    drop(device);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_page_pages_through_10000_things_watching_only_the_rows_on_screen() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    admin.put_type("Valve", json!({"schemas": {}})).await;
    // Valves first in name order, then 10,000 sensors: the list ends on t-09999.
    let valves = register_many(&admin, "a-", 25, "Valve").await;
    let tokens = register_many(&admin, "t-", 10_000, "Sensor").await;
    telemetry(&node, "a-00000", &valves[0], &[json!({"temp": 20})]).await;
    telemetry(&node, "t-09999", &tokens[9_999], &[json!({"temp": 21})]).await;
    let figures = browser(
        &node,
        "fleet",
        json!({
            "count": 10_000, "extra": 25, "first": "a-00000", "last": "t-09999",
            "last_token": tokens[9_999], "prefix": "t-0500", "prefix_count": 10,
        }),
    )
    .await;
    assert!(
        figures["subscriptions_max"].as_u64().unwrap() <= 1,
        "{figures}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_twin_page_is_live_and_shows_a_conflicting_edit() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    let token = admin.register("pump-1", Some("Sensor")).await;
    let (status, body) = admin.put("/v1/rules/hot", json!({ "source": HOT })).await;
    assert_eq!(status, 201, "{body}");
    // A job and a certificate for the twin page's lists.
    let (status, body) = admin
        .put(
            "/v1/jobs/fw-7",
            json!({"targets": {"things": ["pump-1"]}, "document": {"version": "7"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin
        .post("/v1/things/pump-1/certificates", json!({"generate": true}))
        .await;
    assert_eq!(status, 201, "{body}");
    telemetry(
        &node,
        "pump-1",
        &token,
        &[
            json!({"temp": 20}),
            json!({"temp": 21}),
            json!({"temp": 22}),
        ],
    )
    .await;
    browser(&node, "twin", json!({"thing": "pump-1", "token": token})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rule_editor_marks_errors_runs_tests_deploys_and_dry_runs() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    let token = admin.register("room-1", Some("Sensor")).await;
    telemetry(
        &node,
        "room-1",
        &token,
        &[
            json!({"temp": 20}),
            json!({"temp": 35}),
            json!({"temp": 22}),
        ],
    )
    .await;
    browser(
        &node,
        "rules",
        json!({"thing": "room-1", "token": token, "source": HOT}),
    )
    .await;
    let (_, alerts) = admin.get("/v1/alerts?thing=room-1").await;
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["state"] == "firing"),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_no_edit_controls_and_a_scoped_key_only_its_types() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    admin.put_type("Valve", json!({"schemas": {}})).await;
    let tokens = register_many(&admin, "s-", 40, "Sensor").await;
    register_many(&admin, "v-", 12, "Valve").await;
    let (status, body) = admin.put("/v1/rules/hot", json!({ "source": HOT })).await;
    assert_eq!(status, 201, "{body}");
    telemetry(&node, "s-00001", &tokens[1], &[json!({"temp": 25})]).await;
    let viewer = admin.create_key("viewer", None).await;
    let scoped = admin.create_key("viewer", Some(&["Valve"])).await;
    browser(
        &node,
        "viewer",
        json!({
            "thing": "s-00001", "viewer": viewer, "scoped": scoped,
            "scoped_count": 12, "scoped_prefix": "v-",
        }),
    )
    .await;
    // The console showed nothing it may not change, and the node agrees.
    let (status, _) = Api::with(&node, Some(&viewer))
        .patch(
            "/v1/things/s-00001/shadow",
            json!({"state": {"desired": {"x": 1}}}),
        )
        .await;
    assert_eq!(status, 403);
}

#[test]
fn the_console_doc_runs_as_written() {
    doppel_tests::doc::need("curl", "curl");
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.md"),
    )
    .unwrap();
    let steps = doppel_tests::doc::run_section(
        &doc,
        "## From another origin, step by step",
        BIN,
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(steps, 1);
}

#[test]
fn a_cors_origin_that_is_not_one_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("doppel.toml");
    for bad in [
        "*",
        "https://app.example.com/console",
        "app.example.com",
        "null",
    ] {
        std::fs::write(&config, format!("[cors]\nallowed_origins = [\"{bad}\"]\n")).unwrap();
        let output = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cors.allowed_origins") && stderr.contains(bad),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn across_a_cluster_the_node_page_lists_the_nodes_and_a_twin_is_live_on_any_node() {
    use doppel_tests::cluster;
    let server = storage::pg_server::LocalServer::start().unwrap_or_else(|e| panic!("{e}"));
    let nodes: Vec<Node> = ["a", "b"]
        .into_iter()
        .map(|name| Node::start(BIN, cluster::options(&server, "console", name, None)))
        .collect();
    cluster::settled(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // A thing whose twin lives on a, its device on a, the console on b.
    let thing = cluster::name_owned_by(a, "a", "meter").await;
    let admin = Api::admin(a);
    admin.put_type("Sensor", json!({"schemas": {}})).await;
    let token = admin.register(&thing, Some("Sensor")).await;
    telemetry(
        a,
        &thing,
        &token,
        &[json!({"temp": 20}), json!({"temp": 21})],
    )
    .await;
    browser(
        b,
        "cluster",
        json!({"thing": thing, "token": token, "device_mqtt": a.mqtt().to_string(), "nodes": ["a", "b"]}),
    )
    .await;
}
