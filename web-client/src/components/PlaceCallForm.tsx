// "Place a call": validates before sending and puts server errors next to the field they concern.
import { type FormEvent, useEffect, useId, useRef, useState } from "react";
import { Backend, type PlaceCallResponse, VoicemailMode } from "@voice-agent/client";
import { e164Help, normalizePhone, validateE164 } from "../model/e164";
import { placeCallLimits } from "../model/limits";
import { type PlaceCallField, placeCallFieldError } from "../model/rpcErrors";
import { backendHelp, backendOptions, type ServerInfoState } from "../model/serverInfo";
import { parseVariables } from "../model/variables";
import type { VoiceAgentClient } from "../rpc/client";

type GreetingMode = "default" | "none" | "custom";

const VOICE_SUGGESTIONS = [
  "alloy",
  "ash",
  "ballad",
  "coral",
  "echo",
  "sage",
  "shimmer",
  "verse",
  "marin",
  "cedar",
  "en-US-AriaNeural",
  "en-US-JennyNeural",
  "en-US-GuyNeural",
];

type Errors = Partial<Record<PlaceCallField | "form", string>>;

const FIELD_ORDER: readonly (PlaceCallField | "form")[] = [
  "to",
  "backend",
  "instructions",
  "voice",
  "greeting",
  "max_duration",
  "voicemail",
  "variables",
  "webhook_url",
  "metadata",
  "form",
];

