// What the server offers (GetServerInfo), turned into what the page shows: the backend choices of
// the form and the banner saying what is emulated. Plain functions, unit-tested.
import { Backend, type GetServerInfoResponse } from "@voice-agent/client";
import { BACKEND_CHOICES, backendLabel } from "./labels";

/** GetServerInfo as the page knows it: still asking, answered, or failed (an older server, no token…). */
export type ServerInfoState =
  | { readonly status: "loading" }
  | { readonly status: "ready"; readonly info: GetServerInfoResponse }
  | { readonly status: "failed"; readonly message: string };

/** One entry of the backend `<select>`. */
export interface BackendOption {
  readonly value: Backend;
  readonly label: string;
}

/** The server's display name of each backend it offers; empty until it has answered (or from an older server). */
export function backendNames(state: ServerInfoState): ReadonlyMap<Backend, string> {
  if (state.status !== "ready") return new Map();
  return new Map(state.info.backends.filter((b) => b.displayName !== "").map((b) => [b.backend, b.displayName]));
}

/**
 * The backend choices: "Server default (<its default>)" and the backends the server offers, each marked
 * "(emulated)" when its realtime-AI emulator answers; every backend while the server's answer is
 * missing.
 */
export function backendOptions(state: ServerInfoState): BackendOption[] {
  if (state.status !== "ready") return BACKEND_CHOICES.map((b) => ({ value: b, label: backendLabel(b) }));
  const { info } = state;
  const serverNames = backendNames(state);
  const defaultLabel =
    info.defaultBackend === Backend.UNSPECIFIED
      ? backendLabel(Backend.UNSPECIFIED)
      : `${backendLabel(Backend.UNSPECIFIED)} (${backendLabel(info.defaultBackend, serverNames)})`;
  const options: BackendOption[] = [{ value: Backend.UNSPECIFIED, label: defaultLabel }];
  for (const b of info.backends) {
    if (b.backend === Backend.UNSPECIFIED || options.some((o) => o.value === b.backend)) continue;
    const name = backendLabel(b.backend, serverNames);
    options.push({ value: b.backend, label: b.emulated ? `${name} (emulated)` : name });
  }
  return options;
}

/** The help line under the backend field. */
export function backendHelp(state: ServerInfoState): string {
  switch (state.status) {
    case "loading":
      return "Asking the server which backends it offers… all are listed meanwhile.";
    case "failed":
      return `Could not ask the server which backends it offers (${state.message}); all are listed, and the server refuses one it cannot use.`;
    case "ready": {
      const { backends } = state.info;
      const emulated = backends.filter((b) => b.emulated).length;
      if (backends.length > 0 && emulated === backends.length) {
        return "The server has no AI credentials: its built-in realtime-AI emulator answers on every backend.";
      }
      if (emulated > 0) {
        return "The backends this server offers; “emulated” ones are answered by its built-in realtime-AI emulator.";
      }
      return "The backends this server has credentials for.";
    }
  }
}

/** Headline of the banner when Twilio is emulated; the e2e test and the contract ("the web UI says plainly…") rely on it. */
export const EMULATED_BANNER = "Calls are emulated — no real phone is dialled";

/** Headline of the banner when real phones are dialled but an AI backend is the emulator. */
export const AI_EMULATED_BANNER = "The AI is emulated — real phones are dialled";

/** What the banner says, and what it is about (`parts`, for tests: "twilio ai", "twilio", "ai", "past-calls", "unknown"). */
export interface EmulationBanner {
  readonly headline: string;
  readonly detail: string;
  readonly parts: string;
}

function names(backends: readonly Backend[], serverNames: ReadonlyMap<Backend, string>): string {
  const labels = backends.map((b) => backendLabel(b, serverNames));
  if (labels.length <= 1) return labels.join("");
  return `${labels.slice(0, -1).join(", ")} and ${labels.at(-1) ?? ""}`;
}

/**
 * The banner, or undefined when nothing is emulated. From the server's info when there is one (known
 * before any call is placed); otherwise from the `emulated` flag of the calls seen so far, which does
 * not say what was emulated.
 */
export function emulationBanner(state: ServerInfoState, emulatedCallSeen: boolean): EmulationBanner | undefined {
  if (state.status !== "ready") {
    return emulatedCallSeen
      ? {
          headline: "Calls are emulated",
          detail: "The server's built-in Twilio or realtime-AI emulator answers them (this server does not say which).",
          parts: "unknown",
        }
      : undefined;
  }
  const { info } = state;
  const serverNames = backendNames(state);
  const aiEmulated = info.backends.filter((b) => b.emulated).map((b) => b.backend);
  const aiReal = info.backends.filter((b) => !b.emulated).map((b) => b.backend);
  if (info.telephonyEmulated) {
    let detail: string;
    if (aiEmulated.length > 0 && aiReal.length === 0) {
      detail =
        "The server runs its built-in Twilio emulator and realtime-AI emulator: no Twilio or AI credentials are configured.";
    } else if (aiEmulated.length > 0) {
      detail = `The built-in Twilio emulator answers every call, and the realtime-AI emulator speaks for ${names(aiEmulated, serverNames)}; ${names(aiReal, serverNames)} is the real AI.`;
    } else {
      detail = `The built-in Twilio emulator answers every call (no Twilio credentials are configured); the AI is real (${names(aiReal, serverNames)}).`;
    }
    return { headline: EMULATED_BANNER, detail, parts: aiEmulated.length > 0 ? "twilio ai" : "twilio" };
  }
  if (aiEmulated.length > 0) {
    return {
      headline: AI_EMULATED_BANNER,
      detail: `Calls on ${names(aiEmulated, serverNames)} are answered by the built-in realtime-AI emulator, not a real AI (no credentials for ${aiEmulated.length > 1 ? "them" : "it"} are configured).`,
      parts: "ai",
    };
  }
  if (emulatedCallSeen) {
    return {
      headline: "Some calls shown were emulated",
      detail:
        "They were placed while the server ran its built-in emulators; new calls dial real phones and reach the real AI.",
      parts: "past-calls",
    };
  }
  return undefined;
}
