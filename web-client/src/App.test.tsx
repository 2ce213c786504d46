import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { act, cleanup, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { App, EMULATED_BANNER } from "./App";
import { defaultScript, FakeVoiceAgent, type FakeOptions, type ScriptKind } from "./fake/fakeService";
import {
  Backend,
  CallStatus,
  Speaker,
  VoiceAgentService,
  VoicemailMode,
  WebhookDeliveryState,
} from "@voice-agent/client";
import { AuthStore, authInterceptor } from "./rpc/auth";
import { voiceAgentClient } from "./rpc/client";

const FAST_BACKOFF = { initialMs: 5, maxMs: 20, factor: 2 };

function setup(opts: FakeOptions = {}, pageSize?: number) {
  const auth = new AuthStore(window.sessionStorage);
  const fake = new FakeVoiceAgent({ stepMs: 1, ...opts, interceptors: [authInterceptor(auth)] });
  const client = voiceAgentClient(fake.transport());
  const user = userEvent.setup();
  render(
    <App client={client} auth={auth} watchBackoff={FAST_BACKOFF} {...(pageSize !== undefined ? { pageSize } : {})} />,
  );
  return { fake, auth, user };
}

const backendSelect = () => screen.getByLabelText<HTMLSelectElement>("AI backend");
const optionLabels = () => [...backendSelect().options].map((o) => o.textContent);
const callView = () => screen.getByTestId("call-view");
const lines = () => within(callView()).queryAllByTestId("transcript-line");
const transcriptCount = (script: readonly ScriptKind[]) => script.filter((k) => k?.case === "transcript").length;

beforeEach(() => {
  window.history.replaceState(null, "", "/");
  window.sessionStorage.clear();
});
afterEach(() => cleanup());

describe("placing a call", () => {
  it("checks the number before sending and points at the field", async () => {
    const { fake, user } = setup();
    const phone = screen.getByLabelText("Phone number");
    await user.type(phone, "4155551212");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect(screen.getByTestId("error-to").textContent).toContain("Start with '+'");
    expect(phone.getAttribute("aria-invalid")).toBe("true");
    expect(phone.getAttribute("aria-describedby")).toContain(screen.getByTestId("error-to").id);
    await waitFor(() => expect(document.activeElement).toBe(phone));
    expect(fake.calls.size).toBe(0);
  });

  it("shows a backend refusal next to the backend field", async () => {
    // A server that cannot say which backends it has: all are listed, and it refuses one it lacks.
    const { fake, user } = setup({ configuredBackends: [Backend.VOICE_LIVE], serverInfoError: Code.Unimplemented });
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("failed"));
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.selectOptions(screen.getByLabelText("AI backend"), String(Backend.GPT_REALTIME));
    await user.click(screen.getByRole("button", { name: "Place call" }));
    const err = await screen.findByTestId("error-backend");
    expect(err.textContent).toContain("GPT_REALTIME is not configured");
    expect(screen.getByLabelText("AI backend").getAttribute("aria-invalid")).toBe("true");
    expect(fake.calls.size).toBe(0);
  });

  it("shows a server INVALID_ARGUMENT under the field it names, opening the optional fields", async () => {
    const auth = new AuthStore(window.sessionStorage);
    const transport = createRouterTransport(({ service }) =>
      service(VoiceAgentService, {
        placeCall: () => {
          throw new ConnectError("voice: unknown voice 'zz'", Code.InvalidArgument);
        },
        listCalls: () => ({ calls: [] }),
      }),
    );
    const user = userEvent.setup();
    render(<App client={voiceAgentClient(transport)} auth={auth} />);
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByText("Instructions, voice and greeting (optional)"));
    await user.type(screen.getByLabelText("Voice"), "zz");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect((await screen.findByTestId("error-voice")).textContent).toBe("unknown voice 'zz'");
    await waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Voice")));
  });

  it("sends the optional fields as the contract says", async () => {
    const seen: unknown[] = [];
    const transport = createRouterTransport(({ service }) =>
      service(VoiceAgentService, {
        placeCall: (req) => {
          seen.push({
            to: req.to,
            backend: req.backend,
            voice: req.voice,
            instructions: req.instructions,
            greeting: req.greeting,
            max: req.maxDuration?.seconds,
          });
          throw new ConnectError("stop here", Code.Unavailable);
        },
        listCalls: () => ({ calls: [] }),
      }),
    );
    const user = userEvent.setup();
    render(<App client={voiceAgentClient(transport)} auth={new AuthStore(window.sessionStorage)} />);
    await user.type(screen.getByLabelText("Phone number"), "+1 (415) 555-1212");
    await user.selectOptions(screen.getByLabelText("AI backend"), String(Backend.VOICE_LIVE));
    await user.click(screen.getByText("Instructions, voice and greeting (optional)"));
    await user.type(screen.getByLabelText("Instructions for the agent"), "Be brief.");
    await user.type(screen.getByLabelText("Voice"), "alloy");
    await user.click(screen.getByLabelText("No greeting"));
    await user.type(screen.getByLabelText("Maximum duration (seconds)"), "90");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect((await screen.findByTestId("error-form")).textContent).toContain("stop here");
    expect(seen).toEqual([
      {
        to: "+14155551212",
        backend: Backend.VOICE_LIVE,
        voice: "alloy",
        instructions: "Be brief.",
        greeting: "",
        max: 90n,
      },
    ]);
  });
});

