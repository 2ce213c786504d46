// The live call view: status timeline, conversation, latencies, duration and hang-up. It follows
// the call with the resumable watcher and renders the pure view model (model/callView.ts).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { useEffect, useId, useReducer, useRef, useState } from "react";
import {
  type Backend,
  type Call,
  type CallEvent,
  CallStatus,
  RecordingState,
  Speaker,
  ToolOutcome,
  type WebhookDelivery,
  WebhookDeliveryState,
  TransferState,
} from "@voice-agent/client";
import { formatDateTime, formatTime, useNow } from "../hooks";
import {
  applyEvent,
  type CallViewModel,
  type ChatEntry,
  EMPTY_CALL_VIEW,
  formatDuration,
  latencySummary,
  markGap,
  talkSeconds,
  toolOutcomeLabel,
  transferByLabel,
  transferStateLabel,
} from "../model/callView";
import { normalizePhone, validateE164 } from "../model/e164";
import { backendLabel, isTerminal, speakerLabel, statusLabel } from "../model/labels";
import { describeError } from "../model/rpcErrors";
import { type BackoffPolicy, type WatchState, watchCallResumable } from "../model/watch";
import { openWatchStream, type VoiceAgentClient } from "../rpc/client";

type Action = { type: "event"; event: CallEvent } | { type: "gap"; from: bigint; to: bigint };

function reduce(model: CallViewModel, action: Action): CallViewModel {
  return action.type === "event" ? applyEvent(model, action.event) : markGap(model, action.from, action.to);
}

/** The steps of the timeline; the last one stands for whichever terminal status ended the call. */
const TIMELINE: readonly CallStatus[] = [
  CallStatus.QUEUED,
  CallStatus.INITIATED,
  CallStatus.RINGING,
  CallStatus.IN_PROGRESS,
];

/** Props of CallView. */
export interface CallViewProps {
  readonly client: VoiceAgentClient;
  readonly callId: string;
  /** Number dialled, known before GetCall answers when the call was just placed here. */
  readonly to?: string;
  readonly onRpcError: (err: unknown) => void;
  /** Reports `emulated` of the call record. */
  readonly onCallRecord?: (call: Call) => void;
  /** The call reached its terminal status (the list refreshes). */
  readonly onEnded?: () => void;
  /** The status shown changed (keeps the list's row current without polling). */
  readonly onStatus?: (callId: string, status: CallStatus) => void;
  readonly onClose?: () => void;
  readonly backoff?: BackoffPolicy;
  /** Move keyboard focus to the view's heading when it opens (the user just placed or picked this call). */
  readonly focusOnOpen?: boolean;
  /** The server's display names of its backends (GetServerInfo), preferred to this build's. */
  readonly backendNames?: ReadonlyMap<Backend, string>;
  /** The API token ("" = none), sent when the recording is fetched. */
  readonly apiToken?: string;
}

