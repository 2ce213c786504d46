// @voice-agent/client: the TypeScript client of voiceagent.v1.VoiceAgentService.
//
// The messages, enums and the service descriptor are generated from proto/voiceagent/v1/voice_agent.proto
// by protoc-gen-es (src/gen, committed; `npm run check-generated` keeps it current). Use them with any
// Connect transport: `createGrpcWebTransport` (@connectrpc/connect-web) in a browser, `createGrpcTransport`
// (@connectrpc/connect-node) for gRPC from Node. Two helpers cover what the generated code leaves to you:
// proto3 JSON of messages holding uint64 (bigint) fields, and the server's google.rpc error details.
import { type DescMessage, type JsonValue, type MessageShape, toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { type Call, CallStatus } from "./gen/voiceagent/v1/voice_agent_pb.js";

export * from "./gen/voiceagent/v1/voice_agent_pb.js";
export {
  type BadRequest,
  BadRequestSchema,
  type BadRequest_FieldViolation,
  type ErrorInfo,
  ErrorInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/**
 * The proto3 JSON form of a message (what grpcurl prints): uint64 fields such as `CallEvent.sequence` and
 * `Call.eventCount` become decimal strings, enums their names, timestamps RFC 3339 text.
 *
 * Why: protobuf-es represents uint64 as `bigint`, and `JSON.stringify` throws on a bigint
 * ("Do not know how to serialize a BigInt"), so `JSON.stringify(call)` fails. `JSON.stringify(toJsonValue(
 * CallSchema, call))` works, and `fromJson(CallSchema, value)` reads it back.
 */
export function toJsonValue<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return toJson(schema, message);
}

/** The statuses after which a call never changes again. */
export const TERMINAL_STATUSES: ReadonlySet<CallStatus> = new Set([
  CallStatus.COMPLETED,
  CallStatus.BUSY,
  CallStatus.NO_ANSWER,
  CallStatus.CANCELED,
  CallStatus.FAILED,
]);

/** True when the call has ended. */
export function isTerminal(call: Pick<Call, "status">): boolean {
  return TERMINAL_STATUSES.has(call.status);
}

/** The ErrorInfo domain of this server's errors. */
export const ERROR_DOMAIN = "voice-agent";

/** The google.rpc details of a failed RPC (see "Error details" in the proto and docs/contract.md). */
export interface ErrorDetails {
  /** Stable UPPER_SNAKE reason, e.g. "INVALID_ARGUMENT", "TWILIO_ERROR"; "" when the server sent none. */
  readonly reason: string;
  /** "voice-agent" for this server's errors. */
  readonly domain: string;
  /** E.g. `call_id`, `provider_code` ("21211"), `code` ("twilio_21211"), `field`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The BadRequest's field violations: the field path and what is wrong with it. */
  readonly fieldViolations: readonly { readonly field: string; readonly description: string }[];
  /** The call the error concerns: for a PlaceCall the provider refused, the stored (FAILED) call. */
  readonly callId: string | undefined;
}

/**
 * Reads the ErrorInfo and BadRequest of any RPC failure (a ConnectError from either transport: the server
 * sends them in `grpc-status-details-bin`, to gRPC and grpc-web clients alike).
 */
export function errorDetails(err: unknown): ErrorDetails {
  const e = ConnectError.from(err);
  const info = e.findDetails(ErrorInfoSchema)[0];
  const fieldViolations = e
    .findDetails(BadRequestSchema)
    .flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  const metadata = { ...(info?.metadata ?? {}) };
  return {
    reason: info?.reason ?? "",
    domain: info?.domain ?? "",
    metadata,
    fieldViolations,
    callId: metadata["call_id"],
  };
}
