//! HTTP calls to a node with a chosen bearer token.

use crate::node::{ADMIN_TOKEN, Node};
use reqwest::Method;
use serde_json::{Value, json};

/// An HTTP client for one node and one key.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// As the bootstrap admin.
    pub fn admin(node: &Node) -> Api {
        Api::with(node, Some(ADMIN_TOKEN))
    }

    /// With `token` (or none).
    pub fn with(node: &Node, token: Option<&str>) -> Api {
        Api {
            base: node.url(""),
            token: token.map(str::to_owned),
            client: node.client(),
        }
    }

    /// Over HTTPS (a node started with `--tls-cert`), trusting `server_pem` for `localhost`.
    pub fn over_tls(node: &Node, token: Option<&str>, server_pem: &str) -> Api {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .add_root_certificate(reqwest::Certificate::from_pem(server_pem.as_bytes()).unwrap())
            .resolve("localhost", node.http)
            .build()
            .unwrap();
        Api {
            base: format!("https://localhost:{}", node.http.port()),
            token: token.map(str::to_owned),
            client,
        }
    }

    /// `GET` of a text document: status and body.
    pub async fn text(&self, path: &str) -> (u16, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Sends a request; returns the status, the JSON body (`null` if none) and the headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        )
    }

    /// `GET`: status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, b, _) = self.send(Method::GET, path, None, &[]).await;
        (s, b)
    }

    /// `POST` JSON: status and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self.send(Method::POST, path, Some(body), &[]).await;
        (s, b)
    }

    /// `PUT` JSON.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self.send(Method::PUT, path, Some(body), &[]).await;
        (s, b)
    }

    /// `PATCH` JSON.
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self.send(Method::PATCH, path, Some(body), &[]).await;
        (s, b)
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, b, _) = self.send(Method::DELETE, path, None, &[]).await;
        (s, b)
    }

    /// Creates an API key; returns the bearer token.
    pub async fn create_key(&self, role: &str, types: Option<&[&str]>) -> String {
        let mut body = json!({ "role": role });
        if let Some(types) = types {
            body["types"] = json!(types);
        }
        let (status, reply) = self.post("/v1/keys", body).await;
        assert_eq!(status, 201, "{reply}");
        reply["key"].as_str().unwrap().to_owned()
    }

    /// Registers or replaces a device type.
    pub async fn put_type(&self, name: &str, body: Value) {
        let (status, reply) = self.put(&format!("/v1/types/{name}"), body).await;
        assert_eq!(status, 200, "{reply}");
    }

    /// Registers a thing (with an optional type); returns its token.
    pub async fn register(&self, name: &str, device_type: Option<&str>) -> String {
        let mut body = json!({ "name": name });
        if let Some(t) = device_type {
            body["type"] = json!(t);
        }
        let (status, reply) = self.post("/v1/things", body).await;
        assert_eq!(status, 201, "{reply}");
        reply["token"].as_str().unwrap().to_owned()
    }
}
