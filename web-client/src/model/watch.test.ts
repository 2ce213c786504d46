import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FakeVoiceAgent } from "../fake/fakeService";
import { type CallEvent, CallStatus, Speaker } from "@voice-agent/client";
import { openWatchStream, voiceAgentClient } from "../rpc/client";
import { applyEvents, EMPTY_CALL_VIEW, transcriptLines } from "./callView";
import { ev, sampleLog, sayKind, statusKind } from "./testEvents";
import {
  backoffDelay,
  DEFAULT_BACKOFF,
  isRetryable,
  type OpenWatchStream,
  SequenceTracker,
  type WatchState,
  watchCallResumable,
} from "./watch";

/** What one scripted stream does: yield these events, then end OK or throw. */
interface StreamScript {
  readonly events: CallEvent[];
  readonly then?: ConnectError;
}

/** A stream opener that plays `scripts` in turn and records each request's after_sequence. */
function scripted(scripts: StreamScript[]): { open: OpenWatchStream; afters: bigint[] } {
  const afters: bigint[] = [];
  let i = 0;
  const open: OpenWatchStream = async function* (req, opts) {
    afters.push(req.afterSequence);
    const s = scripts[i++];
    if (!s) throw new Error(`unexpected stream #${i} (after ${req.afterSequence})`);
    opts.onHeader();
    for (const e of s.events) yield e;
    if (s.then) throw s.then;
  };
  return { open, afters };
}

/** Runs the watcher with no real waiting; returns the delivered events, states and sleeps. */
async function run(open: OpenWatchStream, opts: { after?: bigint; maxGapRetries?: number } = {}) {
  const events: CallEvent[] = [];
  const states: WatchState[] = [];
  const gaps: [bigint, bigint][] = [];
  const sleeps: number[] = [];
  const result = await watchCallResumable(
    open,
    {
      callId: "c1",
      signal: new AbortController().signal,
      afterSequence: opts.after ?? 0n,
      ...(opts.maxGapRetries !== undefined ? { maxGapRetries: opts.maxGapRetries } : {}),
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      random: () => 1,
    },
    { onEvent: (e) => events.push(e), onState: (s) => states.push(s), onGap: (a, b) => gaps.push([a, b]) },
  );
  return { result, events, states, gaps, sleeps };
}

const unavailable = () => new ConnectError("connection reset", Code.Unavailable);
const seqs = (events: CallEvent[]) => events.map((e) => Number(e.sequence));

describe("SequenceTracker", () => {
  it("tells next, duplicate and gap apart", () => {
    const t = new SequenceTracker();
    expect(t.check(1n)).toBe("next");
    t.advance(1n);
    expect(t.check(1n)).toBe("duplicate");
    expect(t.check(0n)).toBe("duplicate");
    expect(t.check(3n)).toBe("gap");
    t.advance(0n);
    expect(t.last).toBe(1n);
  });
});

