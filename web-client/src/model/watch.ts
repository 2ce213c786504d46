// Follows one call over WatchCall and survives dropped streams: after a drop it resumes with
// after_sequence = the last sequence applied, skips anything it already has (duplicates) and
// refuses to jump over missing sequences (gaps), retrying with backoff until the terminal status.
import { Code, ConnectError } from "@connectrpc/connect";
import type { CallEvent } from "@voice-agent/client";
import { isTerminal } from "./labels";

/** What the tracker thinks of an incoming sequence number. */
export type SequenceVerdict = "next" | "duplicate" | "gap";

/** Remembers the last applied sequence of one call's gapless log (1, 2, 3, …). */
export class SequenceTracker {
  private lastSeq: bigint;

  constructor(last: bigint = 0n) {
    this.lastSeq = last;
  }

  /** Sequence of the last applied event; 0 before any. */
  get last(): bigint {
    return this.lastSeq;
  }

  /** Classifies `seq` against the log position without changing it. */
  check(seq: bigint): SequenceVerdict {
    if (seq <= this.lastSeq) return "duplicate";
    return seq === this.lastSeq + 1n ? "next" : "gap";
  }

  /** Records `seq` as applied. */
  advance(seq: bigint): void {
    if (seq > this.lastSeq) this.lastSeq = seq;
  }
}

/** Exponential backoff between reconnects. */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
}

/** Default: 0.5 s, doubling, capped at 10 s. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 10_000, factor: 2 };

/**
 * Delay before reconnect number `attempt` (1-based): "equal jitter", i.e. between half and all of
 * the exponential step, so many tabs that lost the server at once do not come back in lockstep.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const step = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + (random() * step) / 2);
}

/** Status codes after which retrying cannot help: the user (or the code) must change something. */
const FATAL_CODES: ReadonlySet<Code> = new Set([
  Code.NotFound,
  Code.InvalidArgument,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.Unimplemented,
  Code.FailedPrecondition,
  Code.OutOfRange,
]);

/** True when a WatchCall failure is worth a reconnect (network drop, server restart, proxy timeout…). */
export function isRetryable(err: ConnectError): boolean {
  return !FATAL_CODES.has(err.code);
}

/** Opens one WatchCall stream and yields its events. Injected so tests need no network. */
export type OpenWatchStream = (
  request: { readonly callId: string; readonly afterSequence: bigint },
  options: { readonly signal: AbortSignal; readonly onHeader: () => void },
) => AsyncIterable<CallEvent>;

/** Connection state, for the "live / reconnecting" indicator. */
export type WatchState =
  | { readonly kind: "connecting"; readonly attempt: number }
  | { readonly kind: "live" }
  | { readonly kind: "retrying"; readonly attempt: number; readonly delayMs: number; readonly reason: string }
  | { readonly kind: "ended" }
  | { readonly kind: "failed"; readonly error: ConnectError };

/** Callbacks of `watchCallResumable`. */
export interface WatchHandlers {
  /** Called exactly once per sequence, in order. */
  readonly onEvent: (event: CallEvent) => void;
  /** The server skipped `from`..`to` on `maxGapRetries` streams in a row; the watch goes on after them. */
  readonly onGap?: (from: bigint, to: bigint) => void;
  readonly onState?: (state: WatchState) => void;
}

/** Options of `watchCallResumable`. */
export interface WatchOptions {
  readonly callId: string;
  /** Resume point: the last sequence the caller already has (0 = the whole history). */
  readonly afterSequence?: bigint;
  readonly signal: AbortSignal;
  readonly backoff?: BackoffPolicy;
  /** Reconnects tried on the same gap before it is reported and skipped. */
  readonly maxGapRetries?: number;
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly random?: () => number;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function isTerminalEvent(event: CallEvent): boolean {
  return event.kind.case === "status" && isTerminal(event.kind.value.status);
}

/**
 * Watches a call until its terminal status ("ended") or until `signal` aborts ("aborted").
 * Rejects with the ConnectError when the server gives a non-retryable status (NOT_FOUND,
 * UNAUTHENTICATED, …); every other failure, and a stream that closes before the terminal
 * status, is retried with backoff from the last applied sequence.
 */
export async function watchCallResumable(
  open: OpenWatchStream,
  options: WatchOptions,
  handlers: WatchHandlers,
): Promise<"ended" | "aborted"> {
  const { callId, signal } = options;
  const policy = options.backoff ?? DEFAULT_BACKOFF;
  const maxGapRetries = options.maxGapRetries ?? 3;
  const sleep = options.sleep ?? abortableSleep;
  const random = options.random ?? Math.random;
  const tracker = new SequenceTracker(options.afterSequence ?? 0n);
  const setState = (s: WatchState): void => handlers.onState?.(s);

  let failures = 0;
  // How many streams in a row jumped over the same missing sequence.
  let gapStreak = 0;

  while (!signal.aborted) {
    setState({ kind: "connecting", attempt: failures });
    const stream = new AbortController();
    const forwardAbort = (): void => stream.abort();
    signal.addEventListener("abort", forwardAbort, { once: true });
    let reason = "the stream closed before the call ended";
    try {
      const events = open(
        { callId, afterSequence: tracker.last },
        { signal: stream.signal, onHeader: () => setState({ kind: "live" }) },
      );
      let sawGap = false;
      for await (const event of events) {
        let verdict = tracker.check(event.sequence);
        if (verdict === "duplicate") continue;
        if (verdict === "gap") {
          if (gapStreak < maxGapRetries) {
            gapStreak += 1;
            reason = `events ${tracker.last + 1n}..${event.sequence - 1n} are missing; asking again`;
            sawGap = true;
            break;
          }
          // The server keeps skipping these: say so, and go on rather than stall forever.
          handlers.onGap?.(tracker.last + 1n, event.sequence - 1n);
          tracker.advance(event.sequence - 1n);
          verdict = "next";
        }
        gapStreak = 0;
        failures = 0;
        tracker.advance(event.sequence);
        setState({ kind: "live" });
        handlers.onEvent(event);
        if (isTerminalEvent(event)) {
          setState({ kind: "ended" });
          return "ended";
        }
      }
      if (signal.aborted) return "aborted";
      if (!sawGap) gapStreak = 0;
    } catch (err) {
      if (signal.aborted) return "aborted";
      const error = ConnectError.from(err);
      if (!isRetryable(error)) {
        setState({ kind: "failed", error });
        throw error;
      }
      reason = error.rawMessage || Code[error.code] || "connection lost";
    } finally {
      signal.removeEventListener("abort", forwardAbort);
      // Leaving the for-await early already cancels the stream; this also covers the error paths.
      stream.abort();
    }
    failures += 1;
    const delayMs = backoffDelay(failures, policy, random);
    setState({ kind: "retrying", attempt: failures, delayMs, reason });
    await sleep(delayMs, signal);
  }
  return "aborted";
}
