//! Debian's Mosquitto on loopback, configured with the files shipped in `deploy/mosquitto/`
//! (only the listener port and file locations are rewritten for the test).

use nix::{sys::signal, unistd::Pid};
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The password of doppel's own broker account in tests.
pub const DOPPEL_PASSWORD: &str = "doppel-broker-password";

/// A running Mosquitto.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/mosquitto")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// Starts Mosquitto with the shipped configuration and doppel's account.
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = deploy_file("mosquitto.conf");
        let conf = conf
            .replace(
                "listener 1883",
                &format!("listener {} 127.0.0.1", addr.port()),
            )
            .replace("/etc/mosquitto/doppel/passwd", &path(dir.path(), "passwd"))
            .replace("/etc/mosquitto/doppel/acl", &path(dir.path(), "acl"))
            .replace("/var/lib/mosquitto/", &format!("{}/", dir.path().display()));
        assert!(
            conf.contains(&format!("listener {}", addr.port())),
            "the shipped configuration has `listener 1883`"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        std::fs::write(dir.path().join("acl"), deploy_file("acl")).unwrap();
        let status = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(dir.path().join("passwd"))
            .args(["doppel", DOPPEL_PASSWORD])
            .status()
            .expect("mosquitto_passwd is not installed: `scripts/test` installs it (or `sudo apt-get install -y mosquitto`)");
        assert!(status.success());
        let mut broker = Mosquitto {
            child: None,
            addr,
            dir,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("mosquitto is not installed: `scripts/test` installs it (or `sudo apt-get install -y mosquitto`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL doppel connects with.
    pub fn doppel_url(&self) -> String {
        format!("mqtt://doppel:{DOPPEL_PASSWORD}@{}", self.addr)
    }

    /// Adds (or replaces) an account and makes Mosquitto reload its accounts.
    pub fn add_user(&self, user: &str, password: &str) {
        let status = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(self.dir.path().join("passwd"))
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success());
        let pid = Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        signal::kill(pid, signal::Signal::SIGHUP).unwrap();
    }

    /// Mosquitto's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops and starts the broker on the same port and files.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), signal::Signal::SIGTERM);
            child.wait().unwrap();
        }
        self.spawn();
    }
}

fn path(dir: &Path, name: &str) -> String {
    PathBuf::from(dir).join(name).display().to_string()
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
