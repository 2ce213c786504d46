//! `voice-agent-server`: reads the configuration, sets up logging, serves.

use std::process::ExitCode;

use clap::Parser;
use voice_agent_server::config::{Config, VARIABLES, var};
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
        let shutdown = server.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
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
