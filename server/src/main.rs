//! `voice-agent-server`: reads the configuration, sets up logging, serves.

use std::process::ExitCode;

use clap::Parser;
use voice_agent_server::config::{Config, VARIABLES, var};
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dotenv = match &args.env_file {
        Some(path) => dotenvy::from_path(path).map(|_| ()),
        None => dotenvy::dotenv().map(|_| ()),
    };
    if let Err(e) = dotenv
        && !e.not_found()
    {
        eprintln!("error: .env: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env().and_then(|c| c.check_startup(args.allow_unauthenticated).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
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

/// Crates whose logs below INFO print what crosses the wire: request and
/// response headers (the AI's `authorization: Bearer …`, Twilio's basic auth)
/// or whole messages (the media stream's `start` with its stream secret).
/// They are capped at INFO whatever `RUST_LOG` says, so no secret reaches the
/// log at any level. (A directive in the `EnvFilter` would not do: a more
/// specific one such as `tungstenite::protocol=trace` would win over it.)
const WIRE_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tonic",
    "tower",
    "tower_http",
    "axum",
];

/// The filter that caps [`WIRE_LOGGING_CRATES`], applied after (and beside) the user's `RUST_LOG`.
fn wire_logging_cap() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    WIRE_LOGGING_CRATES
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(*c, LevelFilter::INFO)
        })
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let user = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(var::RUST_LOG.2));
    // Both filters must let an event through: the cap cannot be widened by `RUST_LOG`.
    tracing_subscriber::registry()
        .with(user)
        .with(wire_logging_cap())
        .with(tracing_subscriber::fmt::layer())
        .init();
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

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn wire_crates_are_capped_at_info_whatever_the_target_path() {
        let cap = super::wire_logging_cap();
        for target in [
            "tungstenite::handshake::client",
            "tungstenite::protocol",
            "hyper::proto::h1",
            "h2::codec",
        ] {
            assert!(!cap.would_enable(target, &Level::DEBUG), "{target}");
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::INFO), "{target}");
        }
        assert!(cap.would_enable("voice_agent_server::bridge", &Level::TRACE));
    }
}
