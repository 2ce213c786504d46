// Reduces a call's event log (WatchCall) into what the live call view shows. Pure functions only:
// the same log always gives the same view, whichever order of reconnects delivered it.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type CallEvent,
  CallStatus,
  type RecordingState,
  Speaker,
  ToolOutcome,
  TransferBy,
  TransferState,
} from "@voice-agent/client";
import { isTerminal } from "./labels";

/** One status the call went through. */
export interface StatusStep {
  readonly sequence: bigint;
  readonly status: CallStatus;
  readonly detail: string;
  readonly time: Date | undefined;
}

/** One line of the conversation panel, in log order. */
export type ChatEntry =
  | {
      readonly kind: "transcript";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly speaker: Speaker;
      readonly text: string;
      readonly interrupted: boolean;
    }
  | { readonly kind: "dtmf"; readonly sequence: bigint; readonly time: Date | undefined; readonly digit: string }
  | {
      readonly kind: "error";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly code: string;
      readonly message: string;
    }
  | {
      readonly kind: "notice";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly code: string;
      readonly message: string;
    }
  | {
      // The agent called one of the call's tools (answered over gRPC, or by its URL).
      readonly kind: "toolCall";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly toolCallId: string;
      readonly name: string;
      readonly argumentsJson: string;
      readonly answeredByUrl: boolean;
    }
  | {
      // The output the AI got for a tool call, and how it came.
      readonly kind: "toolResult";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly toolCallId: string;
      readonly name: string;
      readonly output: string;
      readonly outcome: ToolOutcome;
      readonly waitMs: number;
    }
  | {
      // Answering-machine detection's result and what the agent does about it.
      readonly kind: "answered";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly answeredBy: string;
      readonly action: string;
    }
  | {
      // A hand-off to a person started, or its outcome.
      readonly kind: "transfer";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly target: string;
      readonly state: TransferState;
      readonly by: TransferBy;
      readonly reason: string;
    }
  | {
      // The call's media moved to a new bridge (its replica died or handed it over); the call goes on.
      readonly kind: "migrated";
      readonly sequence: bigint;
      readonly time: Date | undefined;
      readonly fromReplica: string;
      readonly toReplica: string;
      readonly gapMs: number;
    }
  | {
      // Not an event: the client noticed events it could not get (see `markGap`).
      readonly kind: "gap";
      readonly sequence: bigint;
      readonly from: bigint;
      readonly to: bigint;
    };

/** Latency figures of one agent turn (TurnMetrics). */
export interface TurnEntry {
  readonly sequence: bigint;
  readonly turnIndex: number;
  readonly firstAudioSentMs: number;
  readonly firstAudioHeardMs: number;
}

/** Everything the live call view renders that comes from the event log. */
export interface CallViewModel {
  /** Sequence of the last event applied; 0 before any. WatchCall resumes with after_sequence = this. */
  readonly lastSequence: bigint;
  /** Latest status; UNSPECIFIED before the first status event. */
  readonly status: CallStatus;
  readonly statusHistory: readonly StatusStep[];
  readonly entries: readonly ChatEntry[];
  readonly turns: readonly TurnEntry[];
  /** Time of the first event (the call was stored then). */
  readonly firstEventAt: Date | undefined;
  /** When the first IN_PROGRESS status arrived: the start of the talk time. */
  readonly answeredAt: Date | undefined;
  /** When the terminal status arrived. */
  readonly endedAt: Date | undefined;
  /** `detail` of the terminal status, e.g. "callee hung up". */
  readonly endReason: string;
  /** True once a terminal status was applied: the stream ends and nothing more will come. */
  readonly terminal: boolean;
  /** The recording as its last `recording` event told it; undefined before one (or when not recorded). */
  readonly recording: RecordingView | undefined;
  /** Answering-machine detection's result ("human", "machine_end_beep", …); "" until one arrived. */
  readonly answeredBy: string;
}

/** A call's recording as its events tell it. */
export interface RecordingView {
  readonly state: RecordingState;
  /** Why it stopped early; "" otherwise. */
  readonly error: string;
  readonly durationMs: bigint;
}

