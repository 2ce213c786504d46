import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "@voice-agent/client";
import { describe, expect, it } from "vitest";
import { describeError, isUnauthenticated, placeCallFieldError } from "./rpcErrors";

describe("placeCallFieldError", () => {
  it("takes the field from the server's BadRequest, then its ErrorInfo", () => {
    const bad = new ConnectError(
      'metadata["k"]: must not contain control characters',
      Code.InvalidArgument,
      undefined,
      [
        { desc: ErrorInfoSchema, value: { reason: "INVALID_ARGUMENT", domain: "voice-agent" } },
        {
          desc: BadRequestSchema,
          value: { fieldViolations: [{ field: 'metadata["k"]', description: "must not contain control characters" }] },
        },
      ],
    );
    expect(placeCallFieldError(bad)).toEqual({
      field: "metadata",
      message: "must not contain control characters",
      code: Code.InvalidArgument,
    });
    const refused = new ConnectError("telephony provider: the number is refused", Code.InvalidArgument, undefined, [
      {
        desc: ErrorInfoSchema,
        value: { reason: "TWILIO_ERROR", domain: "voice-agent", metadata: { provider_code: "21211", call_id: "c" } },
      },
    ]);
    expect(placeCallFieldError(refused).field).toBe("to");
    const backend = new ConnectError("backend: not offered", Code.FailedPrecondition, undefined, [
      { desc: ErrorInfoSchema, value: { reason: "BACKEND_NOT_AVAILABLE", domain: "voice-agent" } },
    ]);
    expect(placeCallFieldError(backend).field).toBe("backend");
  });

  it("maps the field the server names first", () => {
    const e = placeCallFieldError(
      new ConnectError("to: must be E.164: '+' then 8 to 15 digits, e.g. +14155551212", Code.InvalidArgument),
    );
    expect(e).toEqual({
      field: "to",
      message: "must be E.164: '+' then 8 to 15 digits, e.g. +14155551212",
      code: Code.InvalidArgument,
    });
    expect(placeCallFieldError(new ConnectError("max_duration: at least 10s", Code.InvalidArgument)).field).toBe(
      "max_duration",
    );
    expect(placeCallFieldError(new ConnectError("greeting: at most 1000 bytes", Code.InvalidArgument)).field).toBe(
      "greeting",
    );
    expect(placeCallFieldError(new ConnectError("metadata.key: too long", Code.InvalidArgument)).field).toBe(
      "metadata",
    );
  });

  it("puts a backend refusal next to the backend field", () => {
    const e = placeCallFieldError(
      new ConnectError("gpt-realtime backend is not configured (set OPENAI_API_KEY)", Code.FailedPrecondition),
    );
    expect(e.field).toBe("backend");
    expect(e.message).toContain("not configured");
  });

  it("puts a provider refusal of the number next to the number", () => {
    const e = placeCallFieldError(
      new ConnectError("twilio 21211: The 'To' number +15005550001 is not a valid phone number.", Code.InvalidArgument),
    );
    expect(e.field).toBe("to");
  });

  it("keeps other failures for the whole form", () => {
    const e = placeCallFieldError(new ConnectError("twilio unreachable", Code.Unavailable));
    expect(e.field).toBeUndefined();
    expect(e.message).toContain("twilio unreachable");
    expect(placeCallFieldError(new ConnectError("unknown: field", Code.InvalidArgument)).field).toBeUndefined();
    expect(placeCallFieldError(new TypeError("Failed to fetch")).field).toBeUndefined();
  });
});

describe("describeError", () => {
  it("names the code and keeps the server's words", () => {
    expect(describeError(new ConnectError("bad token", Code.Unauthenticated))).toContain("API token");
    expect(describeError(new ConnectError("call x not found", Code.NotFound))).toBe("Not found: call x not found");
    expect(isUnauthenticated(new ConnectError("x", Code.Unauthenticated))).toBe(true);
    expect(isUnauthenticated(new Error("x"))).toBe(false);
  });

  it("words the reasons a person can act on: a restarting replica, a store out of reach, a reused request id", () => {
    const withReason = (reason: string, code: Code) =>
      new ConnectError("server words", code, undefined, [
        { desc: ErrorInfoSchema, value: { reason, domain: "voice-agent" } },
      ]);
    expect(describeError(withReason("SERVER_STOPPING", Code.Unavailable))).toMatch(
      /restarting.*try again.*server words/,
    );
    expect(describeError(withReason("STORE_UNAVAILABLE", Code.Unavailable))).toMatch(/store.*try again.*server words/);
    expect(describeError(withReason("REQUEST_ID_REUSED", Code.AlreadyExists))).toMatch(/different call.*server words/);
    // Other reasons keep the generic wording by code.
    expect(describeError(withReason("STORE_FAILED", Code.Internal))).toBe("Internal: server words");
  });
});
