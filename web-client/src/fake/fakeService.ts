// In-memory VoiceAgentService: a scripted call that goes queued → ringing → in progress → talk → ended.
// Used by the component tests and by the `?demo` page (no server needed). It keeps the contract's
// semantics that the UI relies on: gapless sequences from 1, history-then-live WatchCall that ends
// after the terminal status, NOT_FOUND, UNAUTHENTICATED, field-named INVALID_ARGUMENT, paging, and a
// GetServerInfo that offers exactly the backends PlaceCall accepts and publishes the limits it checks.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createRouterTransport,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import {
  AudioMode,
  Backend,
  type Call,
  type CallEvent,
  CallEventSchema,
  CallSchema,
  CallStatus,
  type GetServerInfoResponse,
  GetServerInfoResponseSchema,
  Speaker,
  TransferSchema,
  TransferBy,
  TransferState,
  VoiceAgentService,
  WebhookDeliverySchema,
} from "@voice-agent/client";
import { e164Pattern } from "../model/e164";
import { backendLabel, isTerminal } from "../model/labels";
import { FALLBACK_LIMITS, type Limits } from "../model/limits";

/** The `kind` of one scripted event. */
export type ScriptKind = MessageInitShape<typeof CallEventSchema>["kind"];

/** Options of the fake server. */
export interface FakeOptions {
  /** Milliseconds between scripted events (default 700). */
  readonly stepMs?: number;
  /** Whether "Twilio" is emulated (GetServerInfo's `telephony_emulated`; default true). A call is
   * `emulated` when Twilio or its backend is. */
  readonly emulated?: boolean;
  /** Whether the offered backends are answered by the "realtime-AI emulator" (default: `emulated`). */
  readonly aiEmulated?: boolean;
  /** When set, every RPC needs `authorization: Bearer <token>`. */
  readonly token?: string;
  /** Backends that "are configured": GetServerInfo offers these, PlaceCall refuses the others with
   * FAILED_PRECONDITION (default: Voice Live only). */
  readonly configuredBackends?: readonly Backend[];
  /** GetServerInfo's display name of a backend (default: this build's label). */
  readonly displayNames?: Partial<Record<Backend, string>>;
  /** Limits PlaceCall checks and GetServerInfo publishes (default: the fallback limits). */
  readonly limits?: Partial<Limits>;
  /** What BACKEND_UNSPECIFIED becomes (default: the first configured backend). */
  readonly defaultBackend?: Backend;
  /** GetServerInfo fails with this code (e.g. UNIMPLEMENTED, as a server older than the RPC would). */
  readonly serverInfoError?: Code;
  /** GetServerInfo answers only once this promise settles (to test what shows while it is asked). */
  readonly serverInfoGate?: Promise<void>;
  /** WatchCall fails with UNAVAILABLE after this many events per stream (simulates drops). */
  readonly dropStreamAfter?: number;
  /** On a resumed WatchCall, first repeat the event at after_sequence (simulates duplicates). */
  readonly repeatOnResume?: boolean;
  /** What happens after the call is queued (default `defaultScript()`). */
  readonly script?: readonly ScriptKind[];
  /** Ended calls present at start, oldest first (for the list). */
  readonly seedCalls?: number;
  /** Interceptors of the client side of the transport (e.g. the auth interceptor). */
  readonly interceptors?: Interceptor[];
  /** The outcome webhook deliveries GetCall reports for every call (default: none). */
  readonly webhooks?: readonly MessageInitShape<typeof WebhookDeliverySchema>[];
}