/** Live (or replayed) view of one call. */
export function CallView({
  client,
  callId,
  to,
  onRpcError,
  onCallRecord,
  onEnded,
  onStatus,
  onClose,
  backoff,
  focusOnOpen = false,
  backendNames,
  apiToken = "",
}: CallViewProps) {
  const uid = useId();
  const [model, dispatch] = useReducer(reduce, EMPTY_CALL_VIEW);
  const [call, setCall] = useState<Call | undefined>(undefined);
  const [conn, setConn] = useState<WatchState>({ kind: "connecting", attempt: 0 });
  const [fatal, setFatal] = useState<string | undefined>(undefined);
  const [hangUpState, setHangUpState] = useState<"idle" | "pending" | "sent">("idle");
  const [hangUpError, setHangUpError] = useState<string | undefined>(undefined);
  const [transferTo, setTransferTo] = useState("");
  const [transferState, setTransferState] = useState<"idle" | "pending" | "sent">("idle");
  const [transferError, setTransferError] = useState<string | undefined>(undefined);
  // Callbacks change identity on every parent render; the effect below must not restart for that.
  const headingRef = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (focusOnOpen) headingRef.current?.focus();
    // Only when the view opens; later renders must not steal focus.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  const callbacks = useRef({ onRpcError, onCallRecord, onEnded });
  callbacks.current = { onRpcError, onCallRecord, onEnded };

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    const fetchRecord = async (): Promise<void> => {
      try {
        const res = await client.getCall({ callId }, { signal });
        if (signal.aborted || !res.call) return;
        setCall(res.call);
        callbacks.current.onCallRecord?.(res.call);
      } catch (err) {
        if (signal.aborted) return;
        // The watch reports NOT_FOUND / UNAUTHENTICATED itself; a failed record fetch alone only
        // costs the header details, so it is not shown as a failure of the view.
        callbacks.current.onRpcError(err);
      }
    };
    void fetchRecord();
    watchCallResumable(
      openWatchStream(client),
      { callId, signal, ...(backoff !== undefined ? { backoff } : {}) },
      {
        onEvent: (event) => dispatch({ type: "event", event }),
        onGap: (from, to) => dispatch({ type: "gap", from, to }),
        onState: (s) => {
          if (!signal.aborted) setConn(s);
        },
      },
    )
      .then((result) => {
        if (result === "ended") {
          // The record now has end_reason, duration and latency percentiles.
          void fetchRecord();
          callbacks.current.onEnded?.();
        }
      })
      .catch((err: unknown) => {
        if (signal.aborted) return;
        callbacks.current.onRpcError(err);
        setFatal(describeError(err));
      });
    return () => abort.abort();
  }, [client, callId, backoff]);

  // "Refresh" on the webhook deliveries asks GetCall again (they settle after the call ended).
  const [refreshes, setRefreshes] = useState(0);
  useEffect(() => {
    if (refreshes === 0) return;
    const abort = new AbortController();
    client
      .getCall({ callId }, { signal: abort.signal })
      .then((res) => {
        if (!abort.signal.aborted && res.call) setCall(res.call);
      })
      .catch((err: unknown) => {
        if (!abort.signal.aborted) callbacks.current.onRpcError(err);
      });
    return () => abort.abort();
  }, [client, callId, refreshes]);

  // The event log is the live truth; the record (GetCall) fills in before the first event and
  // knows the end of a call whose replay is still arriving.
  const recordEnded = call !== undefined && isTerminal(call.status);
  const status = model.terminal
    ? model.status
    : recordEnded
      ? call.status
      : model.status !== CallStatus.UNSPECIFIED
        ? model.status
        : (call?.status ?? CallStatus.UNSPECIFIED);
  const ended = model.terminal || recordEnded;
  useEffect(() => {
    if (status !== CallStatus.UNSPECIFIED) onStatus?.(callId, status);
  }, [callId, status, onStatus]);
  const answeredAt = model.answeredAt ?? (call?.answeredAt ? timestampDate(call.answeredAt) : undefined);
  const endedAt = model.endedAt ?? (call?.endedAt ? timestampDate(call.endedAt) : undefined);
  const live = !ended && fatal === undefined;
  const now = useNow(live && answeredAt !== undefined);
  const seconds = talkSeconds(answeredAt, ended ? (endedAt ?? answeredAt) : endedAt, now);
  const endReason = model.endReason || call?.endReason || "";
  const summary = latencySummary(model.turns);
  const p50 = summary?.p50 ?? (call?.turnLatencyP50Ms || undefined);
  const p95 = summary?.p95 ?? (call?.turnLatencyP95Ms || undefined);

  const hangUp = async (): Promise<void> => {
    setHangUpState("pending");
    setHangUpError(undefined);
    try {
      const res = await client.hangUpCall({ callId });
      if (res.call) setCall(res.call);
      setHangUpState("sent");
    } catch (err) {
      onRpcError(err);
      setHangUpError(describeError(err));
      setHangUpState("idle");
    }
  };

  // The hand-off to a person: one of the call's targets, or any number typed in.
  const targets = call?.transferTargets ?? [];
  const transferNumber = transferTo || targets[0]?.number || "";
  const transfer = async (): Promise<void> => {
    const invalid = validateE164(normalizePhone(transferNumber));
    if (invalid !== null) {
      setTransferError(invalid);
      return;
    }
    setTransferState("pending");
    setTransferError(undefined);
    try {
      const res = await client.transferCall({ callId, number: normalizePhone(transferNumber) });
      if (res.call) setCall(res.call);
      setTransferState("sent");
    } catch (err) {
      onRpcError(err);
      setTransferError(describeError(err));
      setTransferState("idle");
    }
  };

  const number = call?.to ?? to ?? "";
  const titleId = `${uid}-title`;
  return (
    <section
      className="card call-view"
      aria-labelledby={titleId}
      data-testid="call-view"
      data-call-id={callId}
      data-status={CallStatus[status]}
      data-ended={ended ? "true" : "false"}
    >
      <header className="call-head">
        <div>
          <h2 id={titleId} ref={headingRef} tabIndex={-1}>
            {ended ? "Call" : "Live call"} {number !== "" ? `to ${number}` : ""}
          </h2>
          <p className="muted small">
            <span className="mono">{callId}</span>
            {call && <> · {backendLabel(call.backend, backendNames)}</>}
            {call?.emulated && <span className="tag tag--emulated"> emulated</span>}
          </p>
        </div>
        <div className="call-head-actions">
          <ConnectionBadge state={conn} ended={ended} fatal={fatal} />
          {onClose && (
            <button type="button" className="secondary" onClick={onClose}>
              Close
            </button>
          )}
        </div>
      </header>

      {fatal !== undefined && (
        <p className="form-error" role="alert">
          Cannot follow this call: {fatal}
        </p>
      )}

      <ol className="timeline" aria-label="Call status">
        {TIMELINE.map((s) => {
          const step = model.statusHistory.find((h) => h.status === s);
          const current = status === s && !ended;
          return (
            <li
              key={s}
              className={`step ${step ? "step--done" : ""} ${current ? "step--current" : ""}`}
              aria-current={current ? "step" : undefined}
            >
              <span className="step-label">{statusLabel(s)}</span>
              <span className="step-time">{step ? formatTime(step.time) : "—"}</span>
            </li>
          );
        })}
        <li
          className={`step step--end ${ended ? `step--done step--${status === CallStatus.COMPLETED ? "ok" : "bad"}` : ""}`}
          aria-current={ended ? "step" : undefined}
          data-testid="end-step"
        >
          <span className="step-label">{ended ? statusLabel(status) : "Ended"}</span>
          <span className="step-time">{ended ? formatTime(endedAt) : "—"}</span>
          {ended && endReason !== "" && <span className="step-detail">{endReason}</span>}
        </li>
      </ol>

      <div className="call-facts">
        <dl>
          <div>
            <dt>Status</dt>
            <dd data-testid="status-text">{statusLabel(status)}</dd>
          </div>
          <div>
            <dt>Duration</dt>
            <dd data-testid="duration" aria-live="off">
              {seconds !== undefined ? formatDuration(seconds) : "not answered"}
            </dd>
          </div>
          <div>
            <dt>Placed</dt>
            <dd>{formatDateTime(call?.createdAt ? timestampDate(call.createdAt) : model.firstEventAt)}</dd>
          </div>
          {(model.answeredBy || call?.answeredBy) && (
            <div>
              <dt>Answered by</dt>
              <dd data-testid="answered-by">{model.answeredBy || call?.answeredBy}</dd>
            </div>
          )}
          {p50 !== undefined && (
            <div>
              <dt>Turn latency</dt>
              <dd>
                p50 {p50} ms{p95 !== undefined ? ` · p95 ${p95} ms` : ""}
              </dd>
            </div>
          )}
        </dl>
        {!ended && fatal === undefined && (
          <div className="hangup">
            <button type="button" className="danger" onClick={() => void hangUp()} disabled={hangUpState !== "idle"}>
              {hangUpState === "pending" ? "Hanging up…" : hangUpState === "sent" ? "Hang-up sent" : "Hang up"}
            </button>
            {hangUpError !== undefined && (
              <p className="field-error" role="alert">
                {hangUpError}
              </p>
            )}
          </div>
        )}
        {!ended && fatal === undefined && model.status === CallStatus.IN_PROGRESS && (
          <div className="transfer">
            <label htmlFor={`${uid}-transfer`}>Transfer to</label>
            {targets.length > 0 && (
              <select
                aria-label="Transfer target"
                value={transferNumber}
                onChange={(e) => setTransferTo(e.target.value)}
                disabled={transferState !== "idle"}
              >
                {targets.map((t) => (
                  <option key={t.number} value={t.number}>
                    {t.number} — {t.description}
                  </option>
                ))}
              </select>
            )}
            <input
              id={`${uid}-transfer`}
              type="tel"
              placeholder="+14155551212"
              value={transferNumber}
              onChange={(e) => setTransferTo(e.target.value)}
              disabled={transferState !== "idle"}
            />
            <button type="button" onClick={() => void transfer()} disabled={transferState !== "idle"}>
              {transferState === "pending" ? "Transferring…" : transferState === "sent" ? "Transfer sent" : "Transfer"}
            </button>
            {transferError !== undefined && (
              <p className="field-error" role="alert">
                {transferError}
              </p>
            )}
          </div>
        )}
      </div>

      <div className="call-body">
        <div>
          <RecordingPanel
            url={call?.recordingUrl ?? ""}
            state={model.recording?.state ?? call?.recording?.state ?? RecordingState.UNSPECIFIED}
            error={model.recording?.error || call?.recording?.error || ""}
            apiToken={apiToken}
          />
          <Conversation entries={model.entries} live={live} />
        </div>
        <div>
          <TurnTable turns={model.turns} />
          <WebhooksPanel deliveries={call?.webhooks ?? []} onRefresh={() => setRefreshes((n) => n + 1)} />
        </div>
      </div>
    </section>
  );
}