function byteLength(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** Props of PlaceCallForm. */
export interface PlaceCallFormProps {
  readonly client: VoiceAgentClient;
  readonly onPlaced: (response: PlaceCallResponse, to: string) => void;
  readonly onRpcError: (err: unknown) => void;
  /** What the server offers; until it has said, every backend is listed. */
  readonly serverInfo: ServerInfoState;
}

/** The form that places a call. */
export function PlaceCallForm({ client, onPlaced, onRpcError, serverInfo }: PlaceCallFormProps) {
  const uid = useId();
  const id = (name: string): string => `${uid}-${name}`;
  const [to, setTo] = useState("");
  const [backend, setBackend] = useState<Backend>(Backend.UNSPECIFIED);
  const [instructions, setInstructions] = useState("");
  const [voice, setVoice] = useState("");
  const [greetingMode, setGreetingMode] = useState<GreetingMode>("default");
  const [greeting, setGreeting] = useState("");
  const [maxDuration, setMaxDuration] = useState("");
  const [voicemailMode, setVoicemailMode] = useState<VoicemailMode>(VoicemailMode.OFF);
  const [voicemailMessage, setVoicemailMessage] = useState("");
  const [webhookUrl, setWebhookUrl] = useState("");
  const [variables, setVariables] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [submitting, setSubmitting] = useState(false);
  const [moreOpen, setMoreOpen] = useState(false);
  // Bumped when a failed submit should move focus to the first field in error (after rendering,
  // so that a field inside the collapsed options is visible by then).
  const [focusTick, setFocusTick] = useState(0);
  const refs = useRef<Partial<Record<PlaceCallField, HTMLElement | null>>>({});
  const backendChoices = backendOptions(serverInfo);
  // The server's own bounds, checked before sending so the user gets the message at once.
  const limits = placeCallLimits(serverInfo);
  const backendOffered = backendChoices.some((o) => o.value === backend);

  // A backend picked from the fallback list that the server then turns out not to offer goes back
  // to the server's default, rather than being sent and refused.
  useEffect(() => {
    if (!backendOffered) setBackend(Backend.UNSPECIFIED);
  }, [backendOffered]);

  const showErrors = (errs: Errors): void => {
    setErrors(errs);
    if (hasAny(errs, ["instructions", "voice", "greeting", "max_duration", "voicemail", "variables", "webhook_url"]))
      setMoreOpen(true);
    setFocusTick((t) => t + 1);
  };

  useEffect(() => {
    if (focusTick === 0) return;
    const first = FIELD_ORDER.find((f) => errors[f] !== undefined && f !== "form");
    if (first !== undefined && first !== "form") refs.current[first]?.focus();
    // Only a new failed submit moves focus; typing (which changes nothing here) must not.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [focusTick]);

  const validate = (): Errors => {
    const errs: Errors = {};
    const phoneError = validateE164(normalizePhone(to), limits);
    if (phoneError !== null) errs.to = phoneError;
    if (byteLength(instructions) > limits.maxInstructionsBytes) {
      errs.instructions = `At most ${limits.maxInstructionsBytes} bytes (now ${byteLength(instructions)}).`;
    }
    if (byteLength(voice.trim()) > limits.maxVoiceBytes) errs.voice = `At most ${limits.maxVoiceBytes} bytes.`;
    if (greetingMode === "custom") {
      if (greeting.trim() === "") errs.greeting = "Type the greeting, or choose the default or none.";
      else if (byteLength(greeting) > limits.maxGreetingBytes)
        errs.greeting = `At most ${limits.maxGreetingBytes} bytes.`;
    }
    if (voicemailMode === VoicemailMode.LEAVE_MESSAGE) {
      if (voicemailMessage.trim() === "") errs.voicemail = "Type the message to leave on the machine.";
      else if (byteLength(voicemailMessage) > limits.maxGreetingBytes)
        errs.voicemail = `At most ${limits.maxGreetingBytes} bytes.`;
    }
    const parsed = parseVariables(variables);
    if (!parsed.ok) errs.variables = parsed.error;
    if (maxDuration.trim() !== "") {
      const n = Number(maxDuration);
      if (!Number.isInteger(n) || n < limits.shortestMaxDurationS || n > limits.longestMaxDurationS) {
        errs.max_duration = `A whole number of seconds from ${limits.shortestMaxDurationS} to ${limits.longestMaxDurationS}.`;
      }
    }
    return errs;
  };

  const onSubmit = async (e: FormEvent<HTMLFormElement>): Promise<void> => {
    e.preventDefault();
    if (submitting) return;
    const errs = validate();
    if (Object.keys(errs).length > 0) {
      showErrors(errs);
      return;
    }
    setErrors({});
    const number = normalizePhone(to);
    setSubmitting(true);
    try {
      const response = await client.placeCall({
        to: number,
        backend: backendOffered ? backend : Backend.UNSPECIFIED,
        instructions: instructions.trim(),
        voice: voice.trim(),
        // Unset = the server's default greeting; "" = no greeting (see PlaceCallRequest.greeting).
        greeting: greetingMode === "default" ? undefined : greetingMode === "none" ? "" : greeting.trim(),
        maxDuration: maxDuration.trim() === "" ? undefined : { seconds: BigInt(Number(maxDuration)), nanos: 0 },
        voicemail:
          voicemailMode === VoicemailMode.OFF
            ? undefined
            : {
                mode: voicemailMode,
                message: voicemailMode === VoicemailMode.LEAVE_MESSAGE ? voicemailMessage.trim() : "",
              },
        variables: ((p) => (p.ok ? p.variables : {}))(parseVariables(variables)),
        // Unset when empty: the server-wide WEBHOOK_URL (if any) still receives the call's webhooks.
        webhookUrl: webhookUrl.trim() === "" ? undefined : webhookUrl.trim(),
      });
      setErrors({});
      onPlaced(response, number);
    } catch (err) {
      onRpcError(err);
      const fe = placeCallFieldError(err);
      showErrors(fe.field === undefined ? { form: fe.message } : { [fe.field]: fe.message });
    } finally {
      setSubmitting(false);
    }
  };

  const describedBy = (field: string, help?: boolean): string | undefined => {
    const parts = [
      help === true ? id(`${field}-help`) : "",
      errors[field as PlaceCallField] ? id(`${field}-error`) : "",
    ];
    const joined = parts.filter((p) => p !== "").join(" ");
    return joined === "" ? undefined : joined;
  };

  const fieldError = (field: PlaceCallField) =>
    errors[field] !== undefined ? (
      <p id={id(`${field}-error`)} className="field-error" data-testid={`error-${field}`}>
        {errors[field]}
      </p>
    ) : null;

  return (
    <form className="card place-call" onSubmit={(e) => void onSubmit(e)} noValidate aria-labelledby={id("title")}>
      <h2 id={id("title")}>Place a call</h2>

      <div className="field">
        <label htmlFor={id("to")}>Phone number</label>
        <input
          id={id("to")}
          ref={(el) => {
            refs.current.to = el;
          }}
          name="to"
          type="tel"
          inputMode="tel"
          autoComplete="tel"
          placeholder="+14155551212"
          value={to}
          required
          aria-invalid={errors.to !== undefined}
          aria-describedby={describedBy("to", true)}
          onChange={(e) => setTo(e.target.value)}
        />
        <p id={id("to-help")} className="help">
          {e164Help(limits)}
        </p>
        {fieldError("to")}
      </div>

      <div className="field">
        <label htmlFor={id("backend")}>AI backend</label>
        <select
          id={id("backend")}
          ref={(el) => {
            refs.current.backend = el;
          }}
          name="backend"
          value={backendOffered ? backend : Backend.UNSPECIFIED}
          data-backends={serverInfo.status}
          aria-invalid={errors.backend !== undefined}
          aria-describedby={describedBy("backend", true)}
          onChange={(e) => setBackend(Number(e.target.value) as Backend)}
        >
          {backendChoices.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
        <p id={id("backend-help")} className="help" data-testid="backend-help">
          {backendHelp(serverInfo)}
        </p>
        {fieldError("backend")}
      </div>

      <details
        className="more-options"
        open={moreOpen}
        onToggle={(e) => setMoreOpen((e.currentTarget as HTMLDetailsElement).open)}
      >
        <summary>Instructions, voice and greeting (optional)</summary>

        <div className="field">
          <label htmlFor={id("instructions")}>Instructions for the agent</label>
          <textarea
            id={id("instructions")}
            ref={(el) => {
              refs.current.instructions = el;
            }}
            name="instructions"
            rows={4}
            value={instructions}
            placeholder="Empty: the server's default system prompt"
            aria-invalid={errors.instructions !== undefined}
            aria-describedby={describedBy("instructions")}
            onChange={(e) => setInstructions(e.target.value)}
          />
          {fieldError("instructions")}
        </div>

        <div className="field">
          <label htmlFor={id("voice")}>Voice</label>
          <input
            id={id("voice")}
            ref={(el) => {
              refs.current.voice = el;
            }}
            name="voice"
            list={id("voices")}
            value={voice}
            placeholder="Empty: the server's default voice"
            autoComplete="off"
            aria-invalid={errors.voice !== undefined}
            aria-describedby={describedBy("voice", true)}
            onChange={(e) => setVoice(e.target.value)}
          />
          <datalist id={id("voices")}>
            {VOICE_SUGGESTIONS.map((v) => (
              <option key={v} value={v} />
            ))}
          </datalist>
          <p id={id("voice-help")} className="help">
            gpt-realtime voices (e.g. alloy) or Azure voice names (e.g. en-US-AriaNeural) for Voice Live.
          </p>
          {fieldError("voice")}
        </div>

        <fieldset className="field">
          <legend>Greeting before the agent joins</legend>
          <div className="radios">
            {(
              [
                ["default", "Server default"],
                ["none", "No greeting"],
                ["custom", "Custom"],
              ] as const
            ).map(([mode, label]) => (
              <label key={mode} className="radio">
                <input
                  type="radio"
                  name={id("greeting-mode")}
                  value={mode}
                  checked={greetingMode === mode}
                  onChange={() => setGreetingMode(mode)}
                />
                {label}
              </label>
            ))}
          </div>
          {greetingMode === "custom" && (
            <>
              <label htmlFor={id("greeting")}>Greeting text</label>
              <input
                id={id("greeting")}
                ref={(el) => {
                  refs.current.greeting = el;
                }}
                name="greeting"
                value={greeting}
                aria-invalid={errors.greeting !== undefined}
                aria-describedby={describedBy("greeting")}
                onChange={(e) => setGreeting(e.target.value)}
              />
            </>
          )}
          {fieldError("greeting")}
        </fieldset>

        <div className="field">
          <label htmlFor={id("variables")}>Variables</label>
          <textarea
            id={id("variables")}
            ref={(el) => {
              refs.current.variables = el;
            }}
            name="variables"
            rows={3}
            value={variables}
            placeholder={"name=Sam\nday=Friday"}
            aria-invalid={errors.variables !== undefined}
            aria-describedby={describedBy("variables", true)}
            onChange={(e) => setVariables(e.target.value)}
          />
          <p id={id("variables-help")} className="help">
            One name=value per line; they fill {"{{name}}"} in the instructions, greeting and voicemail message.
          </p>
          {fieldError("variables")}
        </div>

        <fieldset className="field">
          <legend>When an answering machine picks up</legend>
          <div className="radios">
            {(
              [
                [VoicemailMode.OFF, "No detection"],
                [VoicemailMode.HANG_UP, "Hang up"],
                [VoicemailMode.LEAVE_MESSAGE, "Leave a message"],
              ] as const
            ).map(([mode, label]) => (
              <label key={mode} className="radio">
                <input
                  type="radio"
                  name={id("voicemail-mode")}
                  value={mode}
                  checked={voicemailMode === mode}
                  onChange={() => setVoicemailMode(mode)}
                />
                {label}
              </label>
            ))}
          </div>
          <p id={id("voicemail-help")} className="help">
            With detection the agent waits (at most 40 s) until the call is known to be answered by a person, and says
            the greeting itself.
          </p>
          {voicemailMode === VoicemailMode.LEAVE_MESSAGE && (
            <>
              <label htmlFor={id("voicemail")}>Message after the beep</label>
              <textarea
                id={id("voicemail")}
                ref={(el) => {
                  refs.current.voicemail = el;
                }}
                name="voicemail"
                rows={2}
                value={voicemailMessage}
                aria-invalid={errors.voicemail !== undefined}
                aria-describedby={describedBy("voicemail")}
                onChange={(e) => setVoicemailMessage(e.target.value)}
              />
            </>
          )}
          {fieldError("voicemail")}
        </fieldset>

        <div className="field">
          <label htmlFor={id("max_duration")}>Maximum duration (seconds)</label>
          <input
            id={id("max_duration")}
            ref={(el) => {
              refs.current.max_duration = el;
            }}
            name="max_duration"
            type="number"
            inputMode="numeric"
            min={limits.shortestMaxDurationS}
            max={limits.longestMaxDurationS}
            step={1}
            value={maxDuration}
            placeholder="Empty: the server's limit"
            aria-invalid={errors.max_duration !== undefined}
            aria-describedby={describedBy("max_duration")}
            onChange={(e) => setMaxDuration(e.target.value)}
          />
          {fieldError("max_duration")}
        </div>

        <div className="field">
          <label htmlFor={id("webhook_url")}>Webhook URL</label>
          <input
            id={id("webhook_url")}
            ref={(el) => {
              refs.current.webhook_url = el;
            }}
            name="webhook_url"
            type="url"
            value={webhookUrl}
            placeholder="https://example.com/hooks"
            aria-invalid={errors.webhook_url !== undefined}
            aria-describedby={describedBy("webhook_url", true)}
            onChange={(e) => setWebhookUrl(e.target.value)}
          />
          <p id={id("webhook_url-help")} className="help">
            Also receives this call&apos;s status changes and its outcome, signed with the server&apos;s WEBHOOK_SECRET.
          </p>
          {fieldError("webhook_url")}
        </div>
      </details>

      {errors.metadata !== undefined && (
        <p className="field-error" data-testid="error-metadata">
          Metadata: {errors.metadata}
        </p>
      )}
      {errors.form !== undefined && (
        <p className="form-error" role="alert" data-testid="error-form">
          {errors.form}
        </p>
      )}
      {Object.keys(errors).length > 0 && errors.form === undefined && (
        <p className="sr-only" role="alert">
          The call was not placed: please correct the highlighted field.
        </p>
      )}

      <div className="actions">
        <button type="submit" className="primary" disabled={submitting}>
          {submitting ? "Placing call…" : "Place call"}
        </button>
      </div>
    </form>
  );
}

function hasAny(errors: Errors, fields: readonly PlaceCallField[]): boolean {
  return fields.some((f) => errors[f] !== undefined);
}
