//! A `doppel serve` process on loopback: ephemeral ports, its own data directory, the admin
//! token the test chose, and the addresses it announces on stdout.

use nix::{sys::signal, unistd::Pid};
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The admin token every test node uses.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How to start a node.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra command-line arguments (after `serve`).
    pub args: Vec<String>,
    /// A TOML configuration file's content.
    pub config: Option<String>,
    /// Start without `DOPPEL_ADMIN_TOKEN`, so that the node generates one.
    pub no_admin_token: bool,
    /// Run on this store (`--store URL`) instead of an embedded store in the node's directory.
    pub store: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The node serves HTTPS with this certificate (PEM): the helpers' requests go to
    /// `https://localhost:PORT` trusting it.
    pub trust: Option<String>,
}

/// A running `doppel serve`.
#[derive(Debug)]
pub struct Node {
    bin: PathBuf,
    child: Option<Child>,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// The MQTT endpoint, if the node runs one.
    pub mqtt: Option<SocketAddr>,
    /// The HTTP API.
    pub http: SocketAddr,
    /// The MQTT endpoint's TLS port, if the node serves TLS.
    pub mqtt_tls: Option<SocketAddr>,
    /// Whether the HTTP API is served over TLS.
    pub https: bool,
    options: Options,
    log: PathBuf,
    /// What the node printed on stdout before it was ready (this start's lines only).
    pub announced: Vec<String>,
}

impl Node {
    /// Starts a node on a fresh data directory; `bin` is `env!("CARGO_BIN_EXE_doppel")`.
    pub fn start(bin: &str, options: Options) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut node = Node {
            bin: PathBuf::from(bin),
            child: None,
            data_dir,
            log: dir.path().join("node.log"),
            _dir: Some(dir),
            mqtt: None,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_tls: None,
            https: false,
            options,
            announced: Vec::new(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        match &self.options.store {
            Some(url) => cmd.args(["--store", url]),
            None => cmd.arg("--data-dir").arg(&self.data_dir),
        };
        if !self.options.args.iter().any(|a| a == "--http-listen") {
            cmd.args(["--http-listen", "127.0.0.1:0"]);
        }
        cmd.env("DOPPEL_LOG", "info,fjall=warn,lsm_tree=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            ));
        if self.options.no_admin_token {
            cmd.env_remove("DOPPEL_ADMIN_TOKEN");
        } else {
            cmd.env("DOPPEL_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        if !self
            .options
            .args
            .iter()
            .any(|a| a == "--mqtt-url" || a == "--mqtt-listen")
        {
            cmd.args(["--mqtt-listen", "127.0.0.1:0"]);
        }
        cmd.args(&self.options.args);
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        if let Some(config) = &self.options.config {
            let path = self.data_dir.with_file_name("doppel.toml");
            std::fs::write(&path, config).unwrap();
            cmd.arg("--config").arg(path);
        }
        self.announced.clear();
        let mut child = cmd.spawn().expect("doppel starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("node did not get ready:\n{}", self.log()));
            self.announced.push(line.clone());
            if let Some(addr) = line.strip_prefix("doppel: mqtt endpoint listening on ") {
                self.mqtt = Some(addr.parse().unwrap());
            } else if let Some(addr) =
                line.strip_prefix("doppel: mqtt endpoint (tls) listening on ")
            {
                self.mqtt_tls = Some(addr.parse().unwrap());
            } else if let Some(addr) = line.strip_prefix("doppel: http listening on ") {
                self.http = addr.parse().unwrap();
            } else if let Some(addr) = line.strip_prefix("doppel: https listening on ") {
                self.http = addr.parse().unwrap();
                self.https = true;
            } else if line == "doppel: ready" {
                break;
            }
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The MQTT endpoint's address.
    pub fn mqtt(&self) -> SocketAddr {
        self.mqtt.expect("the node runs the MQTT endpoint")
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        match &self.options.trust {
            Some(_) => format!("https://localhost:{}{path}", self.http.port()),
            None => format!("http://{}{path}", self.http),
        }
    }

    /// An HTTP client for [`Node::url`]s (trusting the node's certificate when it has one).
    /// Its requests give up after a minute (connecting after five seconds), so a request the
    /// node never answers fails its test instead of hanging it.
    pub fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(pem) = &self.options.trust {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
                .resolve("localhost", self.http);
        }
        builder.build().unwrap()
    }

    /// Registers a thing; returns its token.
    pub async fn register(&self, name: &str) -> String {
        let response = self
            .client()
            .post(self.url("/v1/things"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "registering {name}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/things/{thing}/shadow[?name=]`: status and body.
    pub async fn shadow(&self, thing: &str, name: Option<&str>) -> (u16, Value) {
        let query = name.map(|n| format!("?name={n}")).unwrap_or_default();
        let response = self.get(&format!("/v1/things/{thing}/shadow{query}")).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Resident memory of the node process, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// `GET path` with the admin token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client()
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// The node's process id.
    pub fn pid_raw(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal::kill(self.pid(), signal::Signal::SIGTERM).unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stops running (as a long GC pause or a frozen VM would).
    pub fn pause(&self) {
        signal::kill(self.pid(), signal::Signal::SIGSTOP).unwrap();
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        signal::kill(self.pid(), signal::Signal::SIGCONT).unwrap();
    }

    /// Whether the process is running (not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the node again on the same data directory (new ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.mqtt = None;
        self.spawn();
    }

    /// Starts the node again on the addresses it had (its clients reconnect to them).
    pub fn restart_in_place(&mut self) {
        let (http, mqtt) = (self.http, self.mqtt.expect("an MQTT endpoint"));
        self.options.args.extend([
            "--http-listen".to_owned(),
            http.to_string(),
            "--mqtt-listen".to_owned(),
            mqtt.to_string(),
        ]);
        self.restart();
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
