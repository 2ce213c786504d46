//! Several replicas on PostgreSQL (issue #13), optionally behind Debian's
//! haproxy with the configuration of `docs/haproxy.cfg`, as the load
//! generator's server under test; and WatchCall streams on every replica
//! that time each event from its stamp to its arrival.
//!
//! With haproxy, `PUBLIC_URL` is haproxy's, so Twilio's TwiML fetch, status
//! callbacks and media WebSocket go through it and land on any replica
//! (round robin), and calls are placed through it too (gRPC, least
//! connections). Without it, every call is placed on the first replica and
//! everything Twilio does lands there (its own `PUBLIC_URL`): the first
//! replica commits every event, and a watcher on another replica sees them
//! only through PostgreSQL (LISTEN/NOTIFY, then a re-read of the store).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use voice_agent_proto::v1 as pb;

/// haproxy in the foreground with a configuration of its own; killed on drop.
pub struct Haproxy {
    child: Child,
    /// Where it listens.
    pub port: u16,
    dir: PathBuf,
}

/// A free port on loopback (bound, then released for haproxy to take).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `config` with the lines between `marker` and "# end replicas" replaced by `servers`.
fn replace_servers(config: &str, marker: &str, servers: &str) -> Result<String, String> {
    let start = config
        .find(marker)
        .ok_or_else(|| format!("docs/haproxy.cfg lacks {marker:?}"))?
        + marker.len();
    let end = start
        + config[start..]
            .find("    # end replicas")
            .ok_or("docs/haproxy.cfg lacks \"# end replicas\"")?;
    Ok(format!("{}{servers}{}", &config[..start], &config[end..]))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Haproxy {
    /// docs/haproxy.cfg with its server lines replaced by `replicas` (their
    /// addresses), listening on `port`.
    pub fn start(port: u16, replicas: &[std::net::SocketAddr]) -> Result<Self, String> {
        let template = include_str!("../../../../docs/haproxy.cfg");
        let servers = |proto: &str| {
            replicas
                .iter()
                .enumerate()
                .map(|(i, a)| format!("    server r{} {a}{proto} check\n", i + 1))
                .collect::<String>()
        };
        let config = replace_servers(
            &replace_servers(template, "# replicas (grpc)\n", &servers(" proto h2"))?,
            "# replicas (http)\n",
            &servers(""),
        )?
        .replace("bind :8080", &format!("bind 127.0.0.1:{port}"));
        let dir = std::env::temp_dir().join(format!("va-loadgen-haproxy-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
        let binary = which("haproxy").ok_or("haproxy is not installed: `apt-get install haproxy`")?;
        let child = Command::new(binary)
            .args(["-db", "-q", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start haproxy: {e}"))?;
        let mut proxy = Self { child, port, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(proxy);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("haproxy exited with {status}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("haproxy does not listen on {port}"))
    }

    /// Waits until haproxy's health checks pass for every replica (they run
    /// every 500 ms; a server is up after two in a row), once each replica's
    /// own `/readyz` answers.
    pub async fn wait_ready(&self, replicas: &[std::net::SocketAddr]) -> Result<(), String> {
        let http = reqwest::Client::new();
        for a in replicas {
            let url = format!("http://{a}/readyz");
            let mut ready = false;
            for _ in 0..200 {
                if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !ready {
                return Err(format!("{url} is not ready"));
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    }

    /// The process id (its CPU is reported beside the replicas').
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Delivery latencies of the watched events, ms, per replica watched.
#[derive(Default)]
pub struct Watched {
    /// Per replica: (event stamped → received here) of events stamped inside
    /// the measurement window.
    pub latencies: Vec<Vec<f64>>,
    /// Events received twice, out of order or after a gap (must be 0).
    pub disorder: usize,
    /// Streams that failed (not counting the end of the run).
    pub failed: usize,
}

/// Watches `call_id` from the start on every replica of `channels` (one per
/// replica), recording each event's latency (its `time`, stamped by the
/// replica that committed it just before the commit, to its arrival here:
/// both on this machine's clock) into `into`, until `stop`.
pub fn watch_everywhere(
    channels: &[tonic::transport::Channel],
    call_id: String,
    token: &'static str,
    window: Arc<Mutex<Option<(SystemTime, SystemTime)>>>,
    into: Arc<Mutex<Watched>>,
    stop: CancellationToken,
) {
    for (replica, channel) in channels.iter().enumerate() {
        let (channel, call_id, window, into, stop) = (
            channel.clone(),
            call_id.clone(),
            window.clone(),
            into.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut client = pb::voice_agent_service_client::VoiceAgentServiceClient::new(channel);
            let mut req = tonic::Request::new(pb::WatchCallRequest {
                call_id,
                after_sequence: 0,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
            let mut stream = match client.watch_call(req).await {
                Ok(r) => r.into_inner(),
                Err(_) => {
                    into.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                    return;
                }
            };
            let mut last = 0u64;
            loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    _ = stop.cancelled() => return,
                };
                let ev = match msg {
                    Some(Ok(pb::WatchCallResponse { event: Some(ev) })) => ev,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) if !stop.is_cancelled() => {
                        into.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                        return;
                    }
                    _ => return,
                };
                let now = SystemTime::now();
                let mut w = into.lock().unwrap_or_else(|p| p.into_inner());
                if ev.sequence != last + 1 {
                    w.disorder += 1;
                }
                last = ev.sequence;
                let Some(t) = ev.time else { continue };
                let stamped = SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(t.seconds).unwrap_or(0),
                        u32::try_from(t.nanos).unwrap_or(0),
                    );
                let in_window = window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|(from, to)| stamped >= from && stamped < to);
                if in_window {
                    let ms = now.duration_since(stamped).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                    if w.latencies.len() <= replica {
                        w.latencies.resize_with(replica + 1, Vec::new);
                    }
                    w.latencies[replica].push(ms);
                }
            }
        });
    }
}
