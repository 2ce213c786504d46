// @ts-check
// End-to-end test in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a running voice-agent server in emulator mode:
//   before any call, the emulated banner (Twilio and AI) and the backends the server reports
//   (GetServerInfo: default + Voice Live + gpt-realtime, both emulated) →
//   place a call to +15550100 from the form → statuses and ≥2 transcript lines appear live →
//   the call ends COMPLETED → reopen it from the list and see the same transcript.
// A screenshot of the live call view is saved to e2e-artifacts/live-call.png.
//
//   VOICE_AGENT_URL=http://127.0.0.1:8000 npm run e2e
//
// Optional: VOICE_AGENT_TOKEN (the server's API_TOKEN), E2E_NUMBER (default +15550100),
// E2E_CALL_TIMEOUT_MS (default 120000), CHROMIUM_PATH (default /usr/bin/chromium).
// `VOICE_AGENT_URL=http://127.0.0.1:4173/?demo` runs it against `npm run preview` with the in-memory fake.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const baseUrl = process.env.VOICE_AGENT_URL;
if (!baseUrl) {
  console.log(
    "SKIPPED: browser e2e needs a running server; start voice-agent in emulator mode and run " +
      "VOICE_AGENT_URL=http://127.0.0.1:8000 npm run e2e",
  );
  process.exit(0);
}

const { chromium } = await import("playwright-core");

const root = fileURLToPath(new URL("..", import.meta.url));
const artifacts = join(root, "e2e-artifacts");
mkdirSync(artifacts, { recursive: true });
const number = process.env.E2E_NUMBER ?? "+15550100";
const callTimeout = Number(process.env.E2E_CALL_TIMEOUT_MS ?? "120000");
const token = process.env.VOICE_AGENT_TOKEN ?? "";
const demo = new URL(baseUrl).searchParams.has("demo");
const started = Date.now();

/** @param {string} msg */
const log = (msg) => console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
/** @param {boolean} cond @param {string} msg */
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), "voiceagent-e2e-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** @type {string[]} */
const pageErrors = [];
let page = context.pages()[0] ?? (await context.newPage());
/** @param {import("playwright-core").Page} p */
function watchPage(p) {
  p.on("pageerror", (err) => pageErrors.push(String(err)));
  p.on("console", (m) => {
    if (m.type() === "error") log(`browser console error: ${m.text()}`);
  });
}
watchPage(page);
if (token !== "") {
  // The UI reads the token from sessionStorage (key voiceagent.apiToken), as if typed in its field.
  await context.addInitScript((t) => window.sessionStorage.setItem("voiceagent.apiToken", t), token);
}

/** Transcript lines of the open call view, as "speaker: text". @param {import("playwright-core").Page} p */
async function transcript(p) {
  return p
    .locator('[data-testid="call-view"] [data-testid="transcript-line"]')
    .evaluateAll((els) =>
      els.map((e) => `${e.getAttribute("data-speaker")}: ${e.querySelector(".msg-text")?.textContent ?? ""}`),
    );
}

/** Opens `callId` from the calls list of `p` and checks the replayed transcript equals `expected`.
 * @param {import("playwright-core").Page} p @param {string} callId @param {string[]} expected */
async function reopenFromList(p, callId, expected) {
  const row = p.locator(`[data-testid="calls-list"] button[data-call-id="${callId}"]`);
  await row.waitFor({ state: "visible", timeout: 15_000 });
  await row.click();
  const view = p.locator(`[data-testid="call-view"][data-call-id="${callId}"]`);
  await view.waitFor({ state: "visible", timeout: 15_000 });
  await p.waitForFunction(
    ([id, n]) => {
      const v = document.querySelector(`[data-testid="call-view"][data-call-id="${id}"]`);
      return (
        v?.getAttribute("data-status") === "COMPLETED" &&
        v.querySelectorAll('[data-testid="transcript-line"]').length >= Number(n)
      );
    },
    [callId, String(expected.length)],
    { timeout: 15_000 },
  );
  const replayed = await transcript(p);
  check(
    JSON.stringify(replayed) === JSON.stringify(expected),
    `replayed transcript differs from the live one:\nlive:     ${JSON.stringify(expected)}\nreplayed: ${JSON.stringify(replayed)}`,
  );
}

