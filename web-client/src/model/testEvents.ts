// Builders of CallEvent messages for the unit tests.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type CallEvent, CallEventSchema, CallStatus, Speaker } from "@voice-agent/client";

type Kind = MessageInitShape<typeof CallEventSchema>["kind"];

/** Start of the sample call. */
export const T0 = Date.UTC(2025, 0, 2, 10, 0, 0);

/** Event number `seq` of kind `kind`, `seconds` after T0 (default: `seq` seconds). */
export function ev(seq: number, kind: Kind, seconds = seq): CallEvent {
  return create(CallEventSchema, {
    sequence: BigInt(seq),
    time: timestampFromDate(new Date(T0 + seconds * 1000)),
    kind,
  });
}

export const statusKind = (status: CallStatus, detail = ""): Kind => ({ case: "status", value: { status, detail } });

export const sayKind = (speaker: Speaker, text: string, interrupted = false): Kind => ({
  case: "transcript",
  value: { speaker, text, interrupted },
});

/** A whole short call: 1 queued … 8 completed, answered at T0+3 s, ended at T0+65 s. */
export function sampleLog(): CallEvent[] {
  return [
    ev(1, statusKind(CallStatus.QUEUED)),
    ev(2, statusKind(CallStatus.RINGING)),
    ev(3, statusKind(CallStatus.IN_PROGRESS, "answered")),
    ev(4, sayKind(Speaker.AGENT, "Hello, how can I help?")),
    ev(5, { case: "turn", value: { turnIndex: 0, firstAudioSentMs: 400, firstAudioHeardMs: 520 } }),
    ev(6, sayKind(Speaker.CALLEE, "Just testing.")),
    ev(7, sayKind(Speaker.AGENT, "Then I will", true)),
    ev(8, statusKind(CallStatus.COMPLETED, "callee hung up"), 65),
  ];
}
