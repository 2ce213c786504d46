//! `voice-agent-server`: reads the configuration, sets up logging, serves.

use std::process::ExitCode;

use clap::Parser;
use voice_agent_server::config::{Config, VARIABLES, var};
use voice_agent_server::dotenv;
use voice_agent_server::telemetry::{self, LogFormat};
use voice_agent_server::{Options, Server};

fn variables_help() -> String {
    let mut s = String::from("Configuration (environment variables, or a .env file in the working directory):\n");
    for (name, meaning, default) in VARIABLES {
        s.push_str(&format!("  {name:<30} {meaning} [default: {default}]\n"));
    }
    s.push_str(
        "\nWithout TWILIO_* credentials calls go to the built-in Twilio emulator; without AI credentials\n\
         they are answered by the built-in realtime-AI emulator. Exit status 2: bad configuration.",
    );
    s
}

/// Places outbound phone calls answered by a realtime speech-to-speech AI.
#[derive(Parser)]
#[command(name = "voice-agent-server", version, about, after_help = variables_help())]
struct Args {
    /// Serve a non-loopback HOST without API_TOKEN (anyone who reaches the port can place calls).
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Read this file instead of ./.env (variables already set in the environment win).
    #[arg(long, value_name = "FILE")]
    env_file: Option<std::path::PathBuf>,
    /// Do not serve: ask the server configured here (HOST, PORT; 0.0.0.0 means this
    /// machine) for PATH, e.g. /healthz, and exit 0 when it answers 200, else 1. For
    /// container health checks in images without curl.
    #[arg(long, value_name = "PATH")]
    probe: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = load_env_file(args.env_file.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(path) = &args.probe {
        return probe(path);
    }
    let config = match Config::from_env().and_then(|c| c.check_startup(args.allow_unauthenticated).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match LogFormat::parse(std::env::var(var::LOG_FORMAT.0).ok().as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var(var::RUST_LOG.0).unwrap_or_else(|_| var::RUST_LOG.2.to_string());
    // Before the runtime: the span exporter's HTTP client must not be built inside it.
    let telemetry = match telemetry::init(format, &filter) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let code = serve(config);
    // After the runtime: the last spans (the calls a shutdown ended) are flushed.
    telemetry.shutdown();
    code
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::start(config, Options::default()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let drain = server.drain_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            // With DRAIN_TIMEOUT (replicas), the live calls run on first.
            tracing::info!("shutting down");
            drain.cancel();
        });
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `--probe PATH`: one GET to this machine's server, 3 s at most.
fn probe(path: &str) -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ip = match config.bind.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}{path}", std::net::SocketAddr::new(ip, config.bind.port()));
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()
                    .map_err(|e| e.to_string())?;
                let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                Ok::<_, String>((status, text))
            })
        });
    match answer {
        Ok((status, _)) if status == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok((status, text)) => {
            eprintln!("{url}: {status}: {}", text.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `./.env` (or `--env-file`) with python-dotenv's rules and sets the
/// variables the environment does not already have, as the seed's
/// `load_dotenv()` did. A missing `./.env` is fine; a missing `--env-file` or
/// a line that does not parse is an error naming the file and line.
fn load_env_file(explicit: Option<&std::path::Path>) -> Result<(), String> {
    let path = explicit.unwrap_or(std::path::Path::new(".env"));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bindings = dotenv::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for (key, value) in dotenv::resolve(&bindings, &|k: &str| {
        std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
    }) {
        // SAFETY: `main` calls this before it starts the runtime or any other
        // thread, so nothing reads the environment concurrently. The
        // variables must be in the process environment (not only in our
        // `Config`): the Azure identity chain and the OpenTelemetry exporter
        // read theirs from it, as the seed's libraries did after load_dotenv().
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(key, value);
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
