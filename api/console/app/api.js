// The console's client of doppel's API: REST calls with the tab's key, and one WebSocket
// change stream shared by every page (opened with a single-use ticket, reconnected on loss).

const KEY = "doppel.key";

/** The key of this tab (sessionStorage: gone when the tab closes, never in a URL). */
export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API answer that is not a success: `status`, `code`, `message`, `details`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.details = body?.details;
  }
}

/**
 * Calls the API: `{body, etag}` on success, throws ApiError otherwise. `opts.body` is sent as
 * JSON, `opts.headers` are added, `opts.text` reads the answer as text.
 */
export async function call(method, path, opts = {}) {
  const headers = { Authorization: `Bearer ${session.key()}`, ...(opts.headers || {}) };
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  const response = await fetch(path, { method, headers, body, cache: "no-store" });
  const etag = response.headers.get("ETag");
  if (response.status === 204) return { body: null, etag };
  const text = await response.text();
  let parsed = text;
  if (!opts.text) {
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = { message: text }; }
  }
  if (!response.ok) throw new ApiError(response.status, typeof parsed === "object" ? parsed : { message: parsed });
  return { body: parsed, etag };
}

export const get = (path, opts) => call("GET", path, opts).then((r) => r.body);

/** A query string from the defined values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * The change stream. Pages `subscribe(spec, onFrame)` and get back a function that ends the
 * subscription; frames (`snapshot`, `change`, `resync`, `event`, `error`) for it go to
 * `onFrame`. Subscriptions are sent again after a reconnect. `onStatus` hears
 * `{connected, subscriptions, things}` whenever that changes.
 */
export class Stream {
  constructor(onStatus) {
    this.subs = new Map();
    this.next = 1;
    this.ws = null;
    this.connected = false;
    this.closed = false;
    this.retry = 500;
    this.onStatus = onStatus;
    this.open();
  }

  async open() {
    if (this.closed) return;
    try {
      const { body } = await call("POST", "/v1/ws/ticket");
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?ticket=${encodeURIComponent(body.ticket)}`);
      this.ws = ws;
      ws.onopen = () => {
        this.connected = true;
        this.retry = 500;
        for (const [id, sub] of this.subs) this.send({ type: "subscribe", id, ...sub.spec });
        this.status();
      };
      ws.onmessage = (m) => {
        let frame;
        try { frame = JSON.parse(m.data); } catch { return; }
        const sub = frame.sub !== undefined ? this.subs.get(frame.sub) : this.subs.get(frame.id);
        if (sub) sub.onFrame(frame);
      };
      ws.onclose = () => {
        this.connected = false;
        this.ws = null;
        this.status();
        this.later();
      };
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return; // signed out
      this.later();
    }
  }

  later() {
    if (this.closed) return;
    setTimeout(() => this.open(), this.retry);
    this.retry = Math.min(this.retry * 2, 10000);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  subscribe(spec, onFrame) {
    const id = `s${this.next++}`;
    this.subs.set(id, { spec, onFrame });
    this.send({ type: "subscribe", id, ...spec });
    this.status();
    return () => {
      if (!this.subs.delete(id)) return;
      this.send({ type: "unsubscribe", id });
      this.status();
    };
  }

  status() {
    let things = 0;
    for (const sub of this.subs.values()) things += sub.spec.things ? sub.spec.things.length : 0;
    this.onStatus?.({ connected: this.connected, subscriptions: this.subs.size, things });
  }

  close() {
    this.closed = true;
    this.subs.clear();
    this.ws?.close();
  }
}

/** Applies a change's `changed` part (null deletes) to a document, in place; returns it. */
export function merge(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out = target && typeof target === "object" && !Array.isArray(target) ? target : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = merge(out[k], v);
  }
  return out;
}

/** The update that turns document `from` into `to`: changed keys, and null for removed ones. */
export function diff(from, to) {
  const patch = {};
  const a = from && typeof from === "object" && !Array.isArray(from) ? from : {};
  for (const k of Object.keys(a)) if (!(k in to)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    const old = a[k];
    const objects = v && typeof v === "object" && !Array.isArray(v) && old && typeof old === "object" && !Array.isArray(old);
    if (objects) {
      const inner = diff(old, v);
      if (Object.keys(inner).length) patch[k] = inner;
    } else if (JSON.stringify(old) !== JSON.stringify(v)) {
      patch[k] = v;
    }
  }
  return patch;
}
