// The twin page: a thing's reported, desired and delta state kept live over the stream; desired
// edited with If-Match and a conflict view; named shadows; telemetry charts downsampled to
// their width with live points appended; the twin's alerts, rule trace, certificates,
// connectivity and job executions.
import { html, useState, useEffect, useRef } from "/console/vendor/vendor.js";
import { call, get, query, diff, ApiError } from "./api.js";
import { Chart } from "./chart.js";
import { ago, when, pretty, usePoll, Json, Err } from "./util.js";

const RANGES = [["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 24 * 3600e3], ["7d", 7 * 24 * 3600e3]];
const MAX_CHARTS = 6;

function shadowPath(name, shadow) {
  return `/v1/things/${encodeURIComponent(name)}/shadow${query({ name: shadow })}`;
}

/** Desired state: view, edit with If-Match, and when the shadow moved on meanwhile, a
 * conflict view of theirs against yours. */
function DesiredEditor({ name, shadow, current, canEdit, onSaved }) {
  const [edit, setEdit] = useState(null); // {base: version, baseDesired, text}
  const [conflict, setConflict] = useState(null); // {theirs: shadow document}
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const start = (doc) => {
    setEdit({ base: doc?.version, baseDesired: doc?.state?.desired || {}, text: pretty(doc?.state?.desired || {}) });
    setConflict(null);
    setError(null);
  };
  const save = async (base, baseDesired) => {
    let mine;
    try {
      mine = JSON.parse(edit.text);
    } catch (e) {
      return setError(new Error(`not JSON: ${e.message}`));
    }
    if (!mine || typeof mine !== "object" || Array.isArray(mine)) return setError(new Error("desired must be a JSON object"));
    setBusy(true);
    setError(null);
    try {
      const headers = base !== undefined ? { "If-Match": `"${base}"` } : {};
      await call("PATCH", shadowPath(name, shadow), { body: { state: { desired: diff(baseDesired, mine) } }, headers });
      setEdit(null);
      setConflict(null);
      onSaved();
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) {
        const theirs = await get(shadowPath(name, shadow)).catch(() => null);
        setConflict({ theirs, mine });
      } else {
        setError(e);
      }
    } finally {
      setBusy(false);
    }
  };

  if (!edit) {
    return html`<div>
      <${Json} value=${current?.state?.desired} id="desired" />
      ${canEdit && html`<div class="row" style=${{ marginTop: "8px" }}>
        <button id="edit-desired" onClick=${() => start(current)}>Edit desired</button>
      </div>`}
    </div>`;
  }
  return html`<div>
    <textarea class="json-edit mono" id="desired-editor" spellcheck="false" value=${edit.text}
      onInput=${(e) => setEdit({ ...edit, text: e.target.value })}></textarea>
    <p class="muted">Editing from version ${edit.base ?? "—"}; saved only if the shadow is still at it.</p>
    ${!conflict && html`<div class="row">
      <button class="primary" id="save-desired" disabled=${busy} onClick=${() => save(edit.base, edit.baseDesired)}>Save</button>
      <button id="cancel-desired" onClick=${() => setEdit(null)}>Cancel</button>
    </div>`}
    <${Err} error=${error} />
    ${conflict && html`<div class="panel conflict" id="conflict">
      <h2>Conflict: the shadow changed while you edited</h2>
      <p>It is at version ${conflict.theirs?.version ?? "?"} now; you edited version ${edit.base}.</p>
      <div class="grid two">
        <div><b>Theirs (now)</b><${Json} value=${conflict.theirs?.state?.desired} id="conflict-theirs" /></div>
        <div><b>Yours</b><${Json} value=${conflict.mine} id="conflict-mine" /></div>
      </div>
      <div class="row" style=${{ marginTop: "8px" }}>
        <button id="conflict-reload" onClick=${() => start(conflict.theirs)}>Reload theirs (drop my edit)</button>
        <button class="danger" id="conflict-overwrite" disabled=${busy}
          onClick=${() => save(conflict.theirs?.version, conflict.theirs?.state?.desired || {})}>Overwrite with mine</button>
      </div>
    </div>`}
  </div>`;
}

/** Telemetry charts: one per numeric field, from the history API downsampled to the chart's
 * width, with the live reported values appended. */
function Telemetry({ name, live }) {
  const [range, setRange] = useState(3600e3);
  const [series, setSeries] = useState(null); // field → [[ts, v]]
  const [error, setError] = useState(null);
  const width = useRef(null);
  useEffect(() => {
    const to = Date.now();
    const from = to - range;
    const px = Math.max(200, Math.min(1200, width.current?.clientWidth / 2 || 500));
    const step = Math.max(1, Math.ceil(range / px / 1000));
    get(`/v1/things/${encodeURIComponent(name)}/telemetry${query({ from, to, step: `${step}s`, limit: 10000 })}`).then(
      (r) => {
        const s = {};
        for (const p of r.points || []) {
          for (const [k, v] of Object.entries(p.values)) if (typeof v === "number") (s[k] ||= []).push([p.ts, v]);
        }
        setSeries(s);
        setError(null);
      },
      setError,
    );
  }, [name, range]);
  // Live values: numeric reported fields go on the end of their series.
  useEffect(() => {
    if (!live || !series) return;
    const next = { ...series };
    let changed = false;
    for (const [k, v] of Object.entries(live.values)) {
      if (typeof v !== "number") continue;
      if (!next[k] && Object.keys(next).length >= MAX_CHARTS) continue;
      next[k] = (next[k] || []).concat([[live.ts, v]]);
      changed = true;
    }
    if (changed) setSeries(next);
  }, [live]);
  const fields = series ? Object.keys(series).slice(0, MAX_CHARTS) : [];
  return html`<div class="panel" ref=${width}>
    <div class="row"><h2 style=${{ margin: 0 }}>Telemetry</h2>
      ${RANGES.map(([label, ms]) => html`<button class=${range === ms ? "primary" : ""} onClick=${() => setRange(ms)}>${label}</button>`)}
    </div>
    <${Err} error=${error} />
    ${series && !fields.length && html`<p class="muted">No numeric telemetry in this range.</p>`}
    <div class="charts" id="charts">
      ${fields.map((f) => html`<${Chart} key=${`${f}-${range}`} title=${f} points=${series[f]} span=${range} id=${`chart-${f}`} />`)}
    </div>
  </div>`;
}

function Connectivity({ c }) {
  if (!c) return html`<span class="badge off" id="connectivity">never connected</span>`;
  return html`<span id="connectivity">
    <span class=${"badge " + (c.connected ? "on" : "off")}>${c.connected ? "connected" : "offline"}</span>
    <span class="muted"> since ${when(c.since)}${!c.connected && c.disconnect_reason ? ` · ${c.disconnect_reason}` : ""}</span>
  </span>`;
}

function Lists({ name, me, refresh }) {
  const [alerts, setAlerts] = useState([]);
  const [trace, setTrace] = useState([]);
  const [certs, setCerts] = useState(null);
  const [jobs, setJobs] = useState([]);
  const n = encodeURIComponent(name);
  useEffect(() => {
    get(`/v1/alerts${query({ thing: name, from: Date.now() - 7 * 86400e3, limit: 1000 })}`).then((r) => setAlerts(r.alerts.slice(-20).reverse()), () => {});
    get(`/v1/things/${n}/rules/trace`).then((r) => setTrace(r.evaluations.slice(-15).reverse()), () => {});
    get(`/v1/things/${n}/jobs`).then((r) => setJobs(r.executions), () => {});
    if (me.role === "admin") get(`/v1/things/${n}/certificates`).then((r) => setCerts(r.certificates), () => setCerts(null));
  }, [name, refresh]);
  return html`<div class="grid two">
    <div class="panel"><h2>Alerts</h2>
      ${alerts.length ? html`<table id="twin-alerts"><tr><th>when</th><th>rule</th><th>state</th><th>message</th></tr>
        ${alerts.map((a) => html`<tr><td>${when(a.at)}</td><td>${a.rule}${a.name ? ` · ${a.name}` : ""}</td>
          <td><span class=${"badge " + a.state}>${a.state}</span></td><td>${a.message || ""}</td></tr>`)}</table>`
        : html`<p class="muted">No alerts in the last 7 days.</p>`}
    </div>
    <div class="panel"><h2>Rule trace</h2>
      ${trace.length ? html`<table id="twin-trace"><tr><th>when</th><th>rule</th><th>trigger</th><th>when holds</th><th>phase</th><th>what happened</th></tr>
        ${trace.map((t) => html`<tr><td>${when(t.at)}</td><td>${t.rule}</td><td>${typeof t.trigger === "object" ? JSON.stringify(t.trigger) : t.trigger}</td>
          <td>${t.when === null ? "missing value" : String(t.when)}</td><td class="mono">${t.from}→${t.to}</td><td>${t.note}</td></tr>`)}</table>`
        : html`<p class="muted">No evaluations kept (the twin is not active, or has no rules).</p>`}
    </div>
    <div class="panel"><h2>Job executions</h2>
      ${jobs.length ? html`<table id="twin-jobs"><tr><th>job</th><th>status</th><th>version</th><th>updated</th></tr>
        ${jobs.map((j) => html`<tr><td>${j.jobId}</td><td><span class=${"badge " + (j.status === "FAILED" || j.status === "REJECTED" || j.status === "TIMED_OUT" ? "bad" : "")}>${j.status}</span></td>
          <td>${j.versionNumber}</td><td>${ago(j.updatedAt)}</td></tr>`)}</table>`
        : html`<p class="muted">No job executions.</p>`}
    </div>
    <div class="panel"><h2>Certificates</h2>
      ${certs === null ? html`<p class="muted">${me.role === "admin" ? "None." : "Listed for admin keys."}</p>`
        : certs.length ? html`<table id="twin-certs"><tr><th>id</th><th>status</th><th>expires</th></tr>
          ${certs.map((c) => html`<tr><td class="mono">${c.id.slice(0, 16)}…</td><td>${c.status}</td><td>${when(c.expires)}</td></tr>`)}</table>`
        : html`<p class="muted">No certificates.</p>`}
    </div>
  </div>`;
}

export function Twin({ name, ctx }) {
  const [thing, setThing] = useState(null);
  const [shadow, setShadow] = useState(""); // "" is the classic shadow
  const [doc, setDoc] = useState(undefined); // the shadow document; null: none yet
  const [error, setError] = useState(null);
  const [live, setLive] = useState(null); // the latest live reported values, for the charts
  const [refresh, setRefresh] = useState(0);
  const [shadowInput, setShadowInput] = useState("");
  const fetching = useRef({ busy: false, again: false });
  const shadowRef = useRef(shadow);
  shadowRef.current = shadow;

  const load = async () => {
    const f = fetching.current;
    if (f.busy) return void (f.again = true);
    f.busy = true;
    try {
      setDoc(await get(shadowPath(name, shadowRef.current)));
      setError(null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && e.code !== "thing_not_found") setDoc(null);
      else setError(e);
    } finally {
      f.busy = false;
      if (f.again) {
        f.again = false;
        load();
      }
    }
  };

  useEffect(() => {
    get(`/v1/things/${encodeURIComponent(name)}`).then(setThing, setError);
  }, [name, refresh]);
  useEffect(() => {
    setDoc(undefined);
    load();
  }, [name, shadow]);

  useEffect(
    () =>
      ctx.stream.subscribe({ things: [name] }, (f) => {
        if (f.type === "event") return setRefresh((n) => n + 1);
        if (f.shadow !== shadowRef.current) return;
        if (f.type === "change" || f.type === "resync" || f.type === "snapshot") {
          if (f.type === "change" && f.changed?.reported) setLive({ ts: f.ts || Date.now(), values: f.changed.reported });
          if (f.type !== "snapshot") load();
        }
      }),
    [name],
  );
  usePoll(() => setRefresh((n) => n + 1), 10000, [name]);

  const state = doc?.state || {};
  return html`<div id="twin" data-thing=${name}>
    <div class="panel">
      <div class="row">
        <h1 style=${{ margin: 0, fontSize: "20px" }}>${name}</h1>
        ${thing?.type && html`<span class="badge">${thing.type}</span>`}
        <${Connectivity} c=${thing?.connectivity} />
        <span class="muted">registered ${when(thing?.created_at)}</span>
      </div>
      ${thing && Object.keys(thing.attributes || {}).length > 0 &&
        html`<p class="mono">${Object.entries(thing.attributes).map(([k, v]) => `${k}=${v}`).join("  ")}</p>`}
      <div class="row" style=${{ marginTop: "8px" }}>
        <span class="muted">Shadow:</span>
        <b id="shadow-name">${shadow || "classic"}</b>
        <input id="shadow-input" placeholder="named shadow" value=${shadowInput} onInput=${(e) => setShadowInput(e.target.value)} />
        <button id="open-shadow" onClick=${() => setShadow(shadowInput.trim())}>Open</button>
        ${shadow && html`<button onClick=${() => { setShadow(""); setShadowInput(""); }}>Classic</button>`}
      </div>
    </div>
    <${Err} error=${error} />
    ${doc === null && html`<p class="muted" id="no-shadow">This shadow does not exist yet.</p>`}
    <div class="grid three">
      <div class="panel"><h2>Reported</h2><${Json} value=${state.reported} id="reported" /></div>
      <div class="panel"><h2>Desired</h2>
        <${DesiredEditor} name=${name} shadow=${shadow} current=${doc} canEdit=${ctx.canEdit} onSaved=${load} />
      </div>
      <div class="panel"><h2>Delta</h2><${Json} value=${state.delta} id="delta" /></div>
    </div>
    ${doc && html`<p class="muted" id="shadow-version" data-version=${doc.version}>version ${doc.version} · updated ${when(doc.timestamp * 1000)}</p>`}
    <${Telemetry} name=${name} live=${live} />
    <${Lists} name=${name} me=${ctx.me} refresh=${refresh} />
  </div>`;
}
