import { describe, expect, it } from "vitest";
import { CallStatus, RecordingState, Speaker, ToolOutcome, TransferBy, TransferState } from "@voice-agent/client";
import {
  applyEvent,
  applyEvents,
  EMPTY_CALL_VIEW,
  formatDuration,
  latencySummary,
  markGap,
  talkSeconds,
  toolOutcomeLabel,
  transcriptLines,
  transferByLabel,
  transferStateLabel,
} from "./callView";
import { ev, sampleLog, sayKind, statusKind, T0 } from "./testEvents";

describe("applyEvent", () => {
  it("reduces a whole call into statuses, chat, turns and end", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, sampleLog());
    expect(m.lastSequence).toBe(8n);
    expect(m.status).toBe(CallStatus.COMPLETED);
    expect(m.terminal).toBe(true);
    expect(m.endReason).toBe("callee hung up");
    expect(m.statusHistory.map((s) => s.status)).toEqual([
      CallStatus.QUEUED,
      CallStatus.RINGING,
      CallStatus.IN_PROGRESS,
      CallStatus.COMPLETED,
    ]);
    expect(m.answeredAt?.getTime()).toBe(T0 + 3000);
    expect(m.endedAt?.getTime()).toBe(T0 + 65_000);
    expect(m.firstEventAt?.getTime()).toBe(T0 + 1000);
    const lines = transcriptLines(m);
    expect(lines.map((l) => [l.speaker, l.text, l.interrupted])).toEqual([
      [Speaker.AGENT, "Hello, how can I help?", false],
      [Speaker.CALLEE, "Just testing.", false],
      [Speaker.AGENT, "Then I will", true],
    ]);
    expect(m.turns).toEqual([{ sequence: 5n, turnIndex: 0, firstAudioSentMs: 400, firstAudioHeardMs: 520 }]);
  });

  it("ignores events it already has, so a resumed stream that repeats them changes nothing", () => {
    const log = sampleLog();
    const once = applyEvents(EMPTY_CALL_VIEW, log.slice(0, 5));
    expect(applyEvent(once, log[3]!)).toBe(once);
    expect(applyEvent(once, log[4]!)).toBe(once);
    const twice = applyEvents(applyEvents(EMPTY_CALL_VIEW, log), log);
    expect(twice).toEqual(applyEvents(EMPTY_CALL_VIEW, log));
    expect(transcriptLines(twice)).toHaveLength(3);
  });

  it("keeps the first answer time and records DTMF, errors and notices in log order", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.IN_PROGRESS)),
      ev(2, { case: "dtmf", value: { digit: "#" } }),
      ev(3, { case: "error", value: { code: "ai_unavailable", message: "AI dropped" } }),
      ev(4, { case: "notice", value: { code: "ai_reconnected", message: "AI back" } }),
      ev(5, statusKind(CallStatus.IN_PROGRESS)),
      ev(6, sayKind(Speaker.CALLEE, "hello?")),
    ]);
    expect(m.answeredAt?.getTime()).toBe(T0 + 1000);
    expect(m.terminal).toBe(false);
    expect(m.entries.map((e) => e.kind)).toEqual(["dtmf", "error", "notice", "transcript"]);
    expect(m.entries[1]).toMatchObject({ code: "ai_unavailable", message: "AI dropped" });
  });

  it("follows the recording's state, keeping why it stopped", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.IN_PROGRESS)),
      ev(2, { case: "recording", value: { state: RecordingState.RECORDING } }),
      ev(3, {
        case: "recording",
        value: { state: RecordingState.FAILED, error: "the disk is full", durationMs: 4200n },
      }),
    ]);
    expect(m.recording).toEqual({ state: RecordingState.FAILED, error: "the disk is full", durationMs: 4200n });
    expect(m.lastSequence).toBe(3n);
    expect(m.entries).toEqual([]);
  });

  it("shows a transfer and its outcome in the conversation, after the hand-off sentence", () => {
    const transfer = (state: TransferState, reason = "") => ({
      case: "transfer" as const,
      value: { target: "+15550122", state, by: TransferBy.AGENT, reason },
    });
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.IN_PROGRESS)),
      ev(2, sayKind(Speaker.AGENT, "Let me transfer you.")),
      ev(3, transfer(TransferState.STARTED)),
      ev(4, transfer(TransferState.BUSY, "the line was busy")),
      ev(5, statusKind(CallStatus.COMPLETED, "the transfer to +15550122 did not connect: the line was busy")),
    ]);
    expect(m.entries.map((e) => e.kind)).toEqual(["transcript", "transfer", "transfer"]);
    expect(m.entries[2]).toMatchObject({ target: "+15550122", state: TransferState.BUSY, reason: "the line was busy" });
    expect(m.endReason).toBe("the transfer to +15550122 did not connect: the line was busy");
    expect(transferStateLabel(TransferState.STARTED)).toBe("dialling");
    expect(transferStateLabel(TransferState.NO_ANSWER)).toBe("no answer");
    expect(transferByLabel(TransferBy.OPERATOR)).toBe("by an operator");
  });

  it("shows tool calls and their results in the conversation, in log order", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.IN_PROGRESS)),
      ev(2, {
        case: "toolCall",
        value: { toolCallId: "c1", name: "order_status", argumentsJson: '{"order_id":"A1"}', answeredByUrl: false },
      }),
      ev(3, {
        case: "toolResult",
        value: {
          toolCallId: "c1",
          name: "order_status",
          output: '{"status":"shipped"}',
          outcome: ToolOutcome.ANSWERED,
          waitMs: 420,
        },
      }),
      ev(4, sayKind(Speaker.AGENT, "It has shipped.")),
    ]);
    expect(m.entries.map((e) => e.kind)).toEqual(["toolCall", "toolResult", "transcript"]);
    expect(m.entries[0]).toMatchObject({ name: "order_status", argumentsJson: '{"order_id":"A1"}' });
    expect(m.entries[1]).toMatchObject({ output: '{"status":"shipped"}', outcome: ToolOutcome.ANSWERED, waitMs: 420 });
    expect(toolOutcomeLabel(ToolOutcome.TIMED_OUT)).toBe("timed out");
    expect(toolOutcomeLabel(ToolOutcome.CANCELED)).toBe("cancelled");
  });

  it("shows a migrated call as one conversation with the move in it", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.IN_PROGRESS)),
      ev(2, sayKind(Speaker.AGENT, "Hello.")),
      ev(3, { case: "migrated", value: { fromReplica: "r1", toReplica: "r2", gapMs: 640 } }),
      ev(4, sayKind(Speaker.CALLEE, "Still there?")),
    ]);
    expect(m.entries.map((e) => e.kind)).toEqual(["transcript", "migrated", "transcript"]);
    expect(m.entries[1]).toMatchObject({ fromReplica: "r1", toReplica: "r2", gapMs: 640 });
    expect(m.lastSequence).toBe(4n);
  });

  it("counts an unknown event kind as seen", () => {
    const m = applyEvent(EMPTY_CALL_VIEW, ev(1, { case: undefined }));
    expect(m.lastSequence).toBe(1n);
    expect(m.entries).toHaveLength(0);
  });

  it("marks a failed call as terminal with its reason", () => {
    const m = applyEvents(EMPTY_CALL_VIEW, [
      ev(1, statusKind(CallStatus.QUEUED)),
      ev(2, statusKind(CallStatus.FAILED, "twilio 21211: invalid To")),
    ]);
    expect(m.terminal).toBe(true);
    expect(m.answeredAt).toBeUndefined();
    expect(m.endReason).toBe("twilio 21211: invalid To");
  });
});

