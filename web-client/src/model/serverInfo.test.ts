import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Backend, GetServerInfoResponseSchema } from "@voice-agent/client";
import {
  AI_EMULATED_BANNER,
  backendHelp,
  backendNames,
  backendOptions,
  EMULATED_BANNER,
  emulationBanner,
  type ServerInfoState,
} from "./serverInfo";

function ready(
  telephonyEmulated: boolean,
  backends: readonly [Backend, boolean][],
  defaultBackend = backends[0]?.[0] ?? Backend.UNSPECIFIED,
): ServerInfoState {
  return {
    status: "ready",
    info: create(GetServerInfoResponseSchema, {
      telephonyEmulated,
      defaultBackend,
      backends: backends.map(([backend, emulated]) => ({ backend, emulated, defaultVoice: "v" })),
    }),
  };
}

const labels = (state: ServerInfoState) => backendOptions(state).map((o) => o.label);

describe("backendOptions", () => {
  it("offers every backend, plainly, until the server has said which it has", () => {
    for (const state of [{ status: "loading" }, { status: "failed", message: "x" }] as const) {
      expect(backendOptions(state).map((o) => o.value)).toEqual([
        Backend.UNSPECIFIED,
        Backend.VOICE_LIVE,
        Backend.GPT_REALTIME,
      ]);
      expect(labels(state)).toEqual(["Server default", "Voice Live", "gpt-realtime"]);
    }
  });

  it("offers only what the server reports, names the default and marks the emulated ones", () => {
    expect(labels(ready(false, [[Backend.GPT_REALTIME, false]]))).toEqual([
      "Server default (gpt-realtime)",
      "gpt-realtime",
    ]);
    expect(
      labels(
        ready(
          true,
          [
            [Backend.VOICE_LIVE, true],
            [Backend.GPT_REALTIME, true],
          ],
          Backend.GPT_REALTIME,
        ),
      ),
    ).toEqual(["Server default (gpt-realtime)", "Voice Live (emulated)", "gpt-realtime (emulated)"]);
  });

  it("keeps the server's order and ignores repeats and the unspecified value", () => {
    const state = ready(false, [
      [Backend.GPT_REALTIME, false],
      [Backend.UNSPECIFIED, false],
      [Backend.VOICE_LIVE, false],
      [Backend.GPT_REALTIME, false],
    ]);
    expect(backendOptions(state).map((o) => o.value)).toEqual([
      Backend.UNSPECIFIED,
      Backend.GPT_REALTIME,
      Backend.VOICE_LIVE,
    ]);
  });
});

describe("backend names", () => {
  it("prefer the server's display names, and fall back to this build's for a nameless one", () => {
    const state: ServerInfoState = {
      status: "ready",
      info: create(GetServerInfoResponseSchema, {
        telephonyEmulated: true,
        defaultBackend: Backend.GPT_REALTIME,
        backends: [
          { backend: Backend.VOICE_LIVE, emulated: true, displayName: "" },
          { backend: Backend.GPT_REALTIME, emulated: false, displayName: "GPT Realtime (EU)" },
          // A backend newer than this build: its name comes from the server alone.
          { backend: 7 as Backend, emulated: true, displayName: "Speechy" },
        ],
      }),
    };
    expect(backendNames(state)).toEqual(
      new Map([
        [Backend.GPT_REALTIME, "GPT Realtime (EU)"],
        [7, "Speechy"],
      ]),
    );
    expect(labels(state)).toEqual([
      "Server default (GPT Realtime (EU))",
      "Voice Live (emulated)",
      "GPT Realtime (EU)",
      "Speechy (emulated)",
    ]);
    expect(emulationBanner(state, false)?.detail).toContain("speaks for Voice Live and Speechy; GPT Realtime (EU) is");
    expect(backendNames({ status: "loading" }).size).toBe(0);
  });
});

describe("backendHelp", () => {
  it("says when the list is a fallback, and why", () => {
    expect(backendHelp({ status: "loading" })).toContain("all are listed meanwhile");
    expect(backendHelp({ status: "failed", message: "Unavailable: down" })).toContain("(Unavailable: down)");
    expect(backendHelp(ready(false, [[Backend.VOICE_LIVE, false]]))).toBe(
      "The backends this server has credentials for.",
    );
    expect(backendHelp(ready(true, [[Backend.VOICE_LIVE, true]]))).toContain("no AI credentials");
  });
});

describe("emulationBanner", () => {
  it("says Twilio and the AI are emulated when both are, before any call", () => {
    const b = emulationBanner(
      ready(true, [
        [Backend.VOICE_LIVE, true],
        [Backend.GPT_REALTIME, true],
      ]),
      false,
    );
    expect(b?.headline).toBe(EMULATED_BANNER);
    expect(b?.parts).toBe("twilio ai");
    expect(b?.detail).toContain("Twilio emulator and realtime-AI emulator");
  });

  it("says only Twilio is emulated when the AI is real", () => {
    const b = emulationBanner(ready(true, [[Backend.GPT_REALTIME, false]]), false);
    expect(b?.headline).toBe(EMULATED_BANNER);
    expect(b?.parts).toBe("twilio");
    expect(b?.detail).toContain("the AI is real (gpt-realtime)");
  });

  it("says real phones are dialled when only the AI is emulated", () => {
    const b = emulationBanner(
      ready(false, [
        [Backend.VOICE_LIVE, true],
        [Backend.GPT_REALTIME, true],
      ]),
      false,
    );
    expect(b?.headline).toBe(AI_EMULATED_BANNER);
    expect(b?.headline).not.toContain("no real phone");
    expect(b?.parts).toBe("ai");
    expect(b?.detail).toContain("Voice Live and gpt-realtime");
  });

  it("names the emulated backend when only some are", () => {
    const b = emulationBanner(
      ready(true, [
        [Backend.VOICE_LIVE, false],
        [Backend.GPT_REALTIME, true],
      ]),
      false,
    );
    expect(b?.detail).toContain("speaks for gpt-realtime; Voice Live is the real AI");
  });

  it("shows nothing for a real server, except about emulated calls already listed", () => {
    const real = ready(false, [[Backend.VOICE_LIVE, false]]);
    expect(emulationBanner(real, false)).toBeUndefined();
    expect(emulationBanner(real, true)?.parts).toBe("past-calls");
  });

  it("falls back to the calls' own flag when the server has not said", () => {
    expect(emulationBanner({ status: "loading" }, false)).toBeUndefined();
    expect(emulationBanner({ status: "failed", message: "x" }, false)).toBeUndefined();
    expect(emulationBanner({ status: "failed", message: "x" }, true)?.parts).toBe("unknown");
  });
});