interface FakeCall {
  call: Call;
  events: CallEvent[];
  readonly listeners: Set<() => void>;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const status = (s: CallStatus, detail = ""): ScriptKind => ({ case: "status", value: { status: s, detail } });
const say = (speaker: Speaker, text: string, interrupted = false): ScriptKind => ({
  case: "transcript",
  value: { speaker, text, interrupted },
});
const turn = (turnIndex: number, firstAudioSentMs: number, firstAudioHeardMs: number): ScriptKind => ({
  case: "turn",
  value: { turnIndex, firstAudioSentMs, firstAudioHeardMs },
});

/** The conversation of a demo call, after QUEUED. */
export function defaultScript(): ScriptKind[] {
  return [
    status(CallStatus.INITIATED),
    status(CallStatus.RINGING),
    status(CallStatus.IN_PROGRESS, "answered"),
    { case: "notice", value: { code: "emulated", message: "The callee is the built-in emulator." } },
    say(Speaker.AGENT, "Hello, this is the booking assistant. How can I help you today?"),
    turn(0, 412, 530),
    say(Speaker.CALLEE, "Hi, I'd like to check my appointment for tomorrow."),
    say(Speaker.AGENT, "Of course. Could you give me your booking refer", true),
    say(Speaker.CALLEE, "It's four two seven, I'll type it."),
    { case: "dtmf", value: { digit: "4" } },
    { case: "dtmf", value: { digit: "2" } },
    { case: "dtmf", value: { digit: "7" } },
    turn(1, 655, 790),
    say(Speaker.AGENT, "Thank you. Your appointment is tomorrow at ten in the morning."),
    turn(2, 380, 505),
    say(Speaker.CALLEE, "Great, thanks. Bye!"),
    say(Speaker.AGENT, "Goodbye!"),
    status(CallStatus.COMPLETED, "callee hung up"),
  ];
}

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** The fake's state, exposed so tests can drive and inspect it. */
export class FakeVoiceAgent {
  readonly calls = new Map<string, FakeCall>();
  readonly watchRequests: { callId: string; afterSequence: bigint }[] = [];
  /** How many GetServerInfo requests reached the handler (including refused ones). */
  /** How many GetCall requests were answered. */
  getCallRequests = 0;
  serverInfoRequests = 0;
  private nextId = 1;
  private readonly opts: FakeOptions;

  constructor(opts: FakeOptions = {}) {
    this.opts = opts;
    for (let i = 0; i < (opts.seedCalls ?? 0); i++) {
      const fc = this.newCall(`+1555010${String(1000 + i).slice(-4)}`, Backend.VOICE_LIVE);
      for (const k of defaultScript()) this.append(fc, k);
    }
  }

  /** Backends PlaceCall accepts, in the server's order (Voice Live, then gpt-realtime). */
  get configuredBackends(): Backend[] {
    const configured = this.opts.configuredBackends ?? [Backend.VOICE_LIVE];
    return [Backend.VOICE_LIVE, Backend.GPT_REALTIME].filter((b) => configured.includes(b));
  }

  /** What UNSPECIFIED becomes. */
  get defaultBackend(): Backend {
    return this.opts.defaultBackend ?? this.configuredBackends[0] ?? Backend.VOICE_LIVE;
  }

  private get telephonyEmulated(): boolean {
    return this.opts.emulated ?? true;
  }

  private get aiEmulated(): boolean {
    return this.opts.aiEmulated ?? this.telephonyEmulated;
  }

  /** The limits PlaceCall checks. */
  get limits(): Limits {
    return { ...FALLBACK_LIMITS, ...this.opts.limits };
  }

  /** GetServerInfo's answer, consistent with what PlaceCall accepts and how calls are flagged. */
  serverInfo(): GetServerInfoResponse {
    const l = this.limits;
    return create(GetServerInfoResponseSchema, {
      backends: this.configuredBackends.map((backend) => ({
        backend,
        emulated: this.aiEmulated,
        defaultVoice: backend === Backend.VOICE_LIVE ? "en-US-AriaNeural" : "alloy",
        displayName: this.opts.displayNames?.[backend] ?? backendLabel(backend),
      })),
      limits: {
        minToDigits: l.minToDigits,
        maxToDigits: l.maxToDigits,
        maxInstructionsBytes: l.maxInstructionsBytes,
        maxVoiceBytes: l.maxVoiceBytes,
        maxGreetingBytes: l.maxGreetingBytes,
        maxMetadataEntries: l.maxMetadataEntries,
        maxMetadataKeyBytes: l.maxMetadataKeyBytes,
        maxMetadataValueBytes: l.maxMetadataValueBytes,
        shortestMaxDuration: { seconds: BigInt(l.shortestMaxDurationS), nanos: 0 },
        longestMaxDuration: { seconds: BigInt(l.longestMaxDurationS), nanos: 0 },
      },
      defaultBackend: this.defaultBackend,
      telephonyEmulated: this.telephonyEmulated,
      defaultGreeting: "Please wait while we connect you to our AI assistant.",
      defaultMaxDuration: { seconds: 600n, nanos: 0 },
      audioMode: AudioMode.TRANSCODE,
      serverVersion: "0.0.0-fake",
    });
  }

  /** Router transport serving this fake. */
  transport(): Transport {
    return createRouterTransport(({ service }) => service(VoiceAgentService, this.impl()), {
      transport: { interceptors: this.opts.interceptors ?? [] },
    });
  }