function ConnectionBadge({ state, ended, fatal }: { state: WatchState; ended: boolean; fatal: string | undefined }) {
  let text: string;
  let cls: string;
  if (fatal !== undefined || state.kind === "failed") {
    text = "Not following";
    cls = "badge--bad";
  } else if (ended || state.kind === "ended") {
    text = "Ended";
    cls = "badge--idle";
  } else if (state.kind === "live") {
    text = "Live";
    cls = "badge--live";
  } else if (state.kind === "retrying") {
    text = `Reconnecting in ${Math.ceil(state.delayMs / 1000)} s (attempt ${state.attempt})`;
    cls = "badge--warn";
  } else {
    text = state.attempt > 0 ? "Reconnecting…" : "Connecting…";
    cls = "badge--warn";
  }
  return (
    <span className={`badge ${cls}`} role="status" title={state.kind === "retrying" ? state.reason : undefined}>
      {text}
    </span>
  );
}

function Conversation({ entries, live }: { entries: readonly ChatEntry[]; live: boolean }) {
  const listRef = useRef<HTMLOListElement>(null);
  const stickToBottom = useRef(true);
  useEffect(() => {
    const el = listRef.current;
    // Follow new lines only when the reader is already at the bottom: never yank them away from
    // something they scrolled up to read.
    if (el && stickToBottom.current) el.scrollTop = el.scrollHeight;
  }, [entries.length]);
  const transcripts = entries.filter((e) => e.kind === "transcript").length;
  return (
    <div className="conversation">
      <h3>
        Conversation <span className="muted small">({transcripts} lines)</span>
      </h3>
      {entries.length === 0 ? (
        <p className="muted">{live ? "Waiting for the conversation to start…" : "Nothing was said on this call."}</p>
      ) : (
        <ol
          ref={listRef}
          className="chat"
          role="log"
          aria-live="polite"
          aria-label="Conversation"
          tabIndex={0}
          onScroll={(e) => {
            const el = e.currentTarget;
            stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          }}
        >
          {entries.map((e) => (
            <ChatLine key={`${e.kind}-${e.sequence}`} entry={e} />
          ))}
        </ol>
      )}
    </div>
  );
}