/** The view before any event. */
export const EMPTY_CALL_VIEW: CallViewModel = {
  lastSequence: 0n,
  status: CallStatus.UNSPECIFIED,
  statusHistory: [],
  entries: [],
  turns: [],
  firstEventAt: undefined,
  answeredAt: undefined,
  endedAt: undefined,
  endReason: "",
  terminal: false,
  recording: undefined,
  answeredBy: "",
};

/**
 * Applies one event. Events at or below `lastSequence` were seen already (a resumed stream may
 * repeat them) and return the model unchanged, so applying a log twice equals applying it once.
 * Ordering and gaps are the watcher's job (see `SequenceTracker`); this function trusts its caller.
 */
export function applyEvent(model: CallViewModel, event: CallEvent): CallViewModel {
  const sequence = event.sequence;
  if (sequence <= model.lastSequence) return model;
  const time = event.time ? timestampDate(event.time) : undefined;
  const base: CallViewModel = {
    ...model,
    lastSequence: sequence,
    firstEventAt: model.firstEventAt ?? time,
  };
  const kind = event.kind;
  switch (kind.case) {
    case "status": {
      const status = kind.value.status;
      const detail = kind.value.detail;
      const terminal = isTerminal(status);
      return {
        ...base,
        status,
        statusHistory: [...model.statusHistory, { sequence, status, detail, time }],
        answeredAt: status === CallStatus.IN_PROGRESS ? (model.answeredAt ?? time) : model.answeredAt,
        endedAt: terminal ? (model.endedAt ?? time) : model.endedAt,
        endReason: terminal ? detail : model.endReason,
        terminal: model.terminal || terminal,
      };
    }
    case "transcript":
      return {
        ...base,
        entries: [
          ...model.entries,
          {
            kind: "transcript",
            sequence,
            time,
            speaker: kind.value.speaker,
            text: kind.value.text,
            interrupted: kind.value.interrupted,
          },
        ],
      };
    case "dtmf":
      return { ...base, entries: [...model.entries, { kind: "dtmf", sequence, time, digit: kind.value.digit }] };
    case "error":
      return {
        ...base,
        entries: [
          ...model.entries,
          { kind: "error", sequence, time, code: kind.value.code, message: kind.value.message },
        ],
      };
    case "notice":
      return {
        ...base,
        entries: [
          ...model.entries,
          { kind: "notice", sequence, time, code: kind.value.code, message: kind.value.message },
        ],
      };
    case "recording":
      return {
        ...base,
        recording: { state: kind.value.state, error: kind.value.error, durationMs: kind.value.durationMs },
      };
    case "toolCall":
      return {
        ...base,
        entries: [
          ...model.entries,
          {
            kind: "toolCall",
            sequence,
            time,
            toolCallId: kind.value.toolCallId,
            name: kind.value.name,
            argumentsJson: kind.value.argumentsJson,
            answeredByUrl: kind.value.answeredByUrl,
          },
        ],
      };
    case "toolResult":
      return {
        ...base,
        entries: [
          ...model.entries,
          {
            kind: "toolResult",
            sequence,
            time,
            toolCallId: kind.value.toolCallId,
            name: kind.value.name,
            output: kind.value.output,
            outcome: kind.value.outcome,
            waitMs: kind.value.waitMs,
          },
        ],
      };
    case "answeredBy":
      return {
        ...base,
        answeredBy: kind.value.answeredBy,
        entries: [
          ...model.entries,
          {
            kind: "answered",
            sequence,
            time,
            answeredBy: kind.value.answeredBy,
            action: kind.value.action,
          },
        ],
      };
    case "transfer":
      return {
        ...base,
        entries: [
          ...model.entries,
          {
            kind: "transfer",
            sequence,
            time,
            target: kind.value.target,
            state: kind.value.state,
            by: kind.value.by,
            reason: kind.value.reason,
          },
        ],
      };
    case "migrated":
      return {
        ...base,
        entries: [
          ...model.entries,
          {
            kind: "migrated",
            sequence,
            time,
            fromReplica: kind.value.fromReplica,
            toReplica: kind.value.toReplica,
            gapMs: kind.value.gapMs,
          },
        ],
      };
    case "turn":
      return {
        ...base,
        turns: [
          ...model.turns,
          {
            sequence,
            turnIndex: kind.value.turnIndex,
            firstAudioSentMs: kind.value.firstAudioSentMs,
            firstAudioHeardMs: kind.value.firstAudioHeardMs,
          },
        ],
      };
    default:
      // An event kind added to the proto after this build: count it as seen so resuming skips it.
      return base;
  }
}