let failed = false;
try {
  log(`opening ${baseUrl}`);
  await page.goto(baseUrl, { waitUntil: "load" });
  await page.getByRole("heading", { name: "Place a call" }).waitFor({ timeout: 15_000 });

  // Before any call is placed, GetServerInfo alone brings the banner and the backend choices.
  // (In emulator mode both backends are offered, both emulated; the ?demo fake offers Voice Live.)
  const select = page.locator('select[name="backend"]');
  await page.locator('select[name="backend"][data-backends="ready"]').waitFor({ timeout: 15_000 });
  const options = await select.locator("option").allTextContents();
  const expectedOptions = demo
    ? ["Server default (Voice Live)", "Voice Live (emulated)"]
    : ["Server default (Voice Live)", "Voice Live (emulated)", "gpt-realtime (emulated)"];
  check(
    JSON.stringify(options) === JSON.stringify(expectedOptions),
    `backend options ${JSON.stringify(options)}, expected ${JSON.stringify(expectedOptions)}`,
  );
  log(`backend choices from the server: ${options.join(" | ")}`);
  const earlyBanner = page.getByTestId("emulated-banner");
  await earlyBanner.waitFor({ state: "visible", timeout: 15_000 });
  const emulatedParts = await earlyBanner.getAttribute("data-emulated");
  check(emulatedParts === "twilio ai", `the banner is about Twilio and the AI (data-emulated=${emulatedParts})`);
  const earlyText = (await earlyBanner.textContent()) ?? "";
  check(earlyText.includes("Calls are emulated — no real phone is dialled"), `banner before any call: ${earlyText}`);
  check((await page.locator('[data-testid="call-view"]').count()) === 0, "no call is open yet");
  log("emulated banner shown before any call");

  log(`placing a call to ${number}`);
  await page.getByLabel("Phone number").fill(number);
  await page.getByRole("button", { name: "Place call" }).click();
  const view = page.locator('[data-testid="call-view"]');
  await view.waitFor({ state: "visible", timeout: 15_000 });
  const formError = await page.locator('[data-testid^="error-"]').allTextContents();
  check(formError.length === 0, `the form reported: ${formError.join(" | ")}`);
  const callId = (await view.getAttribute("data-call-id")) ?? "";
  check(callId !== "", "the call view names the call");
  log(`call ${callId} placed`);

  // Record every status the view shows, as it shows it (a MutationObserver in the page).
  await page.evaluate(() => {
    const v = document.querySelector('[data-testid="call-view"]');
    const seen = /** @type {string[]} */ ([]);
    Object.assign(window, { __statuses: seen });
    const note = () => {
      const s = v?.getAttribute("data-status") ?? "";
      if (s !== "" && seen[seen.length - 1] !== s) seen.push(s);
    };
    note();
    if (v) new MutationObserver(note).observe(v, { attributes: true, attributeFilter: ["data-status"] });
  });

  await page.getByTestId("emulated-banner").waitFor({ state: "visible", timeout: 15_000 });
  const banner = (await page.getByTestId("emulated-banner").textContent()) ?? "";
  check(banner.includes("Calls are emulated — no real phone is dialled"), `banner text: ${banner}`);
  log("emulated banner shown");

  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="call-view"] [data-testid="transcript-line"]').length >= 2,
    undefined,
    { timeout: callTimeout },
  );
  const endedAtTwoLines = await view.getAttribute("data-ended");
  const liveStatus = await view.getAttribute("data-status");
  await page.screenshot({ path: join(artifacts, "live-call.png"), fullPage: true });
  log(`2 transcript lines shown while status=${liveStatus}; screenshot saved to e2e-artifacts/live-call.png`);
  check(endedAtTwoLines === "false", "the transcript lines appeared while the call was live (not only after it ended)");

  await page.waitForFunction(
    () => document.querySelector('[data-testid="call-view"]')?.getAttribute("data-ended") === "true",
    undefined,
    { timeout: callTimeout },
  );
  const finalStatus = await view.getAttribute("data-status");
  check(finalStatus === "COMPLETED", `call ended with ${finalStatus}, expected COMPLETED`);
  const statuses = /** @type {string[]} */ (await page.evaluate(() => Reflect.get(window, "__statuses")));
  log(`statuses seen live: ${statuses.join(" → ")}`);
  check(statuses.includes("IN_PROGRESS"), "IN_PROGRESS was shown while the call was live");
  const doneSteps = await page.locator('[data-testid="call-view"] .timeline .step--done .step-label').allTextContents();
  log(`timeline: ${doneSteps.join(" → ")}`);
  for (const s of ["Queued", "In progress", "Completed"]) check(doneSteps.includes(s), `timeline shows ${s}`);
  const live = await transcript(page);
  check(live.length >= 2, `at least 2 transcript lines (got ${live.length})`);
  const unknown = live.filter((l) => !l.startsWith("agent:") && !l.startsWith("callee:"));
  check(unknown.length === 0, `every line is the agent's or the callee's (not: ${unknown.join(" | ")})`);
  const seqs = await page
    .locator('[data-testid="call-view"] [data-testid="transcript-line"]')
    .evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-sequence"))));
  check(new Set(seqs).size === seqs.length, `no duplicate transcript events (sequences ${seqs.join(",")})`);
  log(`call completed with ${live.length} transcript lines`);

  log("reopening the call from the list (same page)");
  await page.getByRole("button", { name: "Close" }).click();
  await reopenFromList(page, callId, live);

  if (!demo) {
    // A fresh page has no state of its own: everything comes from ListCalls and WatchCall replay.
    log("reopening the call from the list in a fresh page");
    const fresh = await context.newPage();
    watchPage(fresh);
    await fresh.goto(new URL("/", baseUrl).toString(), { waitUntil: "load" });
    await reopenFromList(fresh, callId, live);
    await fresh.close();
  }
  check(pageErrors.length === 0, `no uncaught page errors (got: ${pageErrors.join(" | ")})`);
  log("all checks passed");
} catch (err) {
  failed = true;
  console.error(err instanceof Error ? err.message : err);
  try {
    await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true });
    console.error("screenshot of the failure: e2e-artifacts/failure.png");
  } catch {
    // The browser may be gone; the error above is what matters.
  }
  if (pageErrors.length > 0) console.error(`page errors: ${pageErrors.join(" | ")}`);
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(failed ? "e2e: 0 passed, 1 failed" : "e2e: 1 passed, 0 failed");
process.exit(failed ? 1 : 0);
