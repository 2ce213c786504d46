// The API token (server's API_TOKEN) for this browser tab, and whether the server asked for one.
// Kept in sessionStorage: it survives reloads of the tab but not closing it, and is never shared
// with other tabs or written to disk-backed localStorage.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const STORAGE_KEY = "voiceagent.apiToken";

/** Snapshot read by React through useSyncExternalStore. */
export interface AuthSnapshot {
  readonly token: string;
  /** True once any RPC answered UNAUTHENTICATED (and until a token is saved). */
  readonly required: boolean;
  /** Last UNAUTHENTICATED message, to show why the token was asked for. */
  readonly lastError: string;
  /** Bumped on every token change so views re-run the RPCs that failed. */
  readonly version: number;
}

type Listener = () => void;

/** Observable token store; one per app (tests make their own). */
export class AuthStore {
  private snapshot: AuthSnapshot;
  private readonly listeners = new Set<Listener>();
  private readonly storage: Storage | undefined;

  constructor(storage: Storage | undefined = safeSessionStorage()) {
    this.storage = storage;
    const token = storage?.getItem(STORAGE_KEY) ?? "";
    this.snapshot = { token, required: token !== "", lastError: "", version: 0 };
  }

  /** For useSyncExternalStore. */
  readonly subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** For useSyncExternalStore. */
  readonly getSnapshot = (): AuthSnapshot => this.snapshot;

  /** Current token ("" = none). */
  get token(): string {
    return this.snapshot.token;
  }

  /** Saves (or with "" clears) the token for this tab. */
  setToken(token: string): void {
    const t = token.trim();
    try {
      if (t === "") this.storage?.removeItem(STORAGE_KEY);
      else this.storage?.setItem(STORAGE_KEY, t);
    } catch {
      // Storage can be disabled (private mode, policies); the token still works for this page.
    }
    this.update({
      token: t,
      lastError: "",
      version: this.snapshot.version + 1,
      required: this.snapshot.required || t !== "",
    });
  }

  /** Called when the server said UNAUTHENTICATED: shows the token field. */
  markRequired(message: string): void {
    if (this.snapshot.required && this.snapshot.lastError === message) return;
    this.update({ required: true, lastError: message });
  }

  private update(patch: Partial<AuthSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const l of this.listeners) l();
  }
}

function safeSessionStorage(): Storage | undefined {
  try {
    return typeof window !== "undefined" ? window.sessionStorage : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Adds `authorization: Bearer <token>` to every request when a token is set, and flags the store
 * when the server answers UNAUTHENTICATED (for unary calls and for streams that fail at the start).
 */
export function authInterceptor(store: AuthStore): Interceptor {
  return (next) => async (req) => {
    const token = store.token;
    if (token !== "") req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) store.markRequired(err.rawMessage);
      throw err;
    }
  };
}
