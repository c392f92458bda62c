import { useState, type FormEvent } from "react";
import { Api, ApiError } from "../api/client";
import type { WhoAmI } from "../api/types";

/** Asks for an API key and checks it with the server; the key stays in this tab's session. */
export function SignIn({ onSignedIn }: { onSignedIn: (key: string, who: WhoAmI) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const who = await new Api(key.trim()).whoami();
      onSignedIn(key.trim(), who);
    } catch (e) {
      setError(
        e instanceof ApiError && e.status === 401 ? "This key is not valid." : (e as Error).message,
      );
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="sign-in">
      <form onSubmit={submit} aria-label="Sign in">
        <h1>OMS</h1>
        <p>Sign in with an API key (scripts/run prints one at the first start).</p>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          autoFocus
          value={key}
          onChange={(e) => setKey(e.target.value)}
          aria-invalid={error !== undefined}
          aria-describedby="sign-in-error"
        />
        <p id="sign-in-error" className="field-error" role="alert">
          {error}
        </p>
        <button type="submit" disabled={busy || key.trim() === ""}>
          {busy ? "Checking…" : "Sign in"}
        </button>
        <p className="hint">The key is kept in this browser tab only, until you sign out or close it.</p>
      </form>
    </main>
  );
}