/** Applies events in order (convenience for replays and tests). */
export function applyEvents(model: CallViewModel, events: Iterable<CallEvent>): CallViewModel {
  let m = model;
  for (const e of events) m = applyEvent(m, e);
  return m;
}

/**
 * Records that events `from`..`to` could not be obtained (the server kept skipping them), and
 * moves `lastSequence` past them so the view can go on. Shown to the user as a visible gap
 * rather than silently dropped.
 */
export function markGap(model: CallViewModel, from: bigint, to: bigint): CallViewModel {
  if (to < from || to <= model.lastSequence) return model;
  return {
    ...model,
    lastSequence: to,
    entries: [...model.entries, { kind: "gap", sequence: to, from, to }],
  };
}

/** How a tool result came, in words. */
/** "dialling", "answered", "busy", … for a transfer's state. */
export function transferStateLabel(state: TransferState): string {
  switch (state) {
    case TransferState.STARTED:
      return "dialling";
    case TransferState.ANSWERED:
      return "answered";
    case TransferState.BUSY:
      return "busy";
    case TransferState.NO_ANSWER:
      return "no answer";
    case TransferState.FAILED:
      return "failed";
    case TransferState.CANCELED:
      return "cancelled";
    default:
      return "unknown";
  }
}

/** Who asked for a transfer, for people. */
export function transferByLabel(by: TransferBy): string {
  switch (by) {
    case TransferBy.AGENT:
      return "by the agent";
    case TransferBy.OPERATOR:
      return "by an operator";
    default:
      return "";
  }
}

export function toolOutcomeLabel(outcome: ToolOutcome): string {
  switch (outcome) {
    case ToolOutcome.ANSWERED:
      return "answered";
    case ToolOutcome.TIMED_OUT:
      return "timed out";
    case ToolOutcome.FAILED:
      return "failed";
    case ToolOutcome.CANCELED:
      return "cancelled";
    default:
      return "unknown";
  }
}

/** Transcript lines only, in order. */
export function transcriptLines(model: CallViewModel): Extract<ChatEntry, { kind: "transcript" }>[] {
  return model.entries.filter((e): e is Extract<ChatEntry, { kind: "transcript" }> => e.kind === "transcript");
}

/** Median and 95th percentile (nearest rank) of first_audio_sent_ms over the turns; undefined without turns. */
export function latencySummary(turns: readonly TurnEntry[]): { p50: number; p95: number } | undefined {
  if (turns.length === 0) return undefined;
  const sorted = turns.map((t) => t.firstAudioSentMs).sort((a, b) => a - b);
  const rank = (p: number): number => {
    const idx = Math.max(0, Math.ceil(p * sorted.length) - 1);
    return sorted[Math.min(idx, sorted.length - 1)] ?? 0;
  };
  return { p50: rank(0.5), p95: rank(0.95) };
}

/**
 * Talk time in whole seconds: from answer to end, or to `now` while the call is live.
 * Undefined when the call was never answered.
 */
export function talkSeconds(answeredAt: Date | undefined, endedAt: Date | undefined, now: Date): number | undefined {
  if (!answeredAt) return undefined;
  const end = endedAt ?? now;
  return Math.max(0, Math.floor((end.getTime() - answeredAt.getTime()) / 1000));
}

/** "m:ss" or "h:mm:ss". */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number): string => n.toString().padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}
