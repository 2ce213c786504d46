//! Puts the web UI into the server binary: copies `web-client/dist` (the
//! React + Vite build) to `$OUT_DIR/ui`, which `src/ui.rs` embeds. Where
//! `dist` is missing or older than the UI's sources and npm is installed, it
//! first runs `npm ci` (when `node_modules` is missing or older than the lock
//! file) and `npm run build`, so `cargo run --release -p voice-agent-server`
//! serves the UI with no extra step.
//!
//! `VOICE_AGENT_UI` chooses:
//! - `auto` (default): build when stale and npm is there; embed what `dist`
//!   holds; with no `dist` at all, embed nothing (the server's `/` then says
//!   how to build the UI, and its start-up log says so too);
//! - `prebuilt`: never run npm; `dist` must exist (else the build fails): for
//!   a Docker stage or CI job that built the UI before;
//! - `none`: embed nothing, never run npm (fast builds on machines without
//!   Node; the server can still serve a UI from `WEB_DIR`).
//!
//! The script reruns only when a UI source, the lock file or `VOICE_AGENT_UI`
//! changes (not on every `cargo clippy`), and it never watches `dist`, which
//! it may write itself: a watched path written during the run would make
//! cargo rerun it every time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What `npm run build` reads (besides `node_modules`), relative to
/// `web-client/`: its own sources and the generated TypeScript client it
/// imports from source (`@voice-agent/client`, a `file:` dependency).
const SOURCES: &[&str] = &[
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
    "../clients/typescript/src",
    "../clients/typescript/package.json",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=VOICE_AGENT_UI");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui");
    let web = manifest.join("../web-client");
    let mode = std::env::var("VOICE_AGENT_UI").unwrap_or_else(|_| "auto".into());
    if !matches!(mode.as_str(), "auto" | "prebuilt" | "none") {
        panic!("VOICE_AGENT_UI must be auto, prebuilt or none, got {mode:?}");
    }
    for source in SOURCES {
        let path = web.join(source);
        // A path that does not exist would make cargo rerun the script every time.
        if path.exists() {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }

    if out.exists() {
        fs::remove_dir_all(&out).expect("clear $OUT_DIR/ui");
    }
    fs::create_dir_all(&out).expect("create $OUT_DIR/ui");
    if mode == "none" || !web.join("package.json").is_file() {
        return;
    }

    let dist = web.join("dist");
    let stale = is_stale(&web, &dist);
    if stale && mode == "auto" {
        match build(&web) {
            Ok(()) => {}
            Err(why) => println!("cargo::warning=the web UI was not rebuilt: {why}"),
        }
    }
    if dist.join("index.html").is_file() {
        copy_dir(&dist, &out).expect("copy web-client/dist to $OUT_DIR/ui");
        if is_stale(&web, &dist) {
            println!("cargo::warning=embedding a web UI (web-client/dist) older than its sources");
        }
    } else if mode == "prebuilt" {
        panic!(
            "VOICE_AGENT_UI=prebuilt, but web-client/dist/index.html is missing: run npm ci && npm run build in web-client first"
        );
    } else {
        println!(
            "cargo::warning=no web UI is built into the server (web-client/dist is missing; install Node.js and npm, or run `cd web-client && npm ci && npm run build`, then build again)"
        );
    }
}

/// True when `dist` is missing or older than any UI source.
fn is_stale(web: &Path, dist: &Path) -> bool {
    let Some(built) = modified(&dist.join("index.html")) else {
        return true;
    };
    SOURCES.iter().any(|s| newest(&web.join(s)).is_some_and(|t| t > built))
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of anything under a directory.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest(&entry.path()))
        .chain(meta.modified().ok())
        .max()
}

fn build(web: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        return Err("npm is not installed".into());
    }
    let lock = modified(&web.join("package-lock.json"));
    let installed = modified(&web.join("node_modules/.package-lock.json"));
    if installed.is_none() || lock > installed {
        run(Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(web))?;
    }
    run(Command::new(npm).args(["run", "build"]).current_dir(web))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The last lines say what failed; cargo shows a warning on one line each.
    let tail: Vec<&str> = stdout.lines().chain(stderr.lines()).rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{shown} failed ({}): {}", output.status, tail.join(" | ")))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
