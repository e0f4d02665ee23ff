//! The operator CLI: `doppel things|keys|shadow|rules|watch|admin …` against a running node,
//! over its HTTP API and WebSocket change stream only (never the store). Human-readable output
//! by default, `--json` for scripts, `--get FIELD` for one value; errors are one line on stderr
//! and the exit code says what failed (see [`ClientError::exit_code`]).

use crate::client::{Client, ClientError, Conn, encode, print};
use clap::Subcommand;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::{path::PathBuf, process::ExitCode};

/// `doppel things …`
#[derive(Subcommand, Debug)]
pub enum ThingsCommand {
    /// Register a thing; prints its device token (its MQTT password), shown only this once.
    Add {
        /// The thing's name.
        name: String,
        /// Its device type.
        #[arg(long = "type")]
        device_type: Option<String>,
        /// An attribute, as KEY=VALUE (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = key_value)]
        attributes: Vec<(String, String)>,
    },
    /// List things by name (one page of up to --limit).
    List {
        /// Only things of this type.
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Only things with this attribute value, as KEY=VALUE.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = key_value)]
        attribute: Option<(String, String)>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show a thing.
    Get {
        /// The thing's name.
        name: String,
    },
    /// Decommission a thing: its token stops working, a live session is closed, its state and
    /// history are removed.
    Rm {
        /// The thing's name.
        name: String,
    },
}

/// `doppel keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; prints it, shown only this once.
    Add {
        /// `viewer`, `operator` or `admin`.
        #[arg(long)]
        role: String,
        /// Limit the key to things of these device types (comma-separated).
        #[arg(long, value_delimiter = ',')]
        types: Option<Vec<String>>,
    },
    /// List API keys (never their secrets).
    List,
    /// Revoke an API key at once.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// `doppel shadow …`
#[derive(Subcommand, Debug)]
pub enum ShadowCommand {
    /// Show a shadow: version, desired, reported and delta.
    Get {
        /// The thing.
        thing: String,
        /// A named shadow (the classic shadow without it).
        #[arg(long)]
        name: Option<String>,
    },
    /// Change a shadow's desired (operator) or reported (admin) state; prints the new version.
    Update {
        /// The thing.
        thing: String,
        /// A named shadow (the classic shadow without it).
        #[arg(long)]
        name: Option<String>,
        /// Desired fields, as a JSON object (`null` removes a field).
        #[arg(long, value_name = "JSON")]
        desired: Option<String>,
        /// Reported fields, as a JSON object.
        #[arg(long, value_name = "JSON")]
        reported: Option<String>,
        /// Apply only if the shadow is at this version (exit code 4 otherwise).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<u64>,
    },
}

/// `doppel admin …`
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Replace the bootstrap admin token; prints the new one, shown only this once.
    RotateKey,
}

