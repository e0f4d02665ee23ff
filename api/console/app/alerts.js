// The alerts page: what is firing now and the history (firing and resolved), filtered by thing,
// rule, state and severity, kept live by asking for newer entries every few seconds.
import { html, useState, useRef } from "/console/vendor/vendor.js";
import { get, query } from "./api.js";
import { when, usePoll, Err } from "./util.js";

const KEEP = 2000; // entries held by the page
const WINDOW = 24 * 3600e3;

const keyOf = (a) => `${a.thing}\u0000${a.rule}\u0000${a.name || ""}`;
const idOf = (a) => `${a.at}\u0000${keyOf(a)}\u0000${a.state}`;

export function Alerts() {
  const [entries, setEntries] = useState([]);
  const [error, setError] = useState(null);
  const [filters, setFilters] = useState({ thing: "", rule: "", state: "", severity: "" });
  const since = useRef(Date.now() - WINDOW);
  const seen = useRef(new Set());

  // Everything after the newest entry held (oldest first, page by page), appended.
  usePoll(async () => {
    try {
      let cursor;
      const fresh = [];
      for (let page = 0; page < 10; page++) {
        const r = await get(`/v1/alerts${query({ from: since.current, limit: 1000, cursor })}`);
        for (const a of r.alerts) {
          const id = idOf(a);
          if (!seen.current.has(id)) {
            seen.current.add(id);
            fresh.push(a);
          }
        }
        cursor = r.next;
        if (!cursor) break;
      }
      setError(null);
      if (!fresh.length) return;
      since.current = fresh[fresh.length - 1].at;
      setEntries((old) => {
        const all = old.concat(fresh);
        return all.length > KEEP ? all.slice(all.length - KEEP) : all;
      });
    } catch (e) {
      setError(e);
    }
  }, 3000);

  const firing = new Map();
  for (const a of entries) {
    if (a.state === "firing") firing.set(keyOf(a), a);
    else firing.delete(keyOf(a));
  }
  const f = filters;
  const match = (a) =>
    (!f.thing || a.thing.startsWith(f.thing)) &&
    (!f.rule || a.rule.startsWith(f.rule) || (a.name || "").startsWith(f.rule)) &&
    (!f.state || a.state === f.state) &&
    (!f.severity || a.severity === f.severity);
  const now = [...firing.values()].filter(match).reverse();
  const history = entries.filter(match).slice(-500).reverse();
  const set = (k) => (e) => setFilters({ ...filters, [k]: e.target.value });
  const row = (a) => html`<tr data-thing=${a.thing}>
    <td>${when(a.at)}</td><td><a href=${`#/things/${encodeURIComponent(a.thing)}`}>${a.thing}</a></td>
    <td>${a.rule}${a.name ? ` · ${a.name}` : ""}</td><td>${a.severity || ""}</td>
    <td><span class=${"badge " + a.state}>${a.state}</span></td><td>${a.message || ""}</td></tr>`;
  const head = html`<tr><th>when</th><th>thing</th><th>rule · alert</th><th>severity</th><th>state</th><th>message</th></tr>`;
  return html`<div id="alerts">
    <div class="row panel">
      <input placeholder="thing starts with…" value=${f.thing} onInput=${set("thing")} />
      <input placeholder="rule or alert" value=${f.rule} onInput=${set("rule")} />
      <select id="alerts-state" value=${f.state} onChange=${set("state")}><option value="">firing or resolved</option><option>firing</option><option>resolved</option></select>
      <select value=${f.severity} onChange=${set("severity")}><option value="">any severity</option>
        ${["critical", "major", "minor", "warning", "info"].map((s) => html`<option>${s}</option>`)}</select>
      <span class="muted">last 24 hours · live</span>
    </div>
    <${Err} error=${error} />
    <div class="panel"><h2>Firing now (${now.length})</h2>
      ${now.length ? html`<table id="alerts-firing">${head}${now.map(row)}</table>` : html`<p class="muted">Nothing is firing.</p>`}</div>
    <div class="panel"><h2>History</h2>
      ${history.length ? html`<table id="alerts-history">${head}${history.map(row)}</table>` : html`<p class="muted">No alerts.</p>`}</div>
  </div>`;
}
