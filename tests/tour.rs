//! The README's quick tour, run as written: its `sh` blocks are taken from README.md itself (so
//! they cannot drift from what readers see), run in order in one bash session with this build's
//! `doppel` on the PATH, and each `text` block that follows a command block must appear in that
//! block's output — line by line, in order, `…` standing for any text.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// A fenced block of the tour: commands, or the output expected from the commands before it.
#[derive(Debug)]
enum Block {
    Commands(String),
    Expected(String),
}

/// The fenced blocks of the README's "A quick tour" section, in order.
fn tour_blocks(readme: &str) -> Vec<Block> {
    let start = readme
        .find("\n## A quick tour")
        .expect("the README has a quick tour");
    let section = &readme[start + 1..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let kind = match line.trim_end() {
            "```sh" => Block::Commands as fn(String) -> Block,
            "```text" => Block::Expected,
            _ => continue,
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_end() != "```")
            .collect();
        blocks.push(kind(body.join("\n")));
    }
    blocks
}

/// Whether `line` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn need(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is not installed: `scripts/test` installs it (or `sudo apt-get install -y {package}`)"
    );
}

#[test]
fn parsing_finds_commands_and_their_outputs() {
    let readme =
        "# x\n## A quick tour\n```sh\necho hi\n```\n\n```text\nhi\n```\n## More\n```sh\nno\n```\n";
    let blocks = tour_blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert!(matches!(&blocks[0], Block::Commands(c) if c == "echo hi"));
    assert!(matches!(&blocks[1], Block::Expected(e) if e == "hi"));
    assert!(matches("a…c", "abbbc") && matches("…", "x") && matches("x", "x"));
    assert!(!matches("a…c", "abd") && !matches("x", "xy"));
}

#[test]
fn the_readme_tour_runs_as_written() {
    for (program, package) in [
        ("curl", "curl"),
        ("mosquitto_rr", "mosquitto-clients"),
        ("mosquitto_pub", "mosquitto-clients"),
    ] {
        need(program, package);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    assert!(blocks.len() >= 10, "the tour has its steps: {blocks:?}");

    // One bash session: every command block, preceded by a marker line so that the output can
    // be split per block. Whatever the tour leaves running is stopped when the session ends.
    let mut script = String::from(
        "set -euo pipefail\nexec 2>&1\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    let mut commands = 0;
    for block in &blocks {
        if let Block::Commands(text) = block {
            script.push_str(&format!("echo '@@tour block {commands}@@'\n{text}\n"));
            commands += 1;
        }
    }
    script.push_str("echo '@@tour end@@'\n");
    let work = tempfile::tempdir().unwrap();
    let bin_dir = PathBuf::from(BIN).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(work.path())
        .env("PATH", path)
        .env("TMPDIR", work.path())
        .env_remove("DOPPEL_KEY")
        .env_remove("DOPPEL_URL")
        .env_remove("DOPPEL_ADMIN_TOKEN")
        .env_remove("DOPPEL_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tour did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().unwrap();
    assert!(
        status.success() && output.contains("@@tour end@@"),
        "the tour stopped half way ({status}):\n{output}"
    );

    // Each expected block against the output of the command block before it.
    let mut outputs: Vec<&str> = output.split("@@tour block ").skip(1).collect();
    if let Some(last) = outputs.last_mut() {
        *last = last.split("@@tour end@@").next().unwrap_or("");
    }
    let mut current = None;
    for block in &blocks {
        match block {
            Block::Commands(_) => current = Some(current.map_or(0, |c: usize| c + 1)),
            Block::Expected(expected) => {
                let index = current.expect("an expected output follows a command block");
                let got = outputs[index];
                let got_lines: Vec<&str> = got.lines().skip(1).collect();
                let mut at = 0;
                for want in expected.lines() {
                    match got_lines[at..].iter().position(|line| matches(want, line)) {
                        Some(found) => at += found + 1,
                        None => panic!(
                            "tour step {index}: expected a line {want:?} (after the ones before it) in:\n{}",
                            got_lines.join("\n")
                        ),
                    }
                }
            }
        }
    }
}
