//! A private PostgreSQL server for tests and benchmarks: Debian's `initdb` and `postgres` (via
//! `pg_ctl`) in a temporary directory, on a free loopback port, as the unprivileged `postgres`
//! user when running as root. Stopped and removed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// What to do when PostgreSQL is missing.
const INSTALL: &str = "PostgreSQL is missing: run scripts/test, which installs it \
                       (or: apt-get install -y postgresql)";

/// A running private server.
#[derive(Debug)]
pub struct LocalServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server's programs as this user (when running as root).
    user: Option<&'static str>,
    durable: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl LocalServer {
    /// Starts a server that does not `fsync` (tests: a killed node, not a lost machine).
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// Starts a server; `durable` keeps PostgreSQL's `fsync` (benchmarks).
    pub fn start_with(durable: bool) -> Result<Self, String> {
        let bin = bin_dir().ok_or_else(|| INSTALL.to_string())?;
        let dir = std::env::temp_dir().join(format!(
            "doppel-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let user = running_as_root().then_some("postgres");
        if let Some(user) = user {
            run(Command::new("chown").arg(format!("{user}:")).arg(&dir))?;
        }
        let port = free_port()?;
        let server = Self {
            dir,
            bin,
            port,
            user,
            durable,
        };
        let data = server.data();
        run(server
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "doppel",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))?;
        server.resume()?;
        Ok(server)
    }

    /// `postgres://doppel@127.0.0.1:PORT/postgres`, the store URL without options.
    pub fn url(&self) -> String {
        format!("postgres://doppel@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): like a crash, connections break.
    pub fn stop(&self) -> Result<(), String> {
        run(self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data()))
    }

    /// Starts the server again on the same port and data, and waits until it accepts
    /// connections.
    pub fn resume(&self) -> Result<(), String> {
        let fsync = if self.durable { "on" } else { "off" };
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c max_connections=300",
            port = self.port,
            dir = self.dir.display(),
        );
        run(self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("postgres.log"))
            .arg("-D")
            .arg(self.data()))?;
        // `pg_ctl -w` waited for the server; check it answers TCP (no client library here: this
        // may run inside an async runtime).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("postgresql on port {} did not answer", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's programs (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin.join("initdb"))
                .exists()
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{command:?}: {e} ({INSTALL})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