  /** Appends an event to a call now (tests use it to drive a call by hand). */
  append(fc: FakeCall, kind: ScriptKind): CallEvent {
    const now = new Date(Date.now());
    const event = create(CallEventSchema, {
      sequence: BigInt(fc.events.length + 1),
      time: timestampFromDate(now),
      kind,
    });
    fc.events.push(event);
    const k = event.kind;
    if (k.case === "status") {
      fc.call.status = k.value.status;
      if (k.value.status === CallStatus.IN_PROGRESS && !fc.call.answeredAt) fc.call.answeredAt = timestampFromDate(now);
      if (isTerminal(k.value.status)) {
        fc.call.endedAt = timestampFromDate(now);
        fc.call.endReason = k.value.detail;
        if (fc.timer !== undefined) clearTimeout(fc.timer);
        fc.timer = undefined;
      }
    }
    fc.call.eventCount = BigInt(fc.events.length);
    for (const l of [...fc.listeners]) l();
    return event;
  }

  private newCall(to: string, backend: Backend): FakeCall {
    const id = `call-${String(this.nextId++).padStart(4, "0")}`;
    const fc: FakeCall = {
      call: create(CallSchema, {
        callId: id,
        to,
        from: "+15550009999",
        backend: backend === Backend.UNSPECIFIED ? this.defaultBackend : backend,
        status: CallStatus.UNSPECIFIED,
        providerCallId: `CA${id.replace(/[^0-9]/g, "").padStart(32, "0")}`,
        createdAt: timestampFromDate(new Date(Date.now())),
        emulated: this.telephonyEmulated || this.aiEmulated,
      }),
      events: [],
      listeners: new Set(),
      timer: undefined,
    };
    this.calls.set(id, fc);
    this.append(fc, status(CallStatus.QUEUED));
    return fc;
  }

  private play(fc: FakeCall, script: readonly ScriptKind[], index: number): void {
    const step = script[index];
    if (step === undefined || isTerminal(fc.call.status)) return;
    fc.timer = setTimeout(() => {
      fc.timer = undefined;
      if (isTerminal(fc.call.status)) return;
      this.append(fc, step);
      this.play(fc, script, index + 1);
    }, this.opts.stepMs ?? 700);
  }

  private checkAuth(ctx: HandlerContext): void {
    const token = this.opts.token;
    if (token === undefined) return;
    if (ctx.requestHeader.get("authorization") !== `Bearer ${token}`) {
      throw new ConnectError("missing or wrong API token", Code.Unauthenticated);
    }
  }

  private get(callId: string): FakeCall {
    const fc = this.calls.get(callId);
    if (!fc) throw new ConnectError(`call ${callId} not found`, Code.NotFound);
    return fc;
  }

