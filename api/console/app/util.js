// Small helpers the console's pages share: times, JSON, debouncing, polling.
import { html, useEffect, useRef } from "/console/vendor/vendor.js";

export const pretty = (v) => (v === undefined ? "" : JSON.stringify(v, null, 2));

/** "12s ago", "3 min ago", or a date for older times (epoch ms). */
export function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

export const when = (ms) => (ms ? new Date(ms).toLocaleString() : "");

/** A compact one-line view of a document: `a=1 b=on c={…}`. */
export function brief(doc, max = 6) {
  if (!doc || typeof doc !== "object") return "";
  return Object.entries(doc)
    .slice(0, max)
    .map(([k, v]) => `${k}=${v !== null && typeof v === "object" ? "{…}" : String(v)}`)
    .join("  ");
}

/** A function that runs `fn` once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

/** Runs `fn` now and every `ms` while the component is mounted (and the tab visible). */
export function usePoll(fn, ms, deps = []) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let stop = false;
    const tick = () => !stop && !document.hidden && saved.current();
    tick();
    const t = setInterval(tick, ms);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, deps);
}

export const Json = ({ value, id }) => html`<pre class="json" id=${id}>${value === undefined ? "—" : pretty(value)}</pre>`;

export const Err = ({ error }) => (error ? html`<p class="error">${error.message || String(error)}</p>` : null);
