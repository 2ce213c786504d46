//! The server under test: the real `voice-agent-server` binary in its own
//! process, so that its CPU time and memory are measured apart from the load
//! generator's, configured through the environment exactly as an operator
//! would (Twilio and OpenAI credentials pointing at the load generator).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server process.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Log lines at WARN or ERROR (the first few are kept, all are counted).
    pub warnings: Arc<Mutex<(usize, Vec<String>)>>,
    dir: PathBuf,
    /// The directory (and its database) outlives the process: `kill` keeps it for a restart.
    keep_dir: bool,
}

/// Where the server binary is: beside this one (same profile), unless given.
pub fn default_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name(format!("voice-agent-server{}", std::env::consts::EXE_SUFFIX))
}

impl ServerProcess {
    /// Starts `binary` with exactly `env` (nothing inherited but PATH), in a
    /// fresh directory (so no `.env` is read and the SQLite file is new), and
    /// waits for its "listening on" line.
    /// `cpus`: a `taskset -c` list the server is confined to.
    pub fn start(binary: &Path, cpus: Option<&str>, env: &[(&str, String)]) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "voice-agent-loadgen-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        Self::start_in(dir, binary, cpus, env)
    }

    /// Like [`ServerProcess::start`] in `dir`, which may hold the database of
    /// a server killed before (the chaos soak's restart).
    pub fn start_in(dir: PathBuf, binary: &Path, cpus: Option<&str>, env: &[(&str, String)]) -> Result<Self, String> {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SQLite in the fresh directory, unless a (PostgreSQL) database is given.
        if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
            cmd.env("DATABASE_URL", format!("sqlite://{}/calls.db", dir.display()));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let warnings: Arc<Mutex<(usize, Vec<String>)>> = Arc::default();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        // Both pipes are drained for the whole run: a full pipe would stall
        // the server's logging and so the server.
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let warnings = warnings.clone();
            let addr_tx = addr_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let line = strip_ansi(&line);
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                        let _ = addr_tx.send(addr);
                    }
                    if line.contains(" WARN ") || line.contains(" ERROR ") || line.starts_with("error") {
                        let mut w = warnings.lock().unwrap_or_else(|p| p.into_inner());
                        w.0 += 1;
                        if w.1.len() < 10 {
                            w.1.push(line);
                        }
                    }
                }
            });
        }
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a
                .parse()
                .map_err(|e| format!("server printed a bad address {a:?}: {e}"))?,
            Err(_) => {
                let _ = child.kill();
                let w = warnings.lock().unwrap_or_else(|p| p.into_inner());
                return Err(format!("the server did not start within 30 s: {:?}", w.1));
            }
        };
        Ok(Self {
            child,
            addr,
            warnings,
            dir,
            keep_dir: false,
        })
    }

    /// SIGKILL, as a crash would: no shutdown path runs. Returns the
    /// directory, database included, for a restart.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_dir = true;
        self.dir.clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds of the process so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> f64 {
        rss_kib(&format!("/proc/{}/status", self.pid()))
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<(), String> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        let result = loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(()),
                Ok(Some(status)) => break Err(format!("the server exited with {status}")),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break Err(format!("the server did not stop within {grace:?} of SIGTERM"));
                }
            }
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only reached when `stop` was not (an early error): never leave it running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The text of a log line without its colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// utime + stime from a `/proc/<pid>/stat` file, in seconds.
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux the project runs on.
    ticks / 100.0
}

/// VmRSS from a `/proc/<pid>/status` file, in KiB.
pub fn rss_kib(status_path: &str) -> f64 {
    let status = std::fs::read_to_string(status_path).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
