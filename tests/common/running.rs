//! The exporter's binary run as a child process, its stderr and stdout collected line by line.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_aws-cost-exporter");

/// The binary, running; killed when dropped.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl Running {
    /// Starts the binary with `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts the binary with `args` and these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for output in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `predicate` (at most [`WAIT`]).
    /// Sends the process SIGHUP (a configuration reload), as an operator would with `kill`.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP {}: {status}", self.child.id());
    }

    pub fn wait_for_line(&mut self, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line.clone());
                if predicate(&line) {
                    return line;
                }
            }
        }
        panic!("no matching log line; log so far:\n{}", self.log.join("\n"));
    }

    /// The address of the `listening` line.
    pub fn address(&mut self) -> SocketAddr {
        let line = self.wait_for_line(|l| l.contains(" msg=listening "));
        line.split(' ')
            .find_map(|part| part.strip_prefix("address="))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Reads every line that comes within `duration`.
    pub fn read_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// How many of the lines read so far satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&str) -> bool) -> usize {
        self.log.iter().filter(|line| predicate(line)).count()
    }

    /// Reads what is left to read, until nothing comes for 200 ms.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
    }

    /// Stops the binary and returns everything it wrote.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
