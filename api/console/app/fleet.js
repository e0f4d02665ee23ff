// The fleet page: counts by type and connectivity, server-side search, and a virtualised list
// of things paged by cursor. Only the rows on screen are rendered, and one WebSocket
// subscription covers exactly them: it is replaced as the user scrolls, never one per thing.
import { html, useState, useEffect, useRef, useMemo } from "/console/vendor/vendor.js";
import { get, query, merge } from "./api.js";
import { brief, debounce, usePoll, Err } from "./util.js";

const ROW = 34; // px, as --row in style.css
const PAGE = 500; // things per request
const OVERSCAN = 8; // rows rendered beyond each edge of the viewport

function Counts({ summary, filters, setFilters }) {
  if (!summary) return html`<div class="counts muted">Counting…</div>`;
  const pick = (patch) => setFilters({ ...filters, ...patch });
  const types = Object.entries(summary.by_type).sort((a, b) => b[1].things - a[1].things);
  return html`<div class="counts" id="fleet-counts">
    <div class=${"count" + (!filters.type && filters.connected === "" ? " on" : "")} onClick=${() => pick({ type: "", connected: "" })}>
      <b id="count-things" data-value=${summary.things}>${summary.things.toLocaleString()}</b>things</div>
    <div class=${"count" + (filters.connected === "true" ? " on" : "")} onClick=${() => pick({ connected: filters.connected === "true" ? "" : "true" })}>
      <b id="count-connected" data-value=${summary.connected}>${summary.connected.toLocaleString()}</b>connected</div>
    ${types.map(([type, c]) => html`<div class=${"count" + (filters.type === type ? " on" : "")} data-type=${type}
        onClick=${() => type && pick({ type: filters.type === type ? "" : type })}>
      <b>${c.things.toLocaleString()}</b>${type || "no type"} <span class="muted">· ${c.connected} on</span></div>`)}
  </div>`;
}

function Filters({ filters, setFilters, types }) {
  const [draft, setDraft] = useState(filters);
  useEffect(() => setDraft(filters), [filters]);
  const apply = useMemo(() => debounce(setFilters, 250), []);
  const set = (k) => (e) => {
    const next = { ...draft, [k]: e.target.value };
    setDraft(next);
    apply(next);
  };
  return html`<div class="row panel" id="fleet-filters">
    <input id="filter-prefix" placeholder="name starts with…" value=${draft.prefix} onInput=${set("prefix")} />
    <select id="filter-type" value=${draft.type} onChange=${set("type")}>
      <option value="">any type</option>
      ${types.map((t) => html`<option value=${t}>${t}</option>`)}
    </select>
    <input id="filter-attribute" placeholder="attribute key:value" value=${draft.attribute} onInput=${set("attribute")} />
    <select id="filter-connected" value=${draft.connected} onChange=${set("connected")}>
      <option value="">connected or not</option>
      <option value="true">connected</option>
      <option value="false">not connected</option>
    </select>
  </div>`;
}

