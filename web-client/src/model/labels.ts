// Human-readable names for the contract's enums, in one place so every view says the same.
import { Backend, CallStatus, Speaker } from "@voice-agent/client";

/** Terminal statuses per the contract: a call never leaves them and WatchCall ends after one. */
export const TERMINAL_STATUSES: ReadonlySet<CallStatus> = new Set([
  CallStatus.COMPLETED,
  CallStatus.BUSY,
  CallStatus.NO_ANSWER,
  CallStatus.CANCELED,
  CallStatus.FAILED,
]);

/** True for COMPLETED, BUSY, NO_ANSWER, CANCELED and FAILED. */
export function isTerminal(status: CallStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

/** Display name of a call status. */
export function statusLabel(status: CallStatus): string {
  switch (status) {
    case CallStatus.QUEUED:
      return "Queued";
    case CallStatus.INITIATED:
      return "Initiated";
    case CallStatus.RINGING:
      return "Ringing";
    case CallStatus.IN_PROGRESS:
      return "In progress";
    case CallStatus.COMPLETED:
      return "Completed";
    case CallStatus.BUSY:
      return "Busy";
    case CallStatus.NO_ANSWER:
      return "No answer";
    case CallStatus.CANCELED:
      return "Canceled";
    case CallStatus.FAILED:
      return "Failed";
    case CallStatus.UNSPECIFIED:
      return "Unknown";
    default:
      // A status added to the proto after this build: show its number rather than nothing.
      return `Status ${String(status)}`;
  }
}

/**
 * Display name of a backend: the server's own name for it when it gave one (GetServerInfo's
 * `display_name`, see `backendNames` in model/serverInfo.ts), so a backend added to the server needs no
 * change here; else this build's name.
 */
export function backendLabel(backend: Backend, serverNames?: ReadonlyMap<Backend, string>): string {
  const named = serverNames?.get(backend);
  if (named !== undefined && named !== "") return named;
  switch (backend) {
    case Backend.UNSPECIFIED:
      return "Server default";
    case Backend.VOICE_LIVE:
      return "Voice Live";
    case Backend.GPT_REALTIME:
      return "gpt-realtime";
    default:
      return `Backend ${String(backend)}`;
  }
}

/** Display name of a speaker. */
export function speakerLabel(speaker: Speaker): string {
  switch (speaker) {
    case Speaker.CALLEE:
      return "Callee";
    case Speaker.AGENT:
      return "Agent";
    default:
      return "Unknown speaker";
  }
}

/** Every backend this build knows, in the form's order. The form offers them all only until GetServerInfo
 * has said which the server has (see model/serverInfo.ts). */
export const BACKEND_CHOICES: readonly Backend[] = [Backend.UNSPECIFIED, Backend.VOICE_LIVE, Backend.GPT_REALTIME];