/// The node-side rule commands (`doppel rules put|get|list|rm`).
#[derive(Subcommand, Debug)]
pub enum RemoteRules {
    /// Store a rule on the node (checked against the deployment's device types).
    Put {
        /// The rule's name (the name in its source).
        name: String,
        /// The rule file.
        file: PathBuf,
    },
    /// Print a stored rule's source.
    Get {
        /// The rule's name.
        name: String,
    },
    /// List the stored rules.
    List,
    /// Remove a stored rule.
    Rm {
        /// The rule's name.
        name: String,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Runs an operator command on a small runtime of its own; prints the error, if any, as one
/// line and returns the exit code.
pub fn run<F>(command: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), ClientError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// `doppel things …`
pub async fn things(conn: Conn, command: ThingsCommand) -> Result<(), ClientError> {
    let client = Client::new(&conn);
    match command {
        ThingsCommand::Add {
            name,
            device_type,
            attributes,
        } => {
            let mut body = json!({ "name": name });
            if let Some(t) = device_type {
                body["type"] = json!(t);
            }
            if !attributes.is_empty() {
                let attributes: Map<String, Value> = attributes
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                body["attributes"] = Value::Object(attributes);
            }
            let (answer, _) = client
                .send(Method::POST, "/v1/things", Some(&body), &[])
                .await?;
            print(&conn, &answer, || {
                format!(
                    "registered {}\ndevice token (shown once; the device's MQTT password): {}",
                    answer["name"].as_str().unwrap_or(&name),
                    answer["token"].as_str().unwrap_or("?")
                )
            })
        }
        ThingsCommand::List {
            device_type,
            attribute,
            limit,
        } => {
            let mut query = format!("?limit={limit}");
            if let Some(t) = device_type {
                query.push_str(&format!("&type={}", encode(&t)));
            }
            if let Some((k, v)) = attribute {
                query.push_str(&format!("&attribute={}", encode(&format!("{k}:{v}"))));
            }
            let answer = client.get(&format!("/v1/things{query}")).await?;
            print(&conn, &answer, || {
                let things = answer["things"].as_array().cloned().unwrap_or_default();
                let mut lines: Vec<String> = things.iter().map(thing_line).collect();
                if answer.get("next").is_some() {
                    lines.push(format!(
                        "… more after {} (raise --limit)",
                        answer["next"].as_str().unwrap_or("")
                    ));
                }
                if lines.is_empty() {
                    "no things".to_owned()
                } else {
                    lines.join("\n")
                }
            })
        }
        ThingsCommand::Get { name } => {
            let answer = client.get(&format!("/v1/things/{}", encode(&name))).await?;
            print(&conn, &answer, || thing_line(&answer))
        }
        ThingsCommand::Rm { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/things/{}", encode(&name)),
                    None,
                    &[],
                )
                .await?;
            print(&conn, &json!({ "name": name }), || {
                format!("decommissioned {name}")
            })
        }
    }
}

/// One thing on one line: name, type, attributes.
fn thing_line(thing: &Value) -> String {
    let mut line = thing["name"].as_str().unwrap_or("?").to_owned();
    if let Some(t) = thing["type"].as_str() {
        line.push_str(&format!("  type {t}"));
    }
    if let Some(attributes) = thing["attributes"].as_object().filter(|a| !a.is_empty()) {
        let pairs: Vec<String> = attributes
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        line.push_str(&format!("  {}", pairs.join(" ")));
    }
    line
}

/// `doppel keys …`
pub async fn keys(conn: Conn, command: KeysCommand) -> Result<(), ClientError> {
    let client = Client::new(&conn);
    match command {
        KeysCommand::Add { role, types } => {
            let mut body = json!({ "role": role });
            if let Some(types) = types {
                body["types"] = json!(types);
            }
            let (answer, _) = client
                .send(Method::POST, "/v1/keys", Some(&body), &[])
                .await?;
            print(&conn, &answer, || {
                format!(
                    "created {} key {}\nkey (shown once): {}",
                    answer["role"].as_str().unwrap_or("?"),
                    answer["id"].as_str().unwrap_or("?"),
                    answer["key"].as_str().unwrap_or("?")
                )
            })
        }
        KeysCommand::List => {
            let answer = client.get("/v1/keys").await?;
            print(&conn, &answer, || {
                let keys = answer["keys"].as_array().cloned().unwrap_or_default();
                if keys.is_empty() {
                    return "no keys".to_owned();
                }
                keys.iter()
                    .map(|k| {
                        let types = k["types"]
                            .as_array()
                            .map(|t| {
                                format!(
                                    "  types {}",
                                    t.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                )
                            })
                            .unwrap_or_default();
                        format!(
                            "{}  {}{types}  created by {}",
                            k["id"].as_str().unwrap_or("?"),
                            k["role"].as_str().unwrap_or("?"),
                            k["created_by"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeysCommand::Revoke { id } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/keys/{}", encode(&id)),
                    None,
                    &[],
                )
                .await?;
            print(&conn, &json!({ "id": id }), || format!("revoked key {id}"))
        }
    }
}

fn shadow_query(name: Option<&str>) -> String {
    name.map(|n| format!("?name={}", encode(n)))
        .unwrap_or_default()
}

fn object(flag: &str, text: &str) -> Result<Value, ClientError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ClientError::Invalid(format!(
            "--{flag} must be a JSON object, e.g. '{{\"speed\": 4}}'"
        ))),
    }
}

/// `doppel shadow …`
pub async fn shadow(conn: Conn, command: ShadowCommand) -> Result<(), ClientError> {
    let client = Client::new(&conn);
    match command {
        ShadowCommand::Get { thing, name } => {
            let path = format!(
                "/v1/things/{}/shadow{}",
                encode(&thing),
                shadow_query(name.as_deref())
            );
            let answer = client.get(&path).await?;
            print(&conn, &answer, || {
                let state = &answer["state"];
                let mut lines = vec![format!("{thing} version {}", answer["version"])];
                for section in ["desired", "reported", "delta"] {
                    if let Some(v) = state.get(section) {
                        lines.push(format!("{section}: {v}"));
                    }
                }
                lines.join("\n")
            })
        }
        ShadowCommand::Update {
            thing,
            name,
            desired,
            reported,
            if_match,
        } => {
            let mut state = Map::new();
            if let Some(text) = desired {
                state.insert("desired".into(), object("desired", &text)?);
            }
            if let Some(text) = reported {
                state.insert("reported".into(), object("reported", &text)?);
            }
            if state.is_empty() {
                return Err(ClientError::Invalid(
                    "give --desired, --reported or both".into(),
                ));
            }
            let body = json!({ "state": state });
            let headers: Vec<(&str, String)> = if_match
                .map(|v| ("if-match", format!("\"{v}\"")))
                .into_iter()
                .collect();
            let path = format!(
                "/v1/things/{}/shadow{}",
                encode(&thing),
                shadow_query(name.as_deref())
            );
            let (answer, _) = client
                .send(Method::PATCH, &path, Some(&body), &headers)
                .await?;
            print(&conn, &answer, || {
                format!("{thing} version {}", answer["version"])
            })
        }
    }
}

/// `doppel rules put|get|list|rm`.
pub async fn rules(conn: Conn, command: RemoteRules) -> Result<(), ClientError> {
    let client = Client::new(&conn);
    match command {
        RemoteRules::Put { name, file } => {
            let source = std::fs::read_to_string(&file)
                .map_err(|e| ClientError::Other(format!("reading {}: {e}", file.display())))?;
            let body = json!({ "source": source });
            let path = format!("/v1/rules/{}", encode(&name));
            let (answer, _) = match client.send(Method::PUT, &path, Some(&body), &[]).await {
                Err(ClientError::Invalid(message)) => {
                    return Err(ClientError::Invalid(format!(
                        "{}: {message}",
                        file.display()
                    )));
                }
                other => other?,
            };
            print(&conn, &answer, || {
                let mut lines = vec![format!("stored rule {name}")];
                for warning in answer["warnings"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "warning: {}",
                        warning["message"].as_str().unwrap_or("")
                    ));
                }
                lines.join("\n")
            })
        }
        RemoteRules::Get { name } => {
            let answer = client.get(&format!("/v1/rules/{}", encode(&name))).await?;
            print(&conn, &answer, || {
                answer["source"]
                    .as_str()
                    .unwrap_or("")
                    .trim_end()
                    .to_owned()
            })
        }
        RemoteRules::List => {
            let answer = client.get("/v1/rules").await?;
            print(&conn, &answer, || {
                let rules = answer["rules"].as_array().cloned().unwrap_or_default();
                if rules.is_empty() {
                    return "no rules".to_owned();
                }
                rules
                    .iter()
                    .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        RemoteRules::Rm { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/rules/{}", encode(&name)),
                    None,
                    &[],
                )
                .await?;
            print(&conn, &json!({ "name": name }), || {
                format!("removed rule {name}")
            })
        }
    }
}

/// `doppel admin …`
pub async fn admin(conn: Conn, command: AdminCommand) -> Result<(), ClientError> {
    let client = Client::new(&conn);
    match command {
        AdminCommand::RotateKey => {
            let (answer, _) = client
                .send(Method::POST, "/v1/admin/rotate-key", None, &[])
                .await?;
            print(&conn, &answer, || {
                format!(
                    "new bootstrap admin token (shown once; the old one no longer works): {}",
                    answer["token"].as_str().unwrap_or("?")
                )
            })
        }
    }
}

/// `doppel watch THING…`: prints the twins' snapshots and changes as they arrive, one line
/// each, until interrupted or `count` frames were printed.
pub async fn watch(conn: Conn, things: Vec<String>, count: Option<u64>) -> Result<(), ClientError> {
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
    let client = Client::new(&conn);
    let url = format!(
        "{}/v1/ws",
        client
            .base()
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Invalid(format!("--url: {e}")))?;
    if let Some(key) = client.key() {
        let value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ClientError::Invalid("the key is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let message = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("the node answered {status}"));
                match status {
                    401 | 403 => ClientError::Denied(message),
                    429 => ClientError::Unavailable(message),
                    _ => ClientError::Other(message),
                }
            }
            other => ClientError::Unavailable(format!(
                "cannot reach the node at {}: {other}",
                client.base()
            )),
        })?;
    let subscribe = json!({"type": "subscribe", "id": "watch", "things": things});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| ClientError::Unavailable(format!("the connection broke: {e}")))?;
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let frame = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err(ClientError::Unavailable(
                    "the node closed the connection".into(),
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(ClientError::Unavailable(format!(
                    "the connection broke: {e}"
                )));
            }
        };
        let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
            continue;
        };
        if frame["type"] == "error" {
            let message = frame["message"].as_str().unwrap_or("error").to_owned();
            return Err(match frame["code"].as_str() {
                Some("not_found") => ClientError::NotFound(message),
                Some("forbidden") => ClientError::Denied(message),
                Some("invalid_request") => ClientError::Invalid(message),
                _ => ClientError::Other(message),
            });
        }
        if conn.json {
            println!("{frame}");
        } else if let Some(line) = frame_line(&frame) {
            println!("{line}");
        } else {
            continue;
        }
        printed += 1;
    }
    Ok(())
}

/// A change-stream frame as one human-readable line.
fn frame_line(frame: &Value) -> Option<String> {
    let thing = frame["thing"].as_str().unwrap_or("?");
    let shadow = frame["shadow"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let version = &frame["version"];
    match frame["type"].as_str()? {
        "snapshot" | "resync" => Some(format!(
            "{} {thing}{shadow} v{version} {}",
            frame["type"].as_str().unwrap_or(""),
            frame["state"]
        )),
        "change" => {
            let mut line = format!("change {thing}{shadow} v{version}");
            for section in ["desired", "reported"] {
                if let Some(v) = frame["changed"].get(section) {
                    line.push_str(&format!(" {section} {v}"));
                }
            }
            if let Some(delta) = frame.get("delta").filter(|d| !d.is_null()) {
                line.push_str(&format!(" delta {delta}"));
            }
            Some(line)
        }
        "event" => Some(format!(
            "event {thing} rule {} {} {}",
            frame["rule"].as_str().unwrap_or("?"),
            frame["kind"].as_str().unwrap_or("?"),
            frame["payload"]
        )),
        _ => None,
    }
}
