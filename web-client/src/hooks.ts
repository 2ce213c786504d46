// Small React hooks shared by the views.
import { useCallback, useEffect, useState } from "react";
import { describeError } from "./model/rpcErrors";
import type { ServerInfoState } from "./model/serverInfo";
import type { VoiceAgentClient } from "./rpc/client";

const CALL_HASH = /^#\/calls\/([^/?#]+)$/;
const CALL_PATH = /^\/calls\/([^/?#]+)\/?$/;

/** A deep link in path form (/calls/<id>, which the server answers with index.html) becomes the hash form. */
function adoptPathLink(): void {
  const m = CALL_PATH.exec(window.location.pathname);
  if (m?.[1] !== undefined && window.location.hash === "") {
    window.history.replaceState(null, "", `/${window.location.search}#/calls/${m[1]}`);
  }
}

/** Call id from the location hash (`#/calls/<id>`), so a call view can be bookmarked and reloaded. */
export function useHashCallId(): [string | undefined, (id: string | undefined) => void] {
  const read = (): string | undefined => {
    const m = CALL_HASH.exec(window.location.hash);
    if (m?.[1] === undefined) return undefined;
    try {
      return decodeURIComponent(m[1]);
    } catch {
      // A hand-edited hash with a broken %-escape: show no call rather than crash the page.
      return undefined;
    }
  };
  const [id, setId] = useState<string | undefined>(() => {
    adoptPathLink();
    return read();
  });
  useEffect(() => {
    const onChange = (): void => setId(read());
    window.addEventListener("hashchange", onChange);
    window.addEventListener("popstate", onChange);
    return () => {
      window.removeEventListener("hashchange", onChange);
      window.removeEventListener("popstate", onChange);
    };
  }, []);
  const select = useCallback((next: string | undefined) => {
    const hash = next === undefined ? "" : `#/calls/${encodeURIComponent(next)}`;
    if (window.location.hash !== hash) {
      // pushState keeps Back working without a hashchange round trip; update state directly.
      window.history.pushState(null, "", hash === "" ? window.location.pathname + window.location.search : hash);
    }
    setId(next);
  }, []);
  return [id, select];
}

/** Current time, refreshed every `intervalMs` while `running` (for the ticking call duration). */
export function useNow(running: boolean, intervalMs = 1000): Date {
  const [now, setNow] = useState(() => new Date());
  useEffect(() => {
    setNow(new Date());
    if (!running) return undefined;
    const t = setInterval(() => setNow(new Date()), intervalMs);
    return () => clearInterval(t);
  }, [running, intervalMs]);
  return now;
}

/** Local time of day, e.g. "14:03:27". */
export function formatTime(d: Date | undefined): string {
  return d ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

/** Local date and time, e.g. "26 Nov, 14:03". */
export function formatDateTime(d: Date | undefined): string {
  return d
    ? d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : "—";
}

/**
 * GetServerInfo, asked on mount and again whenever `refreshKey` changes (a new API token). A failure
 * goes to `onError` (which asks for a token on UNAUTHENTICATED) and leaves the state "failed"; a
 * refresh keeps the last answer on screen until the new one arrives.
 */
export function useServerInfo(
  client: VoiceAgentClient,
  refreshKey: number,
  onError: (err: unknown) => void,
): ServerInfoState {
  const [state, setState] = useState<ServerInfoState>({ status: "loading" });
  useEffect(() => {
    const abort = new AbortController();
    setState((prev) => (prev.status === "ready" ? prev : { status: "loading" }));
    client.getServerInfo({}, { signal: abort.signal }).then(
      (info) => {
        if (!abort.signal.aborted) setState({ status: "ready", info });
      },
      (err: unknown) => {
        if (abort.signal.aborted) return;
        onError(err);
        setState({ status: "failed", message: describeError(err) });
      },
    );
    return () => abort.abort();
  }, [client, refreshKey, onError]);
  return state;
}