function ChatLine({ entry }: { entry: ChatEntry }) {
  switch (entry.kind) {
    case "transcript": {
      const side = entry.speaker === Speaker.AGENT ? "agent" : entry.speaker === Speaker.CALLEE ? "callee" : "other";
      return (
        <li
          className={`msg msg--${side}${entry.interrupted ? " msg--interrupted" : ""}`}
          data-testid="transcript-line"
          data-speaker={side}
          data-sequence={entry.sequence.toString()}
        >
          <span className="msg-who">
            {speakerLabel(entry.speaker)}
            <span className="msg-time"> {formatTime(entry.time)}</span>
          </span>
          <span className="msg-text">
            {entry.text}
            {entry.interrupted ? "…" : ""}
          </span>
          {entry.interrupted && (
            <span className="tag tag--interrupted" title="The callee interrupted; this is the part that was played.">
              interrupted
            </span>
          )}
        </li>
      );
    }
    case "dtmf":
      return (
        <li className="sys sys--dtmf" data-testid="dtmf-line">
          Callee pressed <kbd>{entry.digit}</kbd> <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "error":
      return (
        <li className="sys sys--error" data-testid="error-line">
          <strong>Error</strong> <code>{entry.code}</code>: {entry.message}{" "}
          <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "notice":
      return (
        <li className="sys sys--notice" data-testid="notice-line">
          <strong>Notice</strong> <code>{entry.code}</code>: {entry.message}{" "}
          <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "toolCall":
      return (
        <li className="sys sys--tool" data-testid="tool-call-line">
          <strong>Tool call</strong> <code>{entry.name}</code>(<code>{entry.argumentsJson}</code>)
          {entry.answeredByUrl ? " — asking its URL" : " — waiting for SubmitToolResult"}{" "}
          <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "toolResult":
      return (
        <li
          className={entry.outcome === ToolOutcome.ANSWERED ? "sys sys--tool" : "sys sys--error"}
          data-testid="tool-result-line"
        >
          <strong>Tool result</strong> <code>{entry.name}</code> {toolOutcomeLabel(entry.outcome)} after {entry.waitMs}{" "}
          ms{entry.output ? ": " : ""}
          {entry.output && <code>{entry.output}</code>} <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "answered":
      return (
        <li className="sys sys--notice" data-testid="answered-line">
          <strong>Answered by</strong> <code>{entry.answeredBy}</code>: {entry.action}{" "}
          <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "transfer":
      return (
        <li
          className={
            entry.state === TransferState.STARTED || entry.state === TransferState.ANSWERED
              ? "sys sys--notice"
              : "sys sys--error"
          }
          data-testid="transfer-line"
        >
          <strong>Transfer</strong> to <code>{entry.target}</code> {transferStateLabel(entry.state)}{" "}
          {transferByLabel(entry.by)}
          {entry.reason ? `: ${entry.reason}` : ""} <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "migrated":
      return (
        <li className="sys sys--notice" data-testid="migrated-line">
          <strong>Moved</strong> to another bridge after {entry.gapMs} ms (replica{" "}
          <code>{entry.fromReplica || "unknown"}</code> → <code>{entry.toReplica}</code>); the call goes on{" "}
          <span className="msg-time">{formatTime(entry.time)}</span>
        </li>
      );
    case "gap":
      return (
        <li className="sys sys--error">
          Events {entry.from.toString()}–{entry.to.toString()} could not be loaded from the server.
        </li>
      );
  }
}

/** What the recording's state means, for people. */
function recordingLabel(state: RecordingState): string {
  switch (state) {
    case RecordingState.RECORDING:
      return "being recorded";
    case RecordingState.COMPLETE:
      return "complete";
    case RecordingState.FAILED:
      return "stopped early";
    case RecordingState.DELETED:
      return "deleted after the retention period";
    default:
      return "";
  }
}

/**
 * The call's recording, played beside the transcript: left the callee, right the agent as heard.
 * Fetched with the API token (an `<audio src>` cannot send one) and played from a blob: URL.
 */
function RecordingPanel({
  url,
  state,
  error,
  apiToken,
}: {
  url: string;
  state: RecordingState;
  error: string;
  apiToken: string;
}) {
  const [audio, setAudio] = useState<string | undefined>(undefined);
  const [loading, setLoading] = useState(false);
  const [failure, setFailure] = useState<string | undefined>(undefined);
  useEffect(() => {
    return () => {
      if (audio !== undefined) URL.revokeObjectURL(audio);
    };
  }, [audio]);
  if (state === RecordingState.UNSPECIFIED) return null;
  const load = async (): Promise<void> => {
    setLoading(true);
    setFailure(undefined);
    try {
      const res = await fetch(url, apiToken !== "" ? { headers: { authorization: `Bearer ${apiToken}` } } : {});
      if (!res.ok) throw new Error(`the server answered ${res.status}`);
      setAudio(URL.createObjectURL(await res.blob()));
    } catch (err) {
      setFailure(err instanceof Error ? err.message : String(err));
    } finally {
      setLoading(false);
    }
  };
  return (
    <div className="recording" data-testid="recording" data-state={RecordingState[state]}>
      <h3>
        Recording <span className="muted small">({recordingLabel(state)})</span>
      </h3>
      {error !== "" && <p className="field-error">{error}</p>}
      {audio !== undefined ? (
        <audio controls src={audio} data-testid="recording-audio">
          <a href={audio} download>
            Download the recording
          </a>
        </audio>
      ) : (
        url !== "" && (
          <button type="button" className="secondary" onClick={() => void load()} disabled={loading}>
            {loading ? "Loading…" : "Play recording"}
          </button>
        )
      )}
      {url !== "" && <p className="muted small">Left: the callee · right: the agent as the callee heard it.</p>}
      {failure !== undefined && (
        <p className="field-error" role="alert">
          Cannot load the recording: {failure}
        </p>
      )}
    </div>
  );
}

/** A webhook delivery's state, for people. */
function deliveryLabel(state: WebhookDeliveryState): string {
  switch (state) {
    case WebhookDeliveryState.PENDING:
      return "pending";
    case WebhookDeliveryState.DELIVERED:
      return "delivered";
    case WebhookDeliveryState.DEAD:
      return "dead (given up)";
    default:
      return "unknown";
  }
}

/** The call's outcome webhook messages (GetCall's `webhooks`): where each is, and why it failed. */
function WebhooksPanel({ deliveries, onRefresh }: { deliveries: readonly WebhookDelivery[]; onRefresh: () => void }) {
  if (deliveries.length === 0) return null;
  return (
    <div className="webhooks" data-testid="webhooks">
      <h3>
        Webhooks{" "}
        <button type="button" className="secondary small" onClick={onRefresh}>
          Refresh
        </button>
      </h3>
      <table>
        <caption className="sr-only">Outcome webhook deliveries, oldest first</caption>
        <thead>
          <tr>
            <th scope="col">Message</th>
            <th scope="col">Receiver</th>
            <th scope="col">State</th>
            <th scope="col">Attempts</th>
            <th scope="col">Last answer</th>
          </tr>
        </thead>
        <tbody>
          {deliveries.map((d) => (
            <tr
              key={`${d.messageId} ${d.url}`}
              data-testid="webhook-row"
              data-state={WebhookDeliveryState[d.state]}
              className={`webhook webhook--${WebhookDeliveryState[d.state].toLowerCase()}`}
            >
              <td>
                <code>{d.type}</code>
              </td>
              <td className="webhook-url">{d.url}</td>
              <td>
                {deliveryLabel(d.state)}
                {d.state === WebhookDeliveryState.PENDING && d.nextAttemptAt && (
                  <span className="muted small"> · next {formatDateTime(timestampDate(d.nextAttemptAt))}</span>
                )}
              </td>
              <td>{d.attempts}</td>
              <td>
                {d.lastHttpStatus > 0 ? `HTTP ${d.lastHttpStatus}` : "—"}
                {d.lastError !== "" && <span className="field-error small"> {d.lastError}</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function TurnTable({ turns }: { turns: CallViewModel["turns"] }) {
  if (turns.length === 0) return null;
  return (
    <div className="turns">
      <h3>Turn latencies</h3>
      <table>
        <caption className="sr-only">Agent response latency per turn, in milliseconds</caption>
        <thead>
          <tr>
            <th scope="col">Turn</th>
            <th scope="col">First audio sent</th>
            <th scope="col">First audio heard</th>
          </tr>
        </thead>
        <tbody>
          {turns.map((t) => (
            <tr key={t.sequence.toString()} data-testid="turn-row">
              <td>{t.turnIndex + 1}</td>
              <td>{t.firstAudioSentMs} ms</td>
              <td>{t.firstAudioHeardMs > 0 ? `${t.firstAudioHeardMs} ms` : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