describe("webhook URL", () => {
  it("sends the call's webhook URL and shows the server's refusal under it", async () => {
    const sent: (string | undefined)[] = [];
    const transport = createRouterTransport(({ service }) =>
      service(VoiceAgentService, {
        placeCall: (req) => {
          sent.push(req.webhookUrl);
          throw new ConnectError(
            "webhook_url: this server has no WEBHOOK_SECRET to sign webhooks with",
            Code.InvalidArgument,
          );
        },
        listCalls: () => ({ calls: [] }),
      }),
    );
    const user = userEvent.setup();
    render(<App client={voiceAgentClient(transport)} auth={new AuthStore(window.sessionStorage)} />);
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByText("Instructions, voice and greeting (optional)"));
    await user.type(screen.getByLabelText("Webhook URL"), " https://hooks.example/h ");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect((await screen.findByTestId("error-webhook_url")).textContent).toContain("WEBHOOK_SECRET");
    expect(sent).toEqual(["https://hooks.example/h"]);
    await waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Webhook URL")));
  });
});

describe("voicemail and variables", () => {
  it("sends the voicemail policy and the variables, and refuses a bad variables line before sending", async () => {
    const seen: unknown[] = [];
    const transport = createRouterTransport(({ service }) =>
      service(VoiceAgentService, {
        placeCall: (req) => {
          seen.push({ voicemail: req.voicemail?.mode, message: req.voicemail?.message, variables: req.variables });
          throw new ConnectError("stop here", Code.Unavailable);
        },
        listCalls: () => ({ calls: [] }),
      }),
    );
    const user = userEvent.setup();
    render(<App client={voiceAgentClient(transport)} auth={new AuthStore(window.sessionStorage)} />);
    await user.type(screen.getByLabelText("Phone number"), "+15550110");
    await user.click(screen.getByText("Instructions, voice and greeting (optional)"));
    await user.type(screen.getByLabelText("Variables"), "name=Sam{Enter}oops");
    await user.click(screen.getByLabelText("Leave a message"));
    await user.type(screen.getByLabelText("Message after the beep"), "Please call us back.");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect((await screen.findByTestId("error-variables")).textContent).toBe("Line 2: write name=value.");
    expect(seen).toEqual([]);
    await user.clear(screen.getByLabelText("Variables"));
    await user.type(screen.getByLabelText("Variables"), "name=Sam{Enter}day=Friday");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect((await screen.findByTestId("error-form")).textContent).toContain("stop here");
    expect(seen).toEqual([
      {
        voicemail: VoicemailMode.LEAVE_MESSAGE,
        message: "Please call us back.",
        variables: { name: "Sam", day: "Friday" },
      },
    ]);
  });
});

