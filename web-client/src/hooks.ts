// Small React hooks shared by the views.
import { useCallback, useEffect, useState } from "react";

const CALL_HASH = /^#\/calls\/([^/?#]+)$/;

/** Call id from the location hash (`#/calls/<id>`), so a call view can be bookmarked and reloaded. */
export function useHashCallId(): [string | undefined, (id: string | undefined) => void] {
  const read = (): string | undefined => {
    const m = CALL_HASH.exec(window.location.hash);
    return m?.[1] !== undefined ? decodeURIComponent(m[1]) : undefined;
  };
  const [id, setId] = useState<string | undefined>(read);
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
