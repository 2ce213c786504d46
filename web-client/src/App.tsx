// The operator page: place a call, follow it live, browse past calls.
import { ConnectError } from "@connectrpc/connect";
import { useCallback, useMemo, useReducer, useState, useSyncExternalStore } from "react";
import { CallsList } from "./components/CallsList";
import { CallView } from "./components/CallView";
import { PlaceCallForm } from "./components/PlaceCallForm";
import { TokenPanel } from "./components/TokenPanel";
import type { Call, CallStatus, PlaceCallResponse } from "@voice-agent/client";
import { useHashCallId, useServerInfo } from "./hooks";
import { isUnauthenticated } from "./model/rpcErrors";
import { backendNames, emulationBanner } from "./model/serverInfo";
import type { BackoffPolicy } from "./model/watch";
import type { AuthStore } from "./rpc/auth";
import type { VoiceAgentClient } from "./rpc/client";

/** Props of App. */
export interface AppProps {
  readonly client: VoiceAgentClient;
  readonly auth: AuthStore;
  /** Shown as "demo mode" (in-memory fake server). */
  readonly demo?: boolean;
  readonly pageSize?: number;
  /** Reconnect backoff of the call view (tests shorten it). */
  readonly watchBackoff?: BackoffPolicy;
}

/** Banner headline when Twilio is emulated; the e2e test and the contract ("the web UI says plainly…") rely on it. */
export { EMULATED_BANNER } from "./model/serverInfo";

/** Root component. */
export function App({ client, auth, demo = false, pageSize, watchBackoff }: AppProps) {
  const authSnap = useSyncExternalStore(auth.subscribe, auth.getSnapshot);
  const [selectedId, selectFromHash] = useHashCallId();
  // Focus moves to the call view only when the user opened it here, not on a page (re)load.
  const [userOpened, setUserOpened] = useState(false);
  const setSelectedId = useCallback(
    (id: string | undefined) => {
      setUserOpened(id !== undefined);
      selectFromHash(id);
    },
    [selectFromHash],
  );
  const [placedTo, setPlacedTo] = useState<{ id: string; to: string } | undefined>(undefined);
  const [emulatedCallIds, setEmulatedCallIds] = useState<ReadonlySet<string>>(new Set());
  const [listKey, bumpList] = useReducer((n: number) => n + 1, 0);
  const [liveStatuses, setLiveStatuses] = useState<ReadonlyMap<string, CallStatus>>(new Map());
  const onStatus = useCallback((callId: string, status: CallStatus) => {
    setLiveStatuses((prev) => (prev.get(callId) === status ? prev : new Map(prev).set(callId, status)));
  }, []);

  const onRpcError = useCallback(
    (err: unknown) => {
      // Streams can fail after the interceptor has let them through; catch those here too.
      if (isUnauthenticated(err)) auth.markRequired(ConnectError.from(err).rawMessage);
    },
    [auth],
  );

  const noteEmulated = useCallback((callId: string, emulated: boolean) => {
    setEmulatedCallIds((prev) => {
      if (prev.has(callId) === emulated) return prev;
      const next = new Set(prev);
      if (emulated) next.add(callId);
      else next.delete(callId);
      return next;
    });
  }, []);

  const onPlaced = useCallback(
    (res: PlaceCallResponse, to: string) => {
      noteEmulated(res.callId, res.emulated);
      setPlacedTo({ id: res.callId, to });
      setSelectedId(res.callId);
      bumpList();
    },
    [noteEmulated, setSelectedId],
  );

  const onCalls = useCallback(
    (calls: readonly Call[]) => {
      for (const c of calls) noteEmulated(c.callId, c.emulated);
    },
    [noteEmulated],
  );

  const onCallRecord = useCallback((call: Call) => noteEmulated(call.callId, call.emulated), [noteEmulated]);

  // Asked on load and again with every new token; until it answers, the banner can only come from
  // the calls seen, and the form lists every backend.
  const serverInfo = useServerInfo(client, authSnap.version, onRpcError);
  const banner = emulationBanner(serverInfo, emulatedCallIds.size > 0);
  const serverBackendNames = useMemo(() => backendNames(serverInfo), [serverInfo]);

  return (
    <div className="app">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <h1>Voice agent</h1>
        <p className="muted">Outbound AI phone calls — operator console</p>
      </header>

      {banner !== undefined && (
        <div
          className="banner banner--emulated"
          role="status"
          data-testid="emulated-banner"
          data-emulated={banner.parts}
        >
          <strong>{banner.headline}.</strong> {banner.detail}
        </div>
      )}
      {demo && (
        <div className="banner banner--demo" role="note">
          Demo mode: this page talks to an in-memory fake server, not to voice-agent.
        </div>
      )}
      {authSnap.required && <TokenPanel auth={auth} snapshot={authSnap} key={authSnap.version} />}

      <main id="main" className="layout">
        <div className="col col--left">
          <PlaceCallForm client={client} onPlaced={onPlaced} onRpcError={onRpcError} serverInfo={serverInfo} />
          <CallsList
            client={client}
            refreshKey={listKey * 1000 + authSnap.version}
            selectedId={selectedId}
            onOpen={setSelectedId}
            onRpcError={onRpcError}
            onCalls={onCalls}
            liveStatuses={liveStatuses}
            backendNames={serverBackendNames}
            {...(pageSize !== undefined ? { pageSize } : {})}
          />
        </div>
        <div className="col col--right">
          {selectedId !== undefined ? (
            <CallView
              // A new token re-runs the RPCs that failed for want of one.
              key={`${selectedId}/${authSnap.version}`}
              client={client}
              callId={selectedId}
              apiToken={authSnap.token}
              {...(placedTo?.id === selectedId ? { to: placedTo.to } : {})}
              onRpcError={onRpcError}
              onCallRecord={onCallRecord}
              onEnded={bumpList}
              onStatus={onStatus}
              {...(watchBackoff !== undefined ? { backoff: watchBackoff } : {})}
              onClose={() => setSelectedId(undefined)}
              focusOnOpen={userOpened}
              backendNames={serverBackendNames}
            />
          ) : (
            <section className="card empty-call" aria-label="Call">
              <h2>No call selected</h2>
              <p className="muted">Place a call, or open one from the list, to follow its conversation here.</p>
            </section>
          )}
        </div>
      </main>
    </div>
  );
}
