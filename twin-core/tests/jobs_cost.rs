//! What a job execution costs a twin's record, and its index entry.

use serde_json::json;
use twin_core::{Effect, JobInput, JobOp, ThingName, Twin};

#[test]
fn an_execution_costs_a_twin_record_little() {
    let mut twin = Twin::new(ThingName::new("meter-000001").unwrap());
    let empty = twin.encode().len();
    let mut out = Vec::new();
    let document = r#"{"version":"2.0","url":"/artifacts/fw-2.0.bin","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#;
    twin.handle_job(
        JobInput::Queue {
            job_id: "fw-2-0".into(),
            document: document.into(),
            in_progress_timeout_ms: Some(1_800_000),
        },
        1_796_000_000_000,
        &mut out,
    );
    twin.handle_job(
        JobInput::Request {
            op: JobOp::Update("fw-2-0".into()),
            payload: json!({"status": "SUCCEEDED", "statusDetails": {"installed": "2.0"}}),
        },
        1_796_000_060_000,
        &mut out,
    );
    let with = twin.encode().len();
    let change = out
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Execution(c) => Some(serde_json::to_vec(c).unwrap().len()),
            _ => None,
        })
        .unwrap();
    println!(
        "a finished execution adds {} bytes to the twin record (document {} bytes); its index entry holds {change} bytes",
        with - empty,
        document.len()
    );
    assert!(
        with - empty < document.len() + 100,
        "{} bytes",
        with - empty
    );
}