describe("watchCallResumable", () => {
  it("resumes after a dropped stream from the last sequence, without duplicates or gaps", async () => {
    const log = sampleLog();
    const { open, afters } = scripted([
      { events: log.slice(0, 3), then: unavailable() },
      // The server may repeat what the client already has; it must be skipped.
      { events: log.slice(2, 6), then: unavailable() },
      { events: log.slice(6) },
    ]);
    const { result, events, sleeps, states } = await run(open);
    expect(result).toBe("ended");
    expect(afters).toEqual([0n, 3n, 6n]);
    expect(seqs(events)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Progress resets the backoff: each drop came after new events, so both waits are the first step.
    expect(sleeps).toEqual([DEFAULT_BACKOFF.initialMs, DEFAULT_BACKOFF.initialMs]);
    expect(states.at(-1)).toEqual({ kind: "ended" });
    expect(transcriptLines(applyEvents(EMPTY_CALL_VIEW, events))).toHaveLength(3);
  });

  it("starts from the given resume point", async () => {
    const log = sampleLog();
    const { open, afters } = scripted([{ events: log.slice(5) }]);
    const { events } = await run(open, { after: 5n });
    expect(afters).toEqual([5n]);
    expect(seqs(events)).toEqual([6, 7, 8]);
  });

  it("reconnects when the stream closes OK before the terminal status", async () => {
    const log = sampleLog();
    const { open, afters } = scripted([{ events: log.slice(0, 4) }, { events: log.slice(4) }]);
    const { result, events } = await run(open);
    expect(result).toBe("ended");
    expect(afters).toEqual([0n, 4n]);
    expect(seqs(events)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("backs off exponentially while no progress is made, up to the cap", async () => {
    const log = sampleLog();
    const fails = Array.from({ length: 7 }, () => ({ events: [], then: unavailable() }));
    const { open } = scripted([...fails, { events: log }]);
    const { sleeps, events } = await run(open);
    expect(sleeps).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    expect(seqs(events)).toHaveLength(8);
  });

  it("stops at once on a non-retryable status", async () => {
    const { open, afters } = scripted([{ events: [], then: new ConnectError("no such call", Code.NotFound) }]);
    const states: WatchState[] = [];
    await expect(
      watchCallResumable(
        open,
        { callId: "x", signal: new AbortController().signal },
        {
          onEvent: () => undefined,
          onState: (s) => states.push(s),
        },
      ),
    ).rejects.toMatchObject({ code: Code.NotFound });
    expect(afters).toEqual([0n]);
    expect(states.at(-1)?.kind).toBe("failed");
  });

  it("asks again when the stream skips a sequence, instead of showing a hole", async () => {
    const log = sampleLog();
    const { open, afters } = scripted([
      { events: [log[0]!, log[2]!] }, // 2 is missing
      { events: log.slice(1) },
    ]);
    const { events, gaps } = await run(open);
    expect(afters).toEqual([0n, 1n]);
    expect(seqs(events)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(gaps).toEqual([]);
  });

  it("reports and skips a gap the server keeps making", async () => {
    const tail = [ev(4, sayKind(Speaker.AGENT, "hi")), ev(5, statusKind(CallStatus.COMPLETED))];
    const head = { events: [ev(1, statusKind(CallStatus.QUEUED))] };
    const { open, afters } = scripted([head, { events: tail }, { events: tail }, { events: tail }]);
    const { events, gaps, result } = await run(open, { maxGapRetries: 2 });
    expect(result).toBe("ended");
    expect(afters).toEqual([0n, 1n, 1n, 1n]);
    expect(gaps).toEqual([[2n, 3n]]);
    expect(seqs(events)).toEqual([1, 4, 5]);
  });

  it("returns 'aborted' when the caller aborts while waiting to reconnect", async () => {
    const abort = new AbortController();
    const { open } = scripted([{ events: [], then: unavailable() }]);
    const result = await watchCallResumable(
      open,
      {
        callId: "c",
        signal: abort.signal,
        sleep: async () => {
          abort.abort();
        },
      },
      { onEvent: () => undefined },
    );
    expect(result).toBe("aborted");
  });

  it("follows a call on the in-memory server through repeated drops and repeats", async () => {
    const fake = new FakeVoiceAgent({ stepMs: 1, dropStreamAfter: 3, repeatOnResume: true });
    const client = voiceAgentClient(fake.transport());
    const placed = await client.placeCall({ to: "+15550100" });
    const events: CallEvent[] = [];
    const result = await watchCallResumable(
      openWatchStream(client),
      { callId: placed.callId, signal: new AbortController().signal, sleep: async () => undefined },
      { onEvent: (e) => events.push(e) },
    );
    expect(result).toBe("ended");
    const stored = fake.calls.get(placed.callId)?.events ?? [];
    expect(seqs(events)).toEqual(seqs(stored));
    expect(fake.watchRequests.length).toBeGreaterThan(3);
    const afters = fake.watchRequests.map((r) => r.afterSequence);
    expect([...afters].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(afters);
  });
});

describe("backoff and retry policy", () => {
  it("jitters between half and all of the step", () => {
    expect(backoffDelay(1, DEFAULT_BACKOFF, () => 0)).toBe(250);
    expect(backoffDelay(1, DEFAULT_BACKOFF, () => 1)).toBe(500);
    expect(backoffDelay(20, DEFAULT_BACKOFF, () => 0)).toBe(5000);
  });

  it("retries transport trouble but not caller mistakes", () => {
    expect(isRetryable(new ConnectError("x", Code.Unavailable))).toBe(true);
    expect(isRetryable(new ConnectError("x", Code.Unknown))).toBe(true);
    expect(isRetryable(new ConnectError("x", Code.Internal))).toBe(true);
    expect(isRetryable(new ConnectError("x", Code.Unauthenticated))).toBe(false);
    expect(isRetryable(new ConnectError("x", Code.NotFound))).toBe(false);
  });
});
