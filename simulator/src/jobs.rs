//! Simulated devices that take jobs (`--take-jobs`), as AWS IoT Jobs devices do: told by
//! `jobs/notify-next`, they start the next execution, download the artifact its document names
//! (checking its SHA-256), work for `--job-time`, and report success — or failure or rejection
//! at the configured rates. And the job a simulation rolls out (`--job FILE`): created once the
//! fleet is connected, its progress read every second.

use crate::{
    SimConfig, SimError,
    mqtt::{Connection, Login},
    report::Stats,
};
use rand::{Rng, rngs::SmallRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Where a device is with its current job.
enum State {
    Idle,
    /// Asked for the next execution.
    Starting,
    /// Working on `job` until `until`, then reports `status`.
    Working {
        job: String,
        until: Instant,
        status: &'static str,
        details: Value,
    },
}

/// One device's side of its jobs.
pub(crate) struct Taker {
    thing: String,
    state: State,
}

impl Taker {
    pub(crate) fn new(thing: &str) -> Self {
        Self {
            thing: thing.to_owned(),
            state: State::Idle,
        }
    }

    /// The topics to subscribe to.
    pub(crate) fn topics(thing: &str) -> [String; 2] {
        [
            format!("$aws/things/{thing}/jobs/notify-next"),
            format!("$aws/things/{thing}/jobs/start-next/accepted"),
        ]
    }

    /// Just connected (or reconnected): ask for the next pending execution, as AWS IoT's device
    /// samples do, so that one queued while the device was away is not missed.
    pub(crate) fn on_connect(&mut self, connection: &mut Connection) {
        if matches!(self.state, State::Idle | State::Starting) {
            let start = format!("$aws/things/{}/jobs/start-next", self.thing);
            if connection.publish(&start, b"{}".to_vec(), 0).is_ok() {
                self.state = State::Starting;
            }
        }
    }

    /// When the job in progress is done.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Working { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Handles a message on one of its topics; `false` if it was not one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn on_message(
        &mut self,
        topic: &str,
        body: &[u8],
        connection: &mut Connection,
        http: &reqwest::Client,
        login: &Login,
        config: &SimConfig,
        rng: &mut SmallRng,
        stats: &Stats,
    ) -> bool {
        let prefix = format!("$aws/things/{}/jobs/", self.thing);
        let Some(rest) = topic.strip_prefix(&prefix) else {
            return false;
        };
        let message: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match rest {
            "notify-next"
                if matches!(self.state, State::Idle) && message.get("execution").is_some() =>
            {
                let start = format!("{prefix}start-next");
                if connection.publish(&start, b"{}".to_vec(), 0).is_ok() {
                    self.state = State::Starting;
                }
            }
            "start-next/accepted" => {
                let Some(execution) = message.get("execution") else {
                    self.state = State::Idle;
                    return true;
                };
                stats.job_event("started");
                let job = execution["jobId"].as_str().unwrap_or_default().to_owned();
                let document = &execution["jobDocument"];
                let (mut status, mut details) =
                    if rng.random_bool(config.job_reject.clamp(0.0, 1.0)) {
                        ("REJECTED", json!({"reason": "declined"}))
                    } else if rng.random_bool(config.job_fail.clamp(0.0, 1.0)) {
                        ("FAILED", json!({"reason": "install failed"}))
                    } else {
                        ("SUCCEEDED", json!({}))
                    };
                if status != "REJECTED"
                    && let Some(url) = document["url"].as_str()
                {
                    match download(
                        http,
                        config,
                        &self.thing,
                        login,
                        url,
                        document["sha256"].as_str(),
                    )
                    .await
                    {
                        Ok(bytes) => {
                            stats.job_event("downloaded");
                            stats.jobs_downloaded(bytes);
                        }
                        Err(why) => {
                            stats.error("job_download");
                            status = "FAILED";
                            details = json!({ "reason": why });
                        }
                    }
                }
                let until = if status == "REJECTED" {
                    Instant::now()
                } else {
                    Instant::now() + config.job_time
                };
                self.state = State::Working {
                    job,
                    until,
                    status,
                    details,
                };
            }
            _ => {}
        }
        true
    }

    /// Reports the job in progress once its time is up.
    pub(crate) fn on_deadline(&mut self, connection: &mut Connection, stats: &Stats) {
        let State::Working {
            job,
            status,
            details,
            ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        let topic = format!("$aws/things/{}/jobs/{job}/update", self.thing);
        let mut body = json!({ "status": status });
        if details.as_object().is_some_and(|d| !d.is_empty()) {
            body["statusDetails"] = details;
        }
        if connection
            .publish(&topic, body.to_string().into_bytes(), 0)
            .is_ok()
        {
            stats.job_event(&status.to_ascii_lowercase());
        }
    }
}

/// Downloads at once over the whole simulation: the simulated fleet shares one source address,
/// and the node bounds connections per address.
static DOWNLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Downloads an artifact as the device (Basic with its token), checking its SHA-256; the
/// bytes read.
async fn download(
    http: &reqwest::Client,
    config: &SimConfig,
    thing: &str,
    login: &Login,
    url: &str,
    sha256: Option<&str>,
) -> Result<u64, String> {
    let Login::Token(token) = login else {
        return Err("downloads with a certificate are not simulated".into());
    };
    let _slot = DOWNLOADS.acquire().await.map_err(|e| e.to_string())?;
    let url = if url.starts_with('/') {
        format!("{}{url}", config.api)
    } else {
        url.to_owned()
    };
    let response = http
        .get(&url)
        .basic_auth(thing, Some(token))
        .send()
        .await
        .map_err(|e| format!("download: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("download answered {}", response.status()));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("download: {e}"))?;
    if let Some(want) = sha256
        && hex::encode(Sha256::digest(&bytes)) != want
    {
        return Err("the artifact's SHA-256 does not match".into());
    }
    Ok(bytes.len() as u64)
}

/// Creates the simulation's job from `--job FILE`: its body, with the fleet's type as target
/// when it names none, under the id `{prefix}-job`.
pub(crate) async fn create(
    http: &reqwest::Client,
    config: &SimConfig,
) -> Result<Option<String>, SimError> {
    let Some(path) = &config.job else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimError::Config(format!("--job {}: {e}", path.display())))?;
    let mut body: Value = serde_json::from_str(&text)
        .map_err(|e| SimError::Config(format!("--job {}: {e}", path.display())))?;
    if body.get("targets").is_none() {
        let Some(t) = &config.device_type else {
            return Err(SimError::Config(
                "--job without targets needs --type (the fleet's devices are targeted by type)"
                    .into(),
            ));
        };
        body["targets"] = json!({ "types": [t] });
    }
    let id = format!("{}-job", config.prefix);
    let response = http
        .put(format!("{}/v1/jobs/{id}", config.api))
        .bearer_auth(&config.token)
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        return Err(SimError::Api(format!(
            "creating the job answered {status}: {}",
            answer["message"].as_str().unwrap_or("no message")
        )));
    }
    Ok(Some(id))
}

/// The job's record (status, counts by state, queued).
pub(crate) async fn progress(
    http: &reqwest::Client,
    config: &SimConfig,
    id: &str,
) -> Option<Value> {
    let response = http
        .get(format!("{}/v1/jobs/{id}", config.api))
        .bearer_auth(&config.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}
