// Asks for the server's API token after it answered UNAUTHENTICATED; kept for this tab only.
import { type FormEvent, useId, useState } from "react";
import type { AuthSnapshot, AuthStore } from "../rpc/auth";

/** Props of TokenPanel. */
export interface TokenPanelProps {
  readonly auth: AuthStore;
  readonly snapshot: AuthSnapshot;
}

/** The API token field. */
export function TokenPanel({ auth, snapshot }: TokenPanelProps) {
  const uid = useId();
  const [value, setValue] = useState(snapshot.token);
  const [saved, setSaved] = useState(false);
  const onSubmit = (e: FormEvent<HTMLFormElement>): void => {
    e.preventDefault();
    auth.setToken(value);
    setSaved(true);
  };
  const needed = snapshot.lastError !== "";
  return (
    <section className={`card token-panel${needed ? " token-panel--needed" : ""}`} aria-labelledby={`${uid}-title`}>
      <h2 id={`${uid}-title`}>Authentication</h2>
      {needed ? (
        <p role="alert">
          The server requires an API token{snapshot.token !== "" ? " and refused the one given" : ""}:{" "}
          <span className="muted">{snapshot.lastError}</span>
        </p>
      ) : (
        <p className="muted small">Sent as “authorization: Bearer …” with every request from this tab.</p>
      )}
      <form className="token-form" onSubmit={onSubmit}>
        <label htmlFor={`${uid}-token`}>API token</label>
        <input
          id={`${uid}-token`}
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          aria-describedby={`${uid}-help`}
          onChange={(e) => {
            setValue(e.target.value);
            setSaved(false);
          }}
        />
        <button type="submit" className="primary">
          Save token
        </button>
        {snapshot.token !== "" && (
          <button
            type="button"
            className="secondary"
            onClick={() => {
              setValue("");
              auth.setToken("");
            }}
          >
            Forget token
          </button>
        )}
      </form>
      <p id={`${uid}-help`} className="help">
        The server's API_TOKEN. Kept in this tab's session storage only; closing the tab forgets it.
        {saved && !needed && <span role="status"> Saved.</span>}
      </p>
    </section>
  );
}
