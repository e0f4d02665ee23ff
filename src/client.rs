//! The operator CLI's connection to a node: its HTTP API (`--url`/`DOPPEL_URL`, bearer key
//! `--key`/`DOPPEL_KEY`) and its WebSocket change stream. Every failure becomes a
//! [`ClientError`] with a one-line message and the exit code that says what failed.

use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

/// Where the node is and who is asking: the options every operator command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The node's HTTP address.
    #[arg(
        long,
        env = "DOPPEL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The API key (or the bootstrap admin token).
    #[arg(long, env = "DOPPEL_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print the node's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print one field of the answer (a dotted path, e.g. `token` or `state.desired.speed`),
    /// strings without quotes: for scripts.
    #[arg(long, global = true, value_name = "FIELD", conflicts_with = "json")]
    pub get: Option<String>,
}

/// Why a command failed; its exit code tells scripts what kind of failure it was.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node refused the request as malformed or too large (400, 413, 415).
    #[error("{0}")]
    Invalid(String),
    /// The thing, key, rule or shadow does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or changed meanwhile (409, 412).
    #[error("{0}")]
    Conflict(String),
    /// The key is missing, unknown, or may not do this (401, 403).
    #[error("{0}")]
    Denied(String),
    /// The node cannot be reached or cannot serve now (connection refused, 503, 504).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (a 5xx, a reply that is not what the API documents, a local file).
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The process exit code for this failure (documented in the README).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            ClientError::Other(_) => 1,
            ClientError::Invalid(_) => 2,
            ClientError::NotFound(_) => 3,
            ClientError::Conflict(_) => 4,
            ClientError::Denied(_) => 5,
            ClientError::Unavailable(_) => 6,
        })
    }

    fn from_status(status: u16, message: String) -> Self {
        match status {
            400 | 408 | 413 | 415 | 422 => ClientError::Invalid(message),
            401 | 403 => ClientError::Denied(message),
            404 => ClientError::NotFound(message),
            409 | 412 => ClientError::Conflict(message),
            429 | 503 | 504 => ClientError::Unavailable(message),
            _ => ClientError::Other(message),
        }
    }
}

/// An HTTP client for one node and one key.
#[derive(Debug)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `conn`.
    pub fn new(conn: &Conn) -> Self {
        Self {
            base: conn.url.trim_end_matches('/').to_owned(),
            key: conn.key.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The key, if one was given.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Sends a request; the JSON answer (`null` for an empty one) and its headers, or the
    /// node's error as a [`ClientError`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(Value, reqwest::header::HeaderMap), ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            ClientError::Unavailable(format!(
                "cannot reach the node at {}: {}",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unavailable(format!("the node's answer broke off: {e}")))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if (200..300).contains(&status) {
            return Ok((body, headers));
        }
        let message = body["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the node answered {status}"));
        let message = if status == 401 && self.key.is_none() {
            "no key: pass --key or set DOPPEL_KEY".to_owned()
        } else {
            message
        };
        Err(ClientError::from_status(status, message))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        Ok(self.send(Method::GET, path, None, &[]).await?.0)
    }
}

/// The innermost cause of a connection error ("Connection refused"), not reqwest's wrapping.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A path segment or query value, percent-encoded.
pub fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The value at a dotted path of `value`.
pub fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(value, |v, part| match v {
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => v.get(part),
        })
}

/// Prints `value`: one field of it (`--get`), all of it as JSON (`--json`), or `human`.
pub fn print(
    conn: &Conn,
    value: &Value,
    human: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    if let Some(path) = &conn.get {
        match field(value, path) {
            Some(Value::String(s)) => println!("{s}"),
            Some(other) => println!("{other}"),
            None => {
                return Err(ClientError::Other(format!(
                    "the answer has no field {path:?}"
                )));
            }
        }
    } else if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_found_by_dotted_paths() {
        let v = json!({"state": {"desired": {"speed": 4}}, "things": [{"name": "a"}]});
        assert_eq!(field(&v, "state.desired.speed"), Some(&json!(4)));
        assert_eq!(field(&v, "things.0.name"), Some(&json!("a")));
        assert_eq!(field(&v, "state.nope"), None);
    }

    #[test]
    fn path_parts_are_percent_encoded() {
        assert_eq!(encode("pump-7"), "pump-7");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