describe("live call view", () => {
  it("follows a call from queued to completed with the conversation, latencies and DTMF", async () => {
    const { user } = setup();
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"), { timeout: 3000 });
    const view = callView();
    expect(view.dataset.ended).toBe("true");
    expect(within(view).getByRole("heading", { level: 2 }).textContent).toContain("+15550100");
    expect(within(view).getByTestId("end-step").textContent).toContain("callee hung up");
    const steps = within(view).getByRole("list", { name: "Call status" });
    expect(
      within(steps)
        .getAllByRole("listitem")
        .map((li) => li.className.includes("step--done")),
    ).toEqual([true, true, true, true, true]);
    const chat = lines();
    expect(chat).toHaveLength(transcriptCount(defaultScript()));
    expect(chat[0]?.dataset.speaker).toBe("agent");
    expect(chat[1]?.dataset.speaker).toBe("callee");
    const interrupted = chat.filter((l) => l.className.includes("msg--interrupted"));
    expect(interrupted).toHaveLength(1);
    expect(interrupted[0]?.textContent).toContain("interrupted");
    expect(
      within(view)
        .getAllByTestId("dtmf-line")
        .map((d) => d.querySelector("kbd")?.textContent),
    ).toEqual(["4", "2", "7"]);
    expect(within(view).getAllByTestId("turn-row")).toHaveLength(3);
    expect(within(view).getByTestId("notice-line").textContent).toContain("emulated");
    expect(within(view).queryByRole("button", { name: "Hang up" })).toBeNull();
    expect(screen.getByTestId("emulated-banner").textContent).toContain(
      "Calls are emulated — no real phone is dialled",
    );
    expect(window.location.hash).toBe(`#/calls/${view.dataset.callId}`);
  });

  it("keeps the transcript whole and unrepeated across dropped streams", async () => {
    const { user, fake } = setup({ dropStreamAfter: 2, repeatOnResume: true });
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"), { timeout: 10_000 });
    const seqs = lines().map((l) => Number(l.dataset.sequence));
    expect(seqs).toHaveLength(transcriptCount(defaultScript()));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
    expect(fake.watchRequests.length).toBeGreaterThan(5);
  }, 15_000);

  it("hangs up a live call", async () => {
    const script: ScriptKind[] = [
      { case: "status", value: { status: CallStatus.RINGING, detail: "" } },
      { case: "status", value: { status: CallStatus.IN_PROGRESS, detail: "" } },
      { case: "transcript", value: { speaker: Speaker.AGENT, text: "Hello?", interrupted: false } },
    ];
    const { user } = setup({ script });
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(lines()).toHaveLength(1));
    expect(callView().dataset.status).toBe("IN_PROGRESS");
    expect(within(callView()).getByTestId("duration").textContent).toMatch(/^\d+:\d\d$/);
    await user.click(within(callView()).getByRole("button", { name: "Hang up" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"));
    expect(within(callView()).getByTestId("end-step").textContent).toContain("hung up by API");
  });

  it("transfers a live call to a number and shows the transfer in the conversation", async () => {
    const script: ScriptKind[] = [
      { case: "status", value: { status: CallStatus.RINGING, detail: "" } },
      { case: "status", value: { status: CallStatus.IN_PROGRESS, detail: "" } },
      { case: "transcript", value: { speaker: Speaker.AGENT, text: "Hello?", interrupted: false } },
    ];
    const { user } = setup({ script });
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(lines()).toHaveLength(1));
    const view = callView();
    await user.type(within(view).getByLabelText("Transfer to"), "12");
    await user.click(within(view).getByRole("button", { name: "Transfer" }));
    expect(within(view).getByRole("alert").textContent).toContain("'+'");
    await user.clear(within(view).getByLabelText("Transfer to"));
    await user.type(within(view).getByLabelText("Transfer to"), "+15550120");
    await user.click(within(view).getByRole("button", { name: "Transfer" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"));
    const transfers = within(callView()).getAllByTestId("transfer-line");
    expect(transfers.map((t) => t.textContent)).toEqual([
      expect.stringContaining("+15550120 dialling by an operator"),
      expect.stringContaining("+15550120 answered by an operator"),
    ]);
    expect(within(callView()).getByTestId("end-step").textContent).toContain("transferred to +15550120");
  });

  it("shows error events and a call that cannot be found", async () => {
    const script: ScriptKind[] = [
      { case: "error", value: { code: "ai_unavailable", message: "the AI endpoint refused the connection" } },
      { case: "status", value: { status: CallStatus.FAILED, detail: "AI unavailable" } },
    ];
    const { user } = setup({ script });
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(callView().dataset.status).toBe("FAILED"));
    expect(within(callView()).getByTestId("error-line").textContent).toContain("ai_unavailable");
    expect(within(callView()).getByTestId("end-step").textContent).toContain("AI unavailable");

    act(() => window.history.pushState(null, "", "#/calls/nope"));
    act(() => window.dispatchEvent(new PopStateEvent("popstate")));
    expect(await within(callView()).findByRole("alert")).toHaveProperty(
      "textContent",
      expect.stringContaining("Not found"),
    );
  });
});

describe("outcome webhooks", () => {
  it("shows each delivery's state, attempts and last error, and refreshes them", async () => {
    const { user, fake } = setup({
      webhooks: [
        {
          messageId: "msg_1",
          type: "call.status_changed",
          url: "https://hooks.example/a",
          state: WebhookDeliveryState.DELIVERED,
          attempts: 3,
          lastHttpStatus: 204,
        },
        {
          messageId: "msg_2",
          type: "call.ended",
          url: "https://hooks.example/a",
          state: WebhookDeliveryState.DEAD,
          attempts: 12,
          lastHttpStatus: 503,
          lastError: "the receiver answered HTTP 503",
        },
      ],
    });
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"), { timeout: 3000 });
    const panel = await within(callView()).findByTestId("webhooks");
    const rows = within(panel).getAllByTestId("webhook-row");
    expect(rows.map((r) => r.dataset.state)).toEqual(["DELIVERED", "DEAD"]);
    expect(rows[0]?.textContent).toContain("HTTP 204");
    expect(rows[1]?.textContent).toContain("the receiver answered HTTP 503");
    expect(rows[1]?.textContent).toContain("12");
    const before = fake.getCallRequests;
    await user.click(within(panel).getByRole("button", { name: "Refresh" }));
    await waitFor(() => expect(fake.getCallRequests).toBe(before + 1));
  });

  it("shows no webhook panel for a call without receivers", async () => {
    const { user } = setup();
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"), { timeout: 3000 });
    expect(within(callView()).queryByTestId("webhooks")).toBeNull();
  });
});

describe("calls list", () => {
  it("pages newest first and replays a past call's transcript", async () => {
    const { user } = setup({ seedCalls: 25 }, 10);
    const list = await screen.findByTestId("calls-list");
    await waitFor(() => expect(within(list).getAllByRole("button")).toHaveLength(10));
    const ids = () =>
      within(list)
        .getAllByRole("button")
        .map((b) => b.dataset.callId);
    expect(ids()[0]).toBe("call-0025");
    await user.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(ids()).toHaveLength(20));
    await user.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(ids()).toHaveLength(25));
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
    expect(ids().at(-1)).toBe("call-0001");
    expect(new Set(ids()).size).toBe(25);
    expect(screen.getByTestId("emulated-banner")).toBeTruthy();

    await user.click(within(list).getAllByRole("button")[24]!);
    await waitFor(() => expect(callView().dataset.ended).toBe("true"));
    await waitFor(() => expect(lines()).toHaveLength(transcriptCount(defaultScript())));
    expect(callView().dataset.callId).toBe("call-0001");
    expect(callView().dataset.status).toBe("COMPLETED");
  });

  it("shows no emulated banner for real calls", async () => {
    setup({ seedCalls: 2, emulated: false });
    await waitFor(() => expect(within(screen.getByTestId("calls-list")).getAllByRole("button")).toHaveLength(2));
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(screen.queryByTestId("emulated-banner")).toBeNull();
  });
});

describe("server info", () => {
  it("checks the form against the limits the server publishes", async () => {
    const { fake, user } = setup({ limits: { maxVoiceBytes: 4, minToDigits: 10, longestMaxDurationS: 60 } });
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(screen.getByText(/10 to 15 digits/)).toBeTruthy();
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByText("Instructions, voice and greeting (optional)"));
    await user.type(screen.getByLabelText("Voice"), "alloy");
    await user.type(screen.getByLabelText("Maximum duration (seconds)"), "90");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    expect(screen.getByTestId("error-to").textContent).toContain("at least 10 needed");
    expect(screen.getByTestId("error-voice").textContent).toBe("At most 4 bytes.");
    expect(screen.getByTestId("error-max_duration").textContent).toBe("A whole number of seconds from 10 to 60.");
    expect(fake.calls.size).toBe(0);
  });

  it("names the backends as the server does", async () => {
    setup({
      configuredBackends: [Backend.VOICE_LIVE, Backend.GPT_REALTIME],
      emulated: false,
      aiEmulated: false,
      displayNames: { [Backend.VOICE_LIVE]: "Voice Live (Sweden)" },
      seedCalls: 1,
    });
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(optionLabels()).toEqual(["Server default (Voice Live (Sweden))", "Voice Live (Sweden)", "gpt-realtime"]);
    const list = screen.getByTestId("calls-list");
    await waitFor(() => expect(list.textContent).toContain("· Voice Live (Sweden)"));
  });

  it("offers only the backends the server reports, naming its default", async () => {
    const { fake, user } = setup({ configuredBackends: [Backend.GPT_REALTIME], emulated: false });
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(optionLabels()).toEqual(["Server default (gpt-realtime)", "gpt-realtime"]);
    expect([...backendSelect().options].map((o) => Number(o.value))).toEqual([
      Backend.UNSPECIFIED,
      Backend.GPT_REALTIME,
    ]);
    expect(screen.getByTestId("backend-help").textContent).toBe("The backends this server has credentials for.");
    expect(screen.queryByTestId("emulated-banner")).toBeNull();
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.selectOptions(backendSelect(), String(Backend.GPT_REALTIME));
    await user.click(screen.getByRole("button", { name: "Place call" }));
    await waitFor(() => expect(fake.calls.size).toBe(1));
    expect([...fake.calls.values()][0]?.call.backend).toBe(Backend.GPT_REALTIME);
    expect(screen.queryByTestId("error-backend")).toBeNull();
  });

  it("marks the emulated backends and shows the banner before any call", async () => {
    const { fake } = setup({ configuredBackends: [Backend.VOICE_LIVE, Backend.GPT_REALTIME] });
    const banner = await screen.findByTestId("emulated-banner");
    expect(fake.calls.size).toBe(0);
    expect(banner.dataset.emulated).toBe("twilio ai");
    expect(banner.textContent).toContain(EMULATED_BANNER);
    expect(banner.textContent).toContain("Twilio emulator and realtime-AI emulator");
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(optionLabels()).toEqual(["Server default (Voice Live)", "Voice Live (emulated)", "gpt-realtime (emulated)"]);
  });

  it("says real phones are dialled when only the AI is emulated", async () => {
    setup({ emulated: false, aiEmulated: true });
    const banner = await screen.findByTestId("emulated-banner");
    expect(banner.dataset.emulated).toBe("ai");
    expect(banner.textContent).toContain("real phones are dialled");
    expect(banner.textContent).not.toContain(EMULATED_BANNER);
    expect(optionLabels()).toEqual(["Server default (Voice Live)", "Voice Live (emulated)"]);
  });

  it("says only Twilio is emulated when the AI is real", async () => {
    setup({ emulated: true, aiEmulated: false, configuredBackends: [Backend.GPT_REALTIME] });
    const banner = await screen.findByTestId("emulated-banner");
    expect(banner.dataset.emulated).toBe("twilio");
    expect(banner.textContent).toContain(EMULATED_BANNER);
    expect(banner.textContent).toContain("the AI is real (gpt-realtime)");
    expect(optionLabels()).toEqual(["Server default (gpt-realtime)", "gpt-realtime"]);
  });

  it("lists every backend while asking, then drops a choice the server does not offer", async () => {
    let answer = (): void => undefined;
    const serverInfoGate = new Promise<void>((resolve) => {
      answer = resolve;
    });
    const { user } = setup({ configuredBackends: [Backend.VOICE_LIVE], serverInfoGate });
    expect(backendSelect().dataset.backends).toBe("loading");
    expect(optionLabels()).toEqual(["Server default", "Voice Live", "gpt-realtime"]);
    expect(screen.getByTestId("backend-help").textContent).toContain("all are listed meanwhile");
    await user.selectOptions(backendSelect(), String(Backend.GPT_REALTIME));
    expect(backendSelect().value).toBe(String(Backend.GPT_REALTIME));
    act(() => answer());
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(optionLabels()).toEqual(["Server default (Voice Live)", "Voice Live (emulated)"]);
    expect(backendSelect().value).toBe(String(Backend.UNSPECIFIED));
  });

  it("falls back to every backend, and says so, when GetServerInfo fails", async () => {
    const { user } = setup({ serverInfoError: Code.Unavailable });
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("failed"));
    expect(optionLabels()).toEqual(["Server default", "Voice Live", "gpt-realtime"]);
    const help = screen.getByTestId("backend-help").textContent ?? "";
    expect(help).toContain("Could not ask the server which backends it offers");
    expect(help).toContain("GetServerInfo refused by the fake");
    // Not a page-level alert: the form still works.
    expect(screen.queryByRole("alert")).toBeNull();
    expect(screen.queryByTestId("emulated-banner")).toBeNull();
    // The calls' own flag still brings the banner, without claiming what was emulated.
    await user.type(screen.getByLabelText("Phone number"), "+15550100");
    await user.click(screen.getByRole("button", { name: "Place call" }));
    const banner = await screen.findByTestId("emulated-banner");
    expect(banner.dataset.emulated).toBe("unknown");
    expect(banner.textContent).toContain("Calls are emulated");
  });
});

