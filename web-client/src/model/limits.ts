// What PlaceCall accepts, as the server publishes it (GetServerInfo's `limits`), so the form checks input
// against the server's own bounds. This build's copy is only the fallback while the server has not answered,
// could not be asked, or is older than the field.
import type { PlaceCallLimits } from "@voice-agent/client";
import type { ServerInfoState } from "./serverInfo";

/** PlaceCall's bounds, in plain numbers (durations in whole seconds). */
export interface Limits {
  readonly minToDigits: number;
  readonly maxToDigits: number;
  readonly maxInstructionsBytes: number;
  readonly maxVoiceBytes: number;
  readonly maxGreetingBytes: number;
  readonly maxMetadataEntries: number;
  readonly maxMetadataKeyBytes: number;
  readonly maxMetadataValueBytes: number;
  readonly shortestMaxDurationS: number;
  readonly longestMaxDurationS: number;
}

/** The bounds of the server this build was made with (the proto comments), used until the server says. */
export const FALLBACK_LIMITS: Limits = {
  minToDigits: 8,
  maxToDigits: 15,
  maxInstructionsBytes: 16384,
  maxVoiceBytes: 128,
  maxGreetingBytes: 1000,
  maxMetadataEntries: 32,
  maxMetadataKeyBytes: 64,
  maxMetadataValueBytes: 512,
  shortestMaxDurationS: 10,
  longestMaxDurationS: 4 * 3600,
};

/** `value` when the server filled it (proto3 leaves an unfilled field 0), else the fallback. */
function given(value: number | bigint | undefined, fallback: number): number {
  const n = Number(value ?? 0);
  return n > 0 ? n : fallback;
}

/** The server's limits once GetServerInfo answered with them; the fallback until then, field by field. */
export function placeCallLimits(state: ServerInfoState): Limits {
  const l: PlaceCallLimits | undefined = state.status === "ready" ? state.info.limits : undefined;
  if (l === undefined) return FALLBACK_LIMITS;
  const f = FALLBACK_LIMITS;
  return {
    minToDigits: given(l.minToDigits, f.minToDigits),
    maxToDigits: given(l.maxToDigits, f.maxToDigits),
    maxInstructionsBytes: given(l.maxInstructionsBytes, f.maxInstructionsBytes),
    maxVoiceBytes: given(l.maxVoiceBytes, f.maxVoiceBytes),
    maxGreetingBytes: given(l.maxGreetingBytes, f.maxGreetingBytes),
    maxMetadataEntries: given(l.maxMetadataEntries, f.maxMetadataEntries),
    maxMetadataKeyBytes: given(l.maxMetadataKeyBytes, f.maxMetadataKeyBytes),
    maxMetadataValueBytes: given(l.maxMetadataValueBytes, f.maxMetadataValueBytes),
    shortestMaxDurationS: given(l.shortestMaxDuration?.seconds, f.shortestMaxDurationS),
    longestMaxDurationS: given(l.longestMaxDuration?.seconds, f.longestMaxDurationS),
  };
}
