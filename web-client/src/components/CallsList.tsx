// Past and current calls from ListCalls, newest first, a page at a time.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { useCallback, useEffect, useId, useRef, useState } from "react";
import { type Backend, type Call, CallStatus } from "@voice-agent/client";
import { formatDateTime } from "../hooks";
import { backendLabel, isTerminal, statusLabel } from "../model/labels";
import { describeError } from "../model/rpcErrors";
import type { VoiceAgentClient } from "../rpc/client";

/** Props of CallsList. */
export interface CallsListProps {
  readonly client: VoiceAgentClient;
  /** Changing it reloads the first page (after a call was placed or ended, or the token changed). */
  readonly refreshKey: number;
  readonly selectedId: string | undefined;
  readonly onOpen: (callId: string) => void;
  readonly onRpcError: (err: unknown) => void;
  /** Reports the calls shown, so the app can tell when any of them is emulated. */
  readonly onCalls?: (calls: readonly Call[]) => void;
  readonly pageSize?: number;
  /** Newer statuses known from a call being watched, by call id (the page may be older). */
  readonly liveStatuses?: ReadonlyMap<string, CallStatus>;
  /** The server's display names of its backends (GetServerInfo), preferred to this build's. */
  readonly backendNames?: ReadonlyMap<Backend, string>;
}

/** List of calls with "Load more" paging. */
export function CallsList({
  client,
  refreshKey,
  selectedId,
  onOpen,
  onRpcError,
  onCalls,
  pageSize = 20,
  liveStatuses,
  backendNames,
}: CallsListProps) {
  const uid = useId();
  const [calls, setCalls] = useState<Call[]>([]);
  const [nextToken, setNextToken] = useState("");
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const [manualRefresh, setManualRefresh] = useState(0);
  const callbacks = useRef({ onRpcError, onCalls });
  callbacks.current = { onRpcError, onCalls };
  // Ignores answers to requests made before the latest refresh.
  const generation = useRef(0);

  const load = useCallback(
    async (token: string, append: boolean): Promise<void> => {
      const gen = append ? generation.current : ++generation.current;
      setLoading(true);
      setError(undefined);
      try {
        const res = await client.listCalls({ pageSize, pageToken: token });
        if (gen !== generation.current) return;
        setCalls((prev) => {
          // Offset-style tokens shift when new calls arrive between pages: drop repeats by id.
          const merged = append ? [...prev] : [];
          const seen = new Set(merged.map((c) => c.callId));
          for (const c of res.calls) if (!seen.has(c.callId)) merged.push(c);
          return merged;
        });
        setNextToken(res.nextPageToken);
      } catch (err) {
        if (gen !== generation.current) return;
        callbacks.current.onRpcError(err);
        setError(describeError(err));
      } finally {
        if (gen === generation.current) setLoading(false);
      }
    },
    [client, pageSize],
  );

  useEffect(() => {
    void load("", false);
  }, [load, refreshKey, manualRefresh]);

  useEffect(() => {
    callbacks.current.onCalls?.(calls);
  }, [calls]);

  const headingId = `${uid}-title`;
  return (
    <section className="card calls-list" aria-labelledby={headingId} aria-busy={loading}>
      <div className="list-head">
        <h2 id={headingId}>Calls</h2>
        <button type="button" className="secondary" onClick={() => setManualRefresh((n) => n + 1)} disabled={loading}>
          Refresh
        </button>
      </div>
      {error !== undefined && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {calls.length === 0 && !loading && error === undefined && <p className="muted">No calls yet.</p>}
      <ul className="calls" data-testid="calls-list">
        {calls.map((c) => {
          const status = liveStatuses?.get(c.callId) ?? c.status;
          return (
            <li key={c.callId}>
              <button
                type="button"
                className={`call-row${c.callId === selectedId ? " call-row--selected" : ""}`}
                aria-current={c.callId === selectedId ? "true" : undefined}
                data-call-id={c.callId}
                onClick={() => onOpen(c.callId)}
              >
                <span className="call-row-main">
                  <span className="call-row-to">{c.to}</span>
                  <span className={`status status--${statusClass(status)}`}>{statusLabel(status)}</span>
                </span>
                <span className="call-row-meta muted small">
                  {formatDateTime(c.createdAt ? timestampDate(c.createdAt) : undefined)} ·{" "}
                  {backendLabel(c.backend, backendNames)}
                  {c.endReason !== "" && <> · {c.endReason}</>}
                  {c.emulated && <span className="tag tag--emulated"> emulated</span>}
                </span>
              </button>
            </li>
          );
        })}
      </ul>
      {nextToken !== "" && (
        <button type="button" className="secondary more" onClick={() => void load(nextToken, true)} disabled={loading}>
          {loading ? "Loading…" : "Load more"}
        </button>
      )}
    </section>
  );
}

function statusClass(status: CallStatus): string {
  if (status === CallStatus.COMPLETED) return "ok";
  if (isTerminal(status)) return "bad";
  return "live";
}
