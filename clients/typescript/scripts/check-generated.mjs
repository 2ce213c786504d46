// @ts-check
// Fails (exit 1) when src/gen is not exactly what `npm run generate` makes from ../../proto (and the
// vendored proto/) today, so CI catches a proto change that was committed without regenerating the
// TypeScript client. The web client runs it too (its `npm run check-generated`), with its own buf and
// protoc-gen-es on PATH.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const committed = join(root, "src", "gen");
const tmp = mkdtempSync(join(tmpdir(), "voiceagent-gen-"));

/** @param {string} dir @returns {string[]} paths relative to dir, sorted */
function listFiles(dir) {
  /** @type {string[]} */
  const out = [];
  /** @param {string} d */
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  try {
    walk(dir);
  } catch {
    // A missing directory compares as empty: the report below then lists every file.
  }
  return out.sort();
}

try {
  // `buf generate -o DIR` prefixes the `out:` of buf.gen.yaml, so the fresh copy lands in DIR/src/gen.
  // npm puts node_modules/.bin on PATH, which is where buf and protoc-gen-es are found.
  execFileSync("buf", ["generate", "-o", tmp], { cwd: root, stdio: "inherit" });
  const fresh = join(tmp, "src", "gen");
  const a = listFiles(committed);
  const b = listFiles(fresh);
  const problems = [];
  for (const f of b) if (!a.includes(f)) problems.push(`missing from src/gen: ${f}`);
  for (const f of a) if (!b.includes(f)) problems.push(`stale file in src/gen: ${f}`);
  for (const f of a.filter((x) => b.includes(x))) {
    if (!readFileSync(join(committed, f)).equals(readFileSync(join(fresh, f)))) {
      problems.push(`out of date: src/gen/${f}`);
    }
  }
  if (problems.length > 0) {
    console.error("Generated code is stale; run `npm run generate` in clients/typescript and commit src/gen:");
    for (const p of problems) console.error(`  ${p}`);
    process.exitCode = 1;
  } else {
    console.log(`src/gen is up to date (${a.length} file(s)).`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
