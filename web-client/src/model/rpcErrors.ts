// Turns server errors into something a person can act on, next to the form field they concern.
import { Code, ConnectError } from "@connectrpc/connect";
import { errorDetails } from "@voice-agent/client";

/** Fields of the place-call form; names are the proto field names the server puts in its messages. */
export type PlaceCallField =
  | "to"
  | "backend"
  | "instructions"
  | "voice"
  | "greeting"
  | "max_duration"
  | "metadata"
  | "voicemail"
  | "variables"
  | "webhook_url";

const FIELDS: readonly PlaceCallField[] = [
  "to",
  "backend",
  "instructions",
  "voice",
  "greeting",
  "max_duration",
  "metadata",
  "voicemail",
  "variables",
  "webhook_url",
];

/** Twilio codes that refuse the dialled number itself: 21211 invalid 'To', 21214 not reachable, 21217 not a phone
 * number, 21219 unverified (trial account), 21610 unsubscribed, 13224 invalid. */
const TO_CODES: ReadonlySet<string> = new Set(["21211", "21214", "21217", "21219", "21610", "13224"]);

/** Where an error belongs in the form and what to say. */
export interface FieldError {
  /** undefined: the error concerns the whole request (shown above the submit button). */
  readonly field: PlaceCallField | undefined;
  readonly message: string;
  readonly code: Code;
}

/**
 * Maps a PlaceCall failure to a form field. The server names the field first in INVALID_ARGUMENT
 * messages ("to: must be E.164: …"); a provider or backend refusal may instead only mention it
 * ("backend voice-live is not configured"), which is matched as a fallback.
 */
export function placeCallFieldError(err: unknown): FieldError {
  const e = ConnectError.from(err);
  const details = errorDetails(e);
  // The server's BadRequest names the field exactly (`to`, `metadata["key"]`); older servers only say it in text.
  const violation = details.fieldViolations[0];
  const root = violation?.field.split(/[.[]/, 1)[0];
  if (violation !== undefined && root !== undefined && (FIELDS as readonly string[]).includes(root)) {
    return { field: root as PlaceCallField, message: violation.description, code: e.code };
  }
  // A provider refusal with Twilio's code of a bad number belongs next to the number.
  if (details.reason === "TWILIO_ERROR" && TO_CODES.has(details.metadata["provider_code"] ?? "")) {
    return { field: "to", message: e.rawMessage, code: e.code };
  }
  if (details.reason === "BACKEND_NOT_AVAILABLE") return { field: "backend", message: e.rawMessage, code: e.code };
  const message = e.rawMessage || Code[e.code] || "request failed";
  const lead = /^\s*([a-z_]+)(?:\.[a-z_]+)*\s*:/.exec(message);
  const named = lead?.[1];
  if (named !== undefined && (FIELDS as readonly string[]).includes(named)) {
    return {
      field: named as PlaceCallField,
      message: message.slice(lead?.[0].length ?? 0).trim() || message,
      code: e.code,
    };
  }
  if (e.code === Code.InvalidArgument || e.code === Code.FailedPrecondition) {
    if (/\bbackend\b|voice[ _-]?live|gpt[ _-]?realtime/i.test(message))
      return { field: "backend", message, code: e.code };
    // Twilio refusals of the dialled number itself: 21211 invalid 'To', 21214 not reachable,
    // 21217 not a phone number, 21219 unverified (trial account), 21610 unsubscribed, 13224 invalid.
    if (/'to'|\bto number\b|\b(21211|21214|21217|21219|21610|13224)\b/i.test(message)) {
      return { field: "to", message, code: e.code };
    }
  }
  return { field: undefined, message: describeError(e), code: e.code };
}

/** One-line text for any RPC failure. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  const text = e.rawMessage || "no details";
  // Reasons a person can act on get words of their own (docs/contract.md, error reasons).
  switch (errorDetails(e).reason) {
    case "SERVER_STOPPING":
      return `This server is restarting and takes no new call; try again in a moment (another replica may take it). (${text})`;
    case "STORE_UNAVAILABLE":
      return `The call store is briefly out of reach; try again in a moment. (${text})`;
    case "REQUEST_ID_REUSED":
      return `That request id already belongs to a different call; use a new id for a new call. (${text})`;
    default:
      break;
  }
  switch (e.code) {
    case Code.Unauthenticated:
      return `The server needs a valid API token (${text}).`;
    case Code.Unavailable:
      return `Unavailable: ${text}. Is the server (or the telephony provider) reachable?`;
    case Code.NotFound:
      return `Not found: ${text}`;
    case Code.DeadlineExceeded:
      return `Timed out: ${text}`;
    default:
      return `${Code[e.code] ?? "Error"}: ${text}`;
  }
}

/** True when `err` is UNAUTHENTICATED, i.e. the API token is missing or wrong. */
export function isUnauthenticated(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unauthenticated;
}
