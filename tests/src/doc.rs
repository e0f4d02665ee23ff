//! Documentation that runs: the `sh` blocks of a Markdown section, run in order in one bash
//! session with this build's `doppel` on the PATH, and each `text` block that follows a command
//! block checked against that block's output — line by line, in order, `…` standing for any text.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// A fenced block of a section: commands, or the output expected from the commands before it.
#[derive(Debug)]
pub enum Block {
    Commands(String),
    Expected(String),
}

/// The fenced blocks of the section under `heading` (`## …`), in order.
pub fn blocks(markdown: &str, heading: &str) -> Vec<Block> {
    let start = markdown
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let section = &markdown[start + 1..];
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
pub fn matches(pattern: &str, line: &str) -> bool {
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

pub fn need(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is not installed: `scripts/test` installs it (or `sudo apt-get install -y {package}`)"
    );
}

/// Runs the `sh` blocks of the section under `heading` of `markdown` in order, in one bash
/// session in a temporary directory, with `bin`'s directory first on the PATH and `env` set,
/// for at most `limit`; then checks each `text` block against the output of the command block
/// before it. Returns how many command blocks ran.
pub fn run_section(
    markdown: &str,
    heading: &str,
    bin: &str,
    env: &[(&str, &str)],
    limit: Duration,
) -> usize {
    let blocks = blocks(markdown, heading);
    // One bash session: every command block, preceded by a marker line so that the output can
    // be split per block. Whatever the section leaves running is stopped when the session ends.
    let mut script = String::from(
        "set -euo pipefail\nexec 2>&1\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    let mut commands = 0;
    for block in &blocks {
        if let Block::Commands(text) = block {
            script.push_str(&format!("echo '@@doc block {commands}@@'\n{text}\n"));
            commands += 1;
        }
    }
    script.push_str("echo '@@doc end@@'\n");
    let work = tempfile::tempdir().unwrap();
    let bin_dir = PathBuf::from(bin).parent().unwrap().to_owned();
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
        .env_remove("DOPPEL_CLUSTER_SECRET")
        .env_remove("DOPPEL_LOG")
        .envs(env.iter().copied())
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
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{heading} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().unwrap();
    assert!(
        status.success() && output.contains("@@doc end@@"),
        "{heading} stopped half way ({status}):\n{output}"
    );

    // Each expected block against the output of the command block before it.
    let mut outputs: Vec<&str> = output.split("@@doc block ").skip(1).collect();
    if let Some(last) = outputs.last_mut() {
        *last = last.split("@@doc end@@").next().unwrap_or("");
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
                            "{heading}, step {index}: expected a line {want:?} (after the ones before it) in:\n{}",
                            got_lines.join("\n")
                        ),
                    }
                }
            }
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_finds_commands_and_their_outputs() {
        let readme = "# x\n## A quick tour\n```sh\necho hi\n```\n\n```text\nhi\n```\n## More\n```sh\nno\n```\n";
        let blocks = blocks(readme, "## A quick tour");
        assert_eq!(blocks.len(), 2);
        assert!(matches!(&blocks[0], Block::Commands(c) if c == "echo hi"));
        assert!(matches!(&blocks[1], Block::Expected(e) if e == "hi"));
        assert!(
            super::matches("a…c", "abbbc") && super::matches("…", "x") && super::matches("x", "x")
        );
        assert!(!super::matches("a…c", "abd") && !super::matches("x", "xy"));
    }
}