describe("API token", () => {
  it("asks for a token when the server says UNAUTHENTICATED, and retries with it", async () => {
    const { user } = setup({ token: "s3cret", seedCalls: 1 });
    const field = await screen.findByLabelText("API token");
    const alerts = screen.getAllByRole("alert").map((a) => a.textContent);
    expect(alerts.some((t) => t?.includes("The server requires an API token"))).toBe(true);
    await user.type(field, "s3cret");
    await user.click(screen.getByRole("button", { name: "Save token" }));
    await waitFor(() => expect(within(screen.getByTestId("calls-list")).getAllByRole("button")).toHaveLength(1));
    expect(window.sessionStorage.getItem("voiceagent.apiToken")).toBe("s3cret");
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("asks for the server info again once a token is saved", async () => {
    const { fake, user } = setup({ token: "s3cret", configuredBackends: [Backend.GPT_REALTIME] });
    const field = await screen.findByLabelText("API token");
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("failed"));
    expect(screen.getByTestId("backend-help").textContent).toContain("API token");
    expect(optionLabels()).toEqual(["Server default", "Voice Live", "gpt-realtime"]);
    expect(screen.queryByTestId("emulated-banner")).toBeNull();
    const asked = fake.serverInfoRequests;
    expect(asked).toBeGreaterThan(0);
    await user.type(field, "s3cret");
    await user.click(screen.getByRole("button", { name: "Save token" }));
    await waitFor(() => expect(backendSelect().dataset.backends).toBe("ready"));
    expect(fake.serverInfoRequests).toBeGreaterThan(asked);
    expect(optionLabels()).toEqual(["Server default (gpt-realtime)", "gpt-realtime (emulated)"]);
    expect((await screen.findByTestId("emulated-banner")).dataset.emulated).toBe("twilio ai");
  });
});

describe("deep links", () => {
  it("opens the call named in a /calls/<id> path", async () => {
    const auth = new AuthStore(window.sessionStorage);
    const fake = new FakeVoiceAgent({ seedCalls: 2 });
    window.history.replaceState(null, "", "/calls/call-0001");
    render(<App client={voiceAgentClient(fake.transport())} auth={auth} />);
    await waitFor(() => expect(callView().dataset.status).toBe("COMPLETED"));
    expect(callView().dataset.callId).toBe("call-0001");
    expect(window.location.pathname + window.location.hash).toBe("/#/calls/call-0001");
  });
});
