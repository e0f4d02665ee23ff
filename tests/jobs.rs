//! Jobs end to end through the node's own endpoint: a job for a device type queues an execution
//! on each of its things and none elsewhere, executions survive a restart (they live in the
//! twins), cancel spares executions in progress unless forced, a device reaches only its own
//! executions, apps see execution changes over WebSocket, and an execution in progress past
//! the job's timeout is TIMED_OUT; rollouts keep to their rate, resume after a restart and
//! abort on failures; devices download their jobs' artifacts with Range; `docs/jobs.md` runs.

use doppel_tests::{
    api::Api,
    device::{self, Device},
    node::{ADMIN_TOKEN, Node, Options},
    until, ws,
};
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

async fn counts(admin: &Api, job: &str) -> Value {
    admin.get(&format!("/v1/jobs/{job}")).await.1["executions"].clone()
}

async fn wait_counts(admin: &Api, job: &str, want: Value) {
    until(
        &format!("{job} to count {want}"),
        Duration::from_secs(10),
        async || counts(admin, job).await == want,
    )
    .await;
}

async fn jobs_device(node: &Node, thing: &str, token: &str) -> Device {
    let mut d = device::connect(node.mqtt(), thing, token).await.unwrap();
    d.subscribe(&format!("$aws/things/{thing}/jobs/#")).await;
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_for_a_type_queues_on_its_things_survives_a_restart_and_cancels() {
    let mut node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Meter", json!({})).await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(admin.register(&format!("meter-{i}"), Some("Meter")).await);
    }
    admin.register("pump-0", None).await;
    // Refused before anything is stored.
    for (body, code) in [
        (json!({"targets": {}, "document": {}}), "invalid_request"),
        (
            json!({"targets": {"types": ["Nope"]}, "document": {}}),
            "type_not_found",
        ),
        (
            json!({"targets": {"types": ["Meter"]}, "document": [1]}),
            "invalid_request",
        ),
        (
            json!({"targets": {"types": ["Meter"]}, "document": {"a": "x".repeat(40_000)}}),
            "invalid_request",
        ),
        (
            json!({"targets": {"types": ["Meter"]}, "document": {}, "timeout_minutes": 0}),
            "invalid_request",
        ),
    ] {
        let (status, answer) = admin.put("/v1/jobs/bad", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{answer}");
    }
    assert_eq!(admin.put("/v1/jobs/bad job", json!({})).await.0, 400);
    let (status, _) = admin
        .put(
            "/v1/jobs/fw-3",
            json!({"targets": {"types": ["Meter"]}, "document": {"version": "3"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        admin
            .put(
                "/v1/jobs/fw-3",
                json!({"targets": {"types": ["Meter"]}, "document": {}})
            )
            .await
            .0,
        409
    );
    wait_counts(&admin, "fw-3", json!({"QUEUED": 4})).await;
    let (_, page) = admin.get("/v1/jobs/fw-3/executions?limit=2").await;
    assert_eq!(page["executions"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "meter-1");
    let (_, rest) = admin.get("/v1/jobs/fw-3/executions?cursor=meter-1").await;
    assert_eq!(rest["executions"][0]["thing"], "meter-2");

    // meter-0 starts its execution; a restart keeps it (it lives in the twin).
    let mut d = jobs_device(&node, "meter-0", &tokens[0]).await;
    let started = d
        .request(
            "$aws/things/meter-0/jobs/start-next",
            &json!({}),
            "$aws/things/meter-0/jobs/start-next/accepted",
        )
        .await;
    assert_eq!(started["execution"]["status"], "IN_PROGRESS");
    wait_counts(&admin, "fw-3", json!({"QUEUED": 3, "IN_PROGRESS": 1})).await;
    drop(d);
    assert!(node.terminate().success());
    node.restart();
    let admin = Api::admin(&node);
    let mut d = jobs_device(&node, "meter-0", &tokens[0]).await;
    let described = d
        .request(
            "$aws/things/meter-0/jobs/fw-3/get",
            &json!({}),
            "$aws/things/meter-0/jobs/fw-3/get/accepted",
        )
        .await;
    assert_eq!(described["execution"]["status"], "IN_PROGRESS");
    assert_eq!(
        described["execution"]["jobDocument"],
        json!({"version": "3"})
    );

    // Cancel: queued ones go, the one in progress stays; forced, it goes too.
    let (status, job) = admin.post("/v1/jobs/fw-3/cancel", json!({})).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "CANCELED");
    wait_counts(&admin, "fw-3", json!({"CANCELED": 3, "IN_PROGRESS": 1})).await;
    let mut other = jobs_device(&node, "meter-1", &tokens[1]).await;
    let nothing = other
        .request(
            "$aws/things/meter-1/jobs/start-next",
            &json!({}),
            "$aws/things/meter-1/jobs/start-next/accepted",
        )
        .await;
    assert!(nothing.get("execution").is_none(), "{nothing}");
    admin
        .post("/v1/jobs/fw-3/cancel", json!({"force": true}))
        .await;
    wait_counts(&admin, "fw-3", json!({"CANCELED": 4})).await;
    let next = d.message_on("$aws/things/meter-0/jobs/notify-next").await;
    assert!(next.get("execution").is_none(), "{next}");
    // The untargeted thing never had one.
    let (_, page) = admin.get("/v1/jobs/fw-3/executions").await;
    assert!(!page.to_string().contains("pump-0"), "{page}");
    assert_eq!(admin.get("/v1/jobs/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_reaches_only_its_own_executions_and_apps_see_them_change() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let mine = admin.register("cam-1", None).await;
    admin.register("cam-2", None).await;
    // A rule reacting to the outcome of the camera's executions.
    let rule = "rule refused for thing \"cam-1\" {\n  when job.status == \"REJECTED\"\n  then { alert JobRefused severity minor \"{job.id} refused\" }\n}\n";
    let (status, body) = admin
        .put("/v1/rules/refused", json!({ "source": rule }))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["cam-1"]}))
        .await;
    app.send(json!({"type": "get", "id": "g", "thing": "cam-1"}))
        .await;
    app.next().await;
    admin
        .put(
            "/v1/jobs/cfg-1",
            json!({"targets": {"things": ["cam-1", "cam-2"]}, "document": {"config": 1}}),
        )
        .await;
    wait_counts(&admin, "cfg-1", json!({"QUEUED": 2})).await;
    let queued = loop {
        let frame = app.next_of("event").await;
        if frame["kind"] == "job_execution" {
            break frame;
        }
    };
    assert_eq!(queued["payload"]["jobId"], "cfg-1");
    assert_eq!(queued["payload"]["status"], "QUEUED");
    // cam-1 may not subscribe to or publish on cam-2's jobs topics.
    let mut d = device::connect(node.mqtt(), "cam-1", &mine).await.unwrap();
    d.publish(
        "$aws/things/cam-2/jobs/cfg-1/update",
        &json!({"status": "SUCCEEDED"}),
    )
    .await;
    let why = tokio::time::timeout(Duration::from_secs(10), d.closed())
        .await
        .expect("the node closes a device publishing on another's jobs topic");
    assert!(!why.is_empty());
    assert_eq!(counts(&admin, "cfg-1").await, json!({"QUEUED": 2}));
    let mut d = device::connect(node.mqtt(), "cam-1", &mine).await.unwrap();
    d.client
        .subscribe("$aws/things/cam-2/jobs/notify", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), d.closed())
        .await
        .expect("the node closes a device subscribing to another's jobs topics");
    assert!(!why.is_empty());
    // Its own: a malformed request is answered on …/rejected.
    let mut d = jobs_device(&node, "cam-1", &mine).await;
    d.publish_raw("$aws/things/cam-1/jobs/get", b"not json".to_vec())
        .await;
    let refused = d.message_on("$aws/things/cam-1/jobs/get/rejected").await;
    assert_eq!(refused["code"], "InvalidJson");
    let done = d
        .request(
            "$aws/things/cam-1/jobs/cfg-1/update",
            &json!({"status": "REJECTED", "statusDetails": {"why": "busy"}}),
            "$aws/things/cam-1/jobs/cfg-1/update/accepted",
        )
        .await;
    assert!(done["timestamp"].is_u64(), "{done}");
    let changed = loop {
        let frame = app.next_of("event").await;
        if frame["kind"] == "job_execution" && frame["payload"]["status"] == "REJECTED" {
            break frame;
        }
    };
    assert_eq!(changed["payload"]["statusDetails"], json!({"why": "busy"}));
    wait_counts(&admin, "cfg-1", json!({"QUEUED": 1, "REJECTED": 1})).await;
    let (_, alerts) = admin.get("/v1/alerts?thing=cam-1").await;
    assert_eq!(alerts["alerts"][0]["name"], "JobRefused", "{alerts}");
    assert_eq!(alerts["alerts"][0]["message"], "cfg-1 refused", "{alerts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_execution_in_progress_past_the_jobs_timeout_times_out() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("slow-1", None).await;
    admin
        .put(
            "/v1/jobs/slow",
            json!({"targets": {"things": ["slow-1"]}, "document": {}, "timeout_minutes": 1}),
        )
        .await;
    wait_counts(&admin, "slow", json!({"QUEUED": 1})).await;
    let mut d = jobs_device(&node, "slow-1", &token).await;
    d.request(
        "$aws/things/slow-1/jobs/start-next",
        &json!({}),
        "$aws/things/slow-1/jobs/start-next/accepted",
    )
    .await;
    // The shortest timeout AWS allows is a minute.
    until(
        "the execution to time out",
        Duration::from_secs(90),
        async || counts(&admin, "slow").await == json!({"TIMED_OUT": 1}),
    )
    .await;
    let next = d.message_on("$aws/things/slow-1/jobs/notify-next").await;
    assert!(next.get("execution").is_some(), "the start's notice");
    let refused = d
        .request(
            "$aws/things/slow-1/jobs/slow/update",
            &json!({"status": "SUCCEEDED"}),
            "$aws/things/slow-1/jobs/slow/update/rejected",
        )
        .await;
    assert_eq!(refused["code"], "InvalidStateTransition");
    assert_eq!(refused["executionState"]["status"], "TIMED_OUT");
}

/// Registers `count` things of `device_type` named `{prefix}-{i:03}`; their tokens.
async fn fleet(admin: &Api, device_type: &str, prefix: &str, count: usize) -> Vec<String> {
    admin.put_type(device_type, json!({})).await;
    let things: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("{prefix}-{i:03}"), "type": device_type}))
        .collect();
    let (status, body) = admin
        .post("/v1/things/bulk", json!({ "things": things }))
        .await;
    assert_eq!(status, 201, "{body}");
    body["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_owned())
        .collect()
}

async fn job(admin: &Api, id: &str) -> Value {
    admin.get(&format!("/v1/jobs/{id}")).await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_keeps_to_its_rate_and_resumes_after_a_restart() {
    let mut node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    fleet(&admin, "Probe", "probe", 1000).await;
    let started = std::time::Instant::now();
    let (status, body) = admin
        .put(
            "/v1/jobs/wave",
            json!({"targets": {"types": ["Probe"]}, "document": {"v": 2},
                   "rollout": {"rate_per_minute": 1000}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Never faster than 1,000 a minute (one execution of slack at the start).
    let mut seen = 0;
    until(
        "100 executions queued",
        Duration::from_secs(30),
        async || {
            let queued = job(&admin, "wave").await["queued"].as_u64().unwrap();
            let allowed = 1000.0 / 60.0 * started.elapsed().as_secs_f64() + 2.0;
            assert!(
                queued as f64 <= allowed,
                "{queued} queued after {:?}",
                started.elapsed()
            );
            seen = queued;
            queued >= 100
        },
    )
    .await;
    assert!(seen < 1000, "the rollout was not rate-limited");
    // A restart mid-rollout: it resumes where it was, and every target gets one execution.
    assert!(node.terminate().success());
    node.restart();
    let admin = Api::admin(&node);
    let resumed = job(&admin, "wave").await;
    assert!(!resumed["rollout_done"].as_bool().unwrap(), "{resumed}");
    until(
        "the rollout to finish",
        Duration::from_secs(120),
        async || {
            let job = job(&admin, "wave").await;
            job["rollout_done"] == true && job["executions"] == json!({"QUEUED": 1000})
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_aborts_when_failures_cross_its_criterion() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let tokens = fleet(&admin, "Valve", "valve", 200).await;
    let (status, body) = admin
        .put(
            "/v1/jobs/risky",
            json!({"targets": {"types": ["Valve"]}, "document": {"v": 9},
                   "rollout": {"rate_per_minute": 1000},
                   "abort": [{"failure": "FAILED", "percent": 50, "min_executed": 5}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The first devices reached take their execution and fail it.
    let mut devices = Vec::new();
    for (i, token) in tokens.iter().enumerate().take(8) {
        devices.push((
            format!("valve-{i:03}"),
            jobs_device(&node, &format!("valve-{i:03}"), token).await,
        ));
    }
    until(
        "the first executions queued",
        Duration::from_secs(10),
        async || job(&admin, "risky").await["queued"].as_u64().unwrap() >= 8,
    )
    .await;
    for (thing, d) in &mut devices {
        let started = d
            .request(
                &format!("$aws/things/{thing}/jobs/start-next"),
                &json!({}),
                &format!("$aws/things/{thing}/jobs/start-next/accepted"),
            )
            .await;
        if started.get("execution").is_none() {
            break; // aborted already
        }
        d.request(
            &format!("$aws/things/{thing}/jobs/risky/update"),
            &json!({"status": "FAILED"}),
            &format!("$aws/things/{thing}/jobs/risky/update/accepted"),
        )
        .await;
    }
    until("the job to abort", Duration::from_secs(10), async || {
        job(&admin, "risky").await["status"] == "CANCELED"
    })
    .await;
    let aborted = job(&admin, "risky").await;
    assert!(
        aborted["reason"].as_str().unwrap().starts_with("aborted"),
        "{aborted}"
    );
    let failed = aborted["executions"]["FAILED"].as_u64().unwrap();
    assert!(failed >= 5, "{aborted}");
    // Remaining executions are canceled, the rollout stops short of the fleet, and no device
    // starts one after the abort.
    until(
        "the queued executions canceled",
        Duration::from_secs(10),
        async || {
            let job = job(&admin, "risky").await;
            job["executions"]["QUEUED"].is_null() && job["executions"]["IN_PROGRESS"].is_null()
        },
    )
    .await;
    let after = job(&admin, "risky").await;
    assert!(after["queued"].as_u64().unwrap() < 200, "{after}");
    for (thing, d) in &mut devices {
        let started = d
            .request(
                &format!("$aws/things/{thing}/jobs/start-next"),
                &json!({}),
                &format!("$aws/things/{thing}/jobs/start-next/accepted"),
            )
            .await;
        assert!(
            started.get("execution").is_none(),
            "{thing} started after the abort: {started}"
        );
    }
    let last = job(&admin, "risky").await;
    assert_eq!(last["executions"]["FAILED"], failed, "{last}");
    assert_eq!(
        last["queued"], after["queued"],
        "nothing queued after the abort"
    );
}

#[test]
fn the_jobs_doc_runs_as_written() {
    doppel_tests::doc::need("mosquitto_rr", "mosquitto-clients");
    for (program, package) in [
        ("curl", "curl"),
        ("python3", "python3"),
        ("sha256sum", "coreutils"),
    ] {
        doppel_tests::doc::need(program, package);
    }
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/jobs.md"),
    )
    .unwrap();
    let steps = doppel_tests::doc::run_section(
        &doc,
        "## A job, step by step",
        BIN,
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(steps, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_download_their_jobs_artifacts_resuming_with_range() {
    use sha2::Digest;
    let node = Node::start(
        BIN,
        Options {
            config: Some("[node]\nmax_artifact_bytes = 4000000\n".into()),
            ..Options::default()
        },
    );
    let admin = Api::admin(&node);
    let a = admin.register("dev-a", None).await;
    let b = admin.register("dev-b", None).await;
    // 3 MB of firmware, streamed up (over the 2 MiB an ordinary request body may have).
    let firmware: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha256 = hex::encode(sha2::Sha256::digest(&firmware));
    let client = reqwest::Client::new();
    let upload = |name: &str, body: Vec<u8>| {
        client
            .put(node.url(&format!("/v1/artifacts/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let response = upload("fw-2.0.bin", firmware.clone()).await.unwrap();
    assert_eq!(response.status(), 201);
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["size"], 3_000_000);
    assert_eq!(stored["sha256"], sha256.as_str());
    // Over the node's limit: refused, and nothing is kept.
    let response = upload("too-big.bin", vec![0; 4_500_000]).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(admin.get("/v1/artifacts/too-big.bin").await.0, 404);
    assert_eq!(upload("../etc", vec![1]).await.unwrap().status(), 404);

    // A job that lists it, for dev-a only; an unknown artifact is refused.
    let (status, body) = admin
        .put(
            "/v1/jobs/nope",
            json!({"targets": {"things": ["dev-a"]}, "document": {}, "artifacts": ["missing.bin"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("artifact_not_found"))
    );
    admin
        .put(
            "/v1/jobs/fw",
            json!({"targets": {"things": ["dev-a"]}, "artifacts": ["fw-2.0.bin"],
                   "document": {"url": "/artifacts/fw-2.0.bin", "sha256": sha256}}),
        )
        .await;
    wait_counts(&admin, "fw", json!({"QUEUED": 1})).await;

    let download = |thing: &str, token: &str, range: Option<&str>| {
        let mut request = client
            .get(node.url("/artifacts/fw-2.0.bin"))
            .basic_auth(thing, Some(token));
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    // An interrupted download resumes where it stopped.
    let first = download("dev-a", &a, Some("bytes=0-1199999"))
        .await
        .unwrap();
    assert_eq!(first.status(), 206);
    assert_eq!(first.headers()["content-range"], "bytes 0-1199999/3000000");
    let mut got = first.bytes().await.unwrap().to_vec();
    let rest = download("dev-a", &a, Some("bytes=1200000-")).await.unwrap();
    assert_eq!(rest.status(), 206);
    assert_eq!(rest.headers()["etag"], format!("\"{sha256}\"").as_str());
    got.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha256);
    let whole = download("dev-a", &a, None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().len(), 3_000_000);
    assert_eq!(
        download("dev-a", &a, Some("bytes=3000000-"))
            .await
            .unwrap()
            .status(),
        416
    );
    // Not targeted, wrong token, no credentials.
    assert_eq!(download("dev-b", &b, None).await.unwrap().status(), 403);
    assert_eq!(download("dev-a", &b, None).await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(node.url("/artifacts/fw-2.0.bin"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Apps read it with their key, a range too.
    let tail = client
        .get(node.url("/v1/artifacts/fw-2.0.bin/content"))
        .bearer_auth(ADMIN_TOKEN)
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(&tail.bytes().await.unwrap()[..], &firmware[2_999_900..]);
    // Deleted: gone for everyone.
    assert_eq!(admin.delete("/v1/artifacts/fw-2.0.bin").await.0, 204);
    assert_eq!(download("dev-a", &a, None).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuous_job_reaches_things_that_join_later() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Sensor", json!({})).await;
    admin.register("sensor-1", Some("Sensor")).await;
    let (status, body) = admin
        .put(
            "/v1/jobs/baseline",
            json!({"targets": {"types": ["Sensor"]}, "document": {"config": "v1"}, "continuous": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    wait_counts(&admin, "baseline", json!({"QUEUED": 1})).await;
    until(
        "the rollout to finish",
        Duration::from_secs(10),
        async || job(&admin, "baseline").await["rollout_done"] == true,
    )
    .await;
    // Registered after the rollout went past: it gets its execution too; others do not.
    let token = admin.register("sensor-2", Some("Sensor")).await;
    admin.register("other-1", None).await;
    wait_counts(&admin, "baseline", json!({"QUEUED": 2})).await;
    let mut d = jobs_device(&node, "sensor-2", &token).await;
    d.request(
        "$aws/things/sensor-2/jobs/baseline/update",
        &json!({"status": "SUCCEEDED"}),
        "$aws/things/sensor-2/jobs/baseline/update/accepted",
    )
    .await;
    wait_counts(&admin, "baseline", json!({"QUEUED": 1, "SUCCEEDED": 1})).await;
    let status = job(&admin, "baseline").await["status"].clone();
    assert_eq!(status, "IN_PROGRESS", "a continuous job never completes");
}
