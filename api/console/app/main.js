// The console's shell: sign-in, the navigation, the hash router and the shared stream.
import { html, render, useState, useEffect } from "/console/vendor/vendor.js";
import { session, get, Stream, ApiError } from "./api.js";
import { Fleet } from "./fleet.js";
import { Twin } from "./twin.js";
import { Rules } from "./rules.js";
import { Alerts } from "./alerts.js";
import { NodePage } from "./node.js";

function useRoute() {
  const read = () => (location.hash.replace(/^#\/?/, "") || "fleet").split("/").map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

function SignIn({ onIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    session.set(key.trim());
    try {
      onIn(await get("/v1/me"));
    } catch (err) {
      session.clear();
      setError(err instanceof ApiError && err.status === 401 ? "That key is not valid." : err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="panel signin" id="signin" onSubmit=${submit}>
    <h1>doppel</h1>
    <p class="muted">Sign in with an API key. It is kept for this tab only.</p>
    <label for="key">API key</label>
    <input id="key" type="password" autocomplete="off" value=${key} onInput=${(e) => setKey(e.target.value)} autofocus />
    <button class="primary" type="submit" disabled=${busy || !key.trim()}>Sign in</button>
    ${error && html`<p class="error" id="signin-error">${error}</p>`}
  </form>`;
}

const PAGES = [["fleet", "Fleet"], ["rules", "Rules"], ["alerts", "Alerts"], ["node", "Node"]];

function Shell({ me, onOut }) {
  const route = useRoute();
  const [live, setLive] = useState({ connected: false, subscriptions: 0, things: 0 });
  const [stream] = useState(() => new Stream(setLive));
  useEffect(() => () => stream.close(), []);
  const page = route[0] === "things" ? "fleet" : route[0];
  const canEdit = me.role === "operator" || me.role === "admin";
  const ctx = { me, stream, canEdit };
  let body;
  switch (route[0]) {
    case "things": body = html`<${Twin} key=${route[1]} name=${route[1]} ctx=${ctx} />`; break;
    case "rules": body = html`<${Rules} key=${route[1] || ""} name=${route[1]} ctx=${ctx} />`; break;
    case "alerts": body = html`<${Alerts} ctx=${ctx} />`; break;
    case "node": body = html`<${NodePage} ctx=${ctx} />`; break;
    default: body = html`<${Fleet} ctx=${ctx} />`;
  }
  return html`<header class="top">
      <span class="brand">doppel</span>
      <nav>${PAGES.map(([id, label]) => html`<a href="#/${id}" class=${page === id ? "on" : ""}>${label}</a>`)}</nav>
      <span class="who">
        <span id="live" data-connected=${live.connected} data-subscriptions=${live.subscriptions} data-things=${live.things}
          title="live updates: subscriptions and things watched">
          <span class=${"live-dot" + (live.connected ? " on" : "")}></span>
          ${live.subscriptions} sub · ${live.things} things
        </span>
        <span id="whoami" data-role=${me.role}>${me.id} · ${me.role}${me.types ? ` · ${me.types.join(", ")}` : ""}</span>
        <button id="signout" onClick=${onOut}>Sign out</button>
      </span>
    </header>
    <main>${body}</main>`;
}

function App() {
  const [me, setMe] = useState(null);
  const [checked, setChecked] = useState(!session.key());
  useEffect(() => {
    if (!session.key()) return;
    get("/v1/me").then(setMe, () => session.clear()).finally(() => setChecked(true));
  }, []);
  if (!checked) return html`<p class="boot">Loading the console…</p>`;
  if (!me) return html`<${SignIn} onIn=${setMe} />`;
  const out = () => {
    session.clear();
    setMe(null);
  };
  return html`<${Shell} me=${me} onOut=${out} />`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
