import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { GetServerInfoResponseSchema } from "@voice-agent/client";
import { FALLBACK_LIMITS, placeCallLimits } from "./limits";

describe("placeCallLimits", () => {
  it("uses this build's copy until the server has published its limits", () => {
    expect(placeCallLimits({ status: "loading" })).toBe(FALLBACK_LIMITS);
    expect(placeCallLimits({ status: "failed", message: "x" })).toBe(FALLBACK_LIMITS);
    // A server older than the field.
    expect(placeCallLimits({ status: "ready", info: create(GetServerInfoResponseSchema, {}) })).toBe(FALLBACK_LIMITS);
  });

  it("takes the server's limits, and the fallback for a field it leaves at zero", () => {
    const info = create(GetServerInfoResponseSchema, {
      limits: {
        minToDigits: 9,
        maxToDigits: 12,
        maxInstructionsBytes: 100,
        maxVoiceBytes: 4,
        maxGreetingBytes: 50,
        shortestMaxDuration: { seconds: 30n, nanos: 0 },
        longestMaxDuration: { seconds: 600n, nanos: 0 },
      },
    });
    expect(placeCallLimits({ status: "ready", info })).toEqual({
      ...FALLBACK_LIMITS,
      minToDigits: 9,
      maxToDigits: 12,
      maxInstructionsBytes: 100,
      maxVoiceBytes: 4,
      maxGreetingBytes: 50,
      shortestMaxDurationS: 30,
      longestMaxDurationS: 600,
    });
  });
});
