// @ts-check
// Starts the real server binary on 127.0.0.1 (PORT=0) with its built-in emulators and a temporary
// SQLite file, and reads its address from the log. VOICE_AGENT_SERVER_BIN names the binary
// (default: target/debug/voice-agent-server of this repository).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../../..", import.meta.url));

/** @param {Record<string, string>} extraEnv */
export async function startServer(extraEnv = {}) {
  const binary = process.env.VOICE_AGENT_SERVER_BIN ?? join(repo, "target", "debug", "voice-agent-server");
  if (!existsSync(binary)) throw new Error(`no server binary at ${binary}: cargo build -p voice-agent-server first`);
  const dir = mkdtempSync(join(tmpdir(), "voice-agent-ts-"));
  // Only what the test sets (cwd is the temp dir, so no .env either): every call goes to the emulators.
  /** @type {Record<string, string>} */
  const env = { PORT: "0", HOST: "127.0.0.1", DATABASE_URL: `sqlite://${dir}/calls.db`, RUST_LOG: "info" };
  for (const k of ["PATH", "HOME", "LANG", "TMPDIR"]) if (process.env[k]) env[k] = process.env[k] ?? "";
  const child = spawn(binary, [], { cwd: dir, env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
  /** @type {string[]} */
  const log = [];
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log.join("")}`)), 60_000);
    /** @param {Buffer} chunk */
    const onData = (chunk) => {
      const text = chunk.toString();
      log.push(text);
      const m = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(log.join(""));
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`the server exited (${code}):\n${log.join("")}`)));
  });
  return {
    /** @type {string} */ baseUrl: address,
    log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