  private impl(): ServiceImpl<typeof VoiceAgentService> {
    // The router calls the methods detached: arrows keep `this`, and the generator (which cannot
    // be an arrow) closes over `self`.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      placeCall: (req, ctx) => {
        this.checkAuth(ctx);
        const l = this.limits;
        if (!e164Pattern(l).test(req.to)) {
          throw new ConnectError(
            `to: must be E.164: '+' then ${l.minToDigits} to ${l.maxToDigits} digits, e.g. +14155551212`,
            Code.InvalidArgument,
          );
        }
        if (utf8Length(req.voice) > l.maxVoiceBytes) {
          throw new ConnectError(`voice: at most ${l.maxVoiceBytes} bytes`, Code.InvalidArgument);
        }
        if (utf8Length(req.instructions) > l.maxInstructionsBytes) {
          throw new ConnectError(`instructions: at most ${l.maxInstructionsBytes} bytes`, Code.InvalidArgument);
        }
        if (req.backend !== Backend.UNSPECIFIED && !this.configuredBackends.includes(req.backend)) {
          throw new ConnectError(
            `backend: ${Backend[req.backend] ?? req.backend} is not configured on this server`,
            Code.FailedPrecondition,
          );
        }
        const fc = this.newCall(req.to, req.backend);
        fc.call.instructions = req.instructions;
        fc.call.voice = req.voice;
        this.play(fc, this.opts.script ?? defaultScript(), 0);
        return {
          callId: fc.call.callId,
          providerCallId: fc.call.providerCallId,
          status: fc.call.status,
          emulated: fc.call.emulated,
        };
      },
      watchCall: async function* (this: void, req, ctx) {
        self.checkAuth(ctx);
        const fc = self.get(req.callId);
        self.watchRequests.push({ callId: req.callId, afterSequence: req.afterSequence });
        let next = Number(req.afterSequence);
        if (self.opts.repeatOnResume === true && next > 0) next -= 1;
        let delivered = 0;
        for (;;) {
          while (next < fc.events.length) {
            const event = fc.events[next++];
            if (event === undefined) break;
            yield { event };
            delivered += 1;
            if (event.kind.case === "status" && isTerminal(event.kind.value.status)) return;
            if (self.opts.dropStreamAfter !== undefined && delivered >= self.opts.dropStreamAfter) {
              throw new ConnectError("simulated connection drop", Code.Unavailable);
            }
          }
          await new Promise<void>((resolve) => {
            const done = (): void => {
              fc.listeners.delete(done);
              ctx.signal.removeEventListener("abort", done);
              resolve();
            };
            fc.listeners.add(done);
            ctx.signal.addEventListener("abort", done);
          });
          if (ctx.signal.aborted) return;
        }
      },
      hangUpCall: (req, ctx) => {
        this.checkAuth(ctx);
        const fc = this.get(req.callId);
        if (!isTerminal(fc.call.status)) {
          const answered = fc.call.answeredAt !== undefined;
          this.append(fc, status(answered ? CallStatus.COMPLETED : CallStatus.CANCELED, "hung up by API"));
        }
        return { call: fc.call };
      },
      transferCall: (req, ctx) => {
        this.checkAuth(ctx);
        const fc = this.get(req.callId);
        if (fc.call.status !== CallStatus.IN_PROGRESS) {
          throw new ConnectError("cannot transfer: the call is not in progress", Code.FailedPrecondition);
        }
        if (fc.timer !== undefined) clearTimeout(fc.timer);
        fc.timer = undefined;
        const transfer = (state: TransferState, reason = ""): ScriptKind => ({
          case: "transfer",
          value: { target: req.number, state, by: TransferBy.OPERATOR, reason },
        });
        this.append(fc, transfer(TransferState.STARTED));
        fc.call.transfer = create(TransferSchema, {
          target: req.number,
          state: TransferState.STARTED,
          by: TransferBy.OPERATOR,
        });
        const call = create(CallSchema, fc.call);
        // The person answers at once in the fake; the call then ends.
        setTimeout(() => {
          this.append(fc, transfer(TransferState.ANSWERED, "answered"));
          fc.call.transfer = create(TransferSchema, {
            target: req.number,
            state: TransferState.ANSWERED,
            by: TransferBy.OPERATOR,
            reason: "answered",
          });
          this.append(fc, status(CallStatus.COMPLETED, `transferred to ${req.number} (answered)`));
        }, 50);
        return { call };
      },
      getCall: (req, ctx) => {
        this.checkAuth(ctx);
        this.getCallRequests += 1;
        const call = this.get(req.callId).call;
        const webhooks = (this.opts.webhooks ?? []).map((w) => create(WebhookDeliverySchema, w));
        return { call: webhooks.length > 0 ? { ...call, webhooks } : call };
      },
      listCalls: (req, ctx) => {
        this.checkAuth(ctx);
        const size = req.pageSize === 0 ? 20 : req.pageSize;
        if (size > 100) throw new ConnectError("page_size: at most 100", Code.InvalidArgument);
        const offset = req.pageToken === "" ? 0 : Number.parseInt(req.pageToken, 10);
        if (!Number.isFinite(offset) || offset < 0) throw new ConnectError("page_token: invalid", Code.InvalidArgument);
        const newestFirst = [...this.calls.values()].reverse().map((c) => c.call);
        const page = newestFirst.slice(offset, offset + size);
        const end = offset + page.length;
        return { calls: page, nextPageToken: end < newestFirst.length ? String(end) : "" };
      },
      // The web UI answers no tool calls; the fake's calls make none.
      submitToolResult: (req, ctx) => {
        this.checkAuth(ctx);
        this.get(req.callId);
        throw new ConnectError(`tool call ${req.toolCallId} not found`, Code.NotFound);
      },
      getServerInfo: async (_req, ctx) => {
        this.serverInfoRequests += 1;
        this.checkAuth(ctx);
        await this.opts.serverInfoGate;
        if (this.opts.serverInfoError !== undefined) {
          throw new ConnectError("GetServerInfo refused by the fake", this.opts.serverInfoError);
        }
        return this.serverInfo();
      },
    };
  }
}

/** Transport for `?demo`: the fake with a realistic pace and a few past calls in the list. */
export function demoTransport(interceptors: Interceptor[]): Transport {
  return new FakeVoiceAgent({ stepMs: 1200, seedCalls: 3, interceptors }).transport();
}