export function Fleet({ ctx }) {
  const [filters, setFilters] = useState({ prefix: "", type: "", attribute: "", connected: "" });
  const [summary, setSummary] = useState(null);
  const [types, setTypes] = useState([]);
  const [list, setList] = useState({ rows: [], next: undefined, loading: false, error: null, filters: null });
  const [view, setView] = useState({ top: 0, height: 600 });
  const [, setTick] = useState(0);
  const live = useRef(new Map()); // thing → {version, reported}, for the rows watched now
  const box = useRef(null);
  const generation = useRef(0);

  usePoll(() => get("/v1/fleet/summary").then(setSummary, () => {}), 15000);
  useEffect(() => {
    get("/v1/types").then((t) => setTypes(t.types.map((x) => x.name)), () => {});
  }, []);

  const fetchPage = async (cursor, gen, rows) => {
    setList((l) => ({ ...l, loading: true }));
    const q = query({
      limit: PAGE,
      cursor,
      prefix: filters.prefix.trim(),
      type: filters.type,
      attribute: filters.attribute.trim(),
      connected: filters.connected,
    });
    try {
      const page = await get(`/v1/things${q}`);
      if (gen !== generation.current) return;
      setList({ rows: rows.concat(page.things), next: page.next, loading: false, error: null });
    } catch (error) {
      if (gen !== generation.current) return;
      setList({ rows, next: undefined, loading: false, error });
    }
  };

  // A new search starts from the first page, at the top.
  useEffect(() => {
    generation.current += 1;
    if (box.current) box.current.scrollTop = 0;
    setView((v) => ({ ...v, top: 0 }));
    setList({ rows: [], next: undefined, loading: true, error: null });
    fetchPage(undefined, generation.current, []);
  }, [filters]);

  useEffect(() => {
    const measure = () => box.current && setView((v) => ({ ...v, height: box.current.clientHeight }));
    measure();
    addEventListener("resize", measure);
    return () => removeEventListener("resize", measure);
  }, []);

  const frame = useRef(0);
  const onScroll = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => setView((v) => ({ ...v, top: box.current.scrollTop })));
  };

  const { rows, next, loading } = list;
  const first = Math.max(0, Math.floor(view.top / ROW) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((view.top + view.height) / ROW) + OVERSCAN);
  const visible = rows.slice(first, last);

  // Near the end of what is loaded: the next page.
  useEffect(() => {
    if (next && !loading && last > rows.length - 100) fetchPage(next, generation.current, rows);
  }, [last, next, loading, rows.length]);

  // One subscription for the rows on screen, replaced when they change (after scrolling stops
  // for a moment); the live values of other rows are dropped.
  const names = visible.map((r) => r.name);
  const watched = names.join(",");
  useEffect(() => {
    if (!names.length) return;
    let end = null;
    const t = setTimeout(() => {
      const keep = new Set(names);
      for (const k of live.current.keys()) if (!keep.has(k)) live.current.delete(k);
      end = ctx.stream.subscribe({ things: names }, (f) => {
        const known = live.current.get(f.thing) || {};
        if (f.type === "event" && f.rule === "presence") {
          // A session taken over leaves the device connected through its new session.
          if (f.payload?.disconnectReason === "DUPLICATE_CLIENTID") return;
          live.current.set(f.thing, { ...known, connected: f.kind === "connected" });
        } else if (f.shadow !== "") {
          return;
        } else if (f.type === "snapshot" || f.type === "resync") {
          live.current.set(f.thing, { ...known, version: f.version, reported: f.state?.reported || {} });
        } else if (f.type === "change" && !(f.version <= known.version)) {
          const reported = merge(structuredClone(known.reported || {}), f.changed?.reported || {});
          live.current.set(f.thing, { ...known, version: f.version, reported, flash: true });
        } else {
          return;
        }
        setTick((n) => n + 1);
      });
    }, 150);
    return () => {
      clearTimeout(t);
      end?.();
    };
  }, [watched]);

  return html`<div id="fleet">
    <${Counts} summary=${summary} filters=${filters} setFilters=${setFilters} />
    <${Filters} filters=${filters} setFilters=${setFilters} types=${types} />
    <${Err} error=${list.error} />
    <div class="vhead"><span>name</span><span>type</span><span>connectivity</span><span>version</span><span>reported (live)</span></div>
    <div class="vlist" id="fleet-list" ref=${box} onScroll=${onScroll}
      data-loaded=${rows.length} data-more=${next ? "true" : "false"} data-loading=${loading ? "true" : "false"}
      data-rendered=${visible.length}>
      <div class="spacer" style=${{ height: `${rows.length * ROW + (next ? ROW : 0)}px` }}>
        ${visible.map((r, i) => {
          const l = live.current.get(r.name);
          // Connectivity as listed, then as the stream reports it while the row is watched.
          const connected = l?.connected ?? r.connectivity?.connected;
          return html`<div class=${"vrow" + (l?.flash ? " flash" : "")} key=${r.name} data-thing=${r.name}
              style=${{ top: `${(first + i) * ROW}px` }}>
            <a href=${`#/things/${encodeURIComponent(r.name)}`}>${r.name}</a>
            <span>${r.type || html`<span class="muted">—</span>`}</span>
            <span class="conn">${connected === undefined ? html`<span class="muted">never</span>`
              : html`<span class=${"badge " + (connected ? "on" : "off")}>${connected ? "connected" : "offline"}</span>`}</span>
            <span class="mono">${l?.version ?? ""}</span>
            <span class="mono live" title=${l?.reported ? JSON.stringify(l.reported) : ""}>${l?.reported ? brief(l.reported) : ""}</span>
          </div>`;
        })}
        ${next && html`<div class="vrow muted" style=${{ top: `${rows.length * ROW}px` }}>loading more…</div>`}
      </div>
    </div>
    <p class="muted" id="fleet-status">${rows.length.toLocaleString()} loaded${next ? " · scroll for more" : ""}${
      !rows.length && !loading && !list.error ? " · no things match" : ""}</p>
  </div>`;
}