describe("markGap", () => {
  it("records the missing range and moves past it", () => {
    const m = markGap(applyEvent(EMPTY_CALL_VIEW, ev(1, statusKind(CallStatus.QUEUED))), 2n, 4n);
    expect(m.lastSequence).toBe(4n);
    expect(m.entries).toEqual([{ kind: "gap", sequence: 4n, from: 2n, to: 4n }]);
    expect(markGap(m, 3n, 4n)).toBe(m);
  });
});

describe("helpers", () => {
  it("summarises latencies with nearest-rank percentiles", () => {
    expect(latencySummary([])).toBeUndefined();
    const turns = [500, 100, 300, 200, 400].map((ms, i) => ({
      sequence: BigInt(i + 1),
      turnIndex: i,
      firstAudioSentMs: ms,
      firstAudioHeardMs: 0,
    }));
    expect(latencySummary(turns)).toEqual({ p50: 300, p95: 500 });
  });

  it("computes talk time from answer to end or now", () => {
    const a = new Date(T0);
    expect(talkSeconds(undefined, undefined, new Date(T0 + 5000))).toBeUndefined();
    expect(talkSeconds(a, undefined, new Date(T0 + 61_900))).toBe(61);
    expect(talkSeconds(a, new Date(T0 + 10_000), new Date(T0 + 99_000))).toBe(10);
    expect(talkSeconds(a, undefined, new Date(T0 - 5000))).toBe(0);
  });

  it("formats durations", () => {
    expect(formatDuration(0)).toBe("0:00");
    expect(formatDuration(61)).toBe("1:01");
    expect(formatDuration(3725)).toBe("1:02:05");
  });
});
