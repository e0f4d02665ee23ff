// The node page: messages/s, commit latency, connections, twins and memory as small live
// charts scraped from /metrics every two seconds; the cluster's nodes and shard counts.
import { html, useState, useRef } from "/console/vendor/vendor.js";
import { get, call } from "./api.js";
import { Chart } from "./chart.js";
import { when, usePoll, Err } from "./util.js";

const POINTS = 150; // five minutes at one scrape every two seconds

/** Prometheus text → name → [{labels, value}]. */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").slice(1, -1).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const list = out.get(m[1]) || [];
    list.push({ labels, value: Number(m[3]) });
    out.set(m[1], list);
  }
  return out;
}

const sum = (metrics, name, pick = () => true) =>
  (metrics.get(name) || []).filter((s) => pick(s.labels)).reduce((a, s) => a + s.value, 0);

const SERIES = [
  ["msgs", "messages in / s"],
  ["commit_p99", "commit latency p99 (ms)"],
  ["mqtt", "MQTT connections"],
  ["ws", "WebSocket connections"],
  ["twins", "active twins"],
  ["rss", "memory (MiB)"],
];

export function NodePage({ ctx }) {
  const [series, setSeries] = useState(() => Object.fromEntries(SERIES.map(([k]) => [k, []])));
  const [latest, setLatest] = useState({});
  const [error, setError] = useState(null);
  const [cluster, setCluster] = useState(null);
  const last = useRef(null);

  usePoll(async () => {
    try {
      const { body } = await call("GET", "/metrics", { text: true });
      const m = parseMetrics(body);
      const now = Date.now();
      const msgsTotal = sum(m, "doppel_messages_in_total");
      const prev = last.current;
      last.current = { at: now, msgs: msgsTotal };
      const values = {
        msgs: prev ? Math.max(0, (msgsTotal - prev.msgs) / ((now - prev.at) / 1000)) : null,
        commit_p99: sum(m, "doppel_commit_seconds", (l) => l.quantile === "0.99") * 1000,
        mqtt: sum(m, "doppel_mqtt_connections"),
        ws: sum(m, "doppel_ws_connections"),
        twins: sum(m, "doppel_twins_active"),
        rss: sum(m, "doppel_process_resident_memory_bytes") / 1048576,
      };
      setLatest(values);
      setSeries((old) => {
        const next = {};
        for (const [k] of SERIES) {
          const pts = values[k] === null ? old[k] : old[k].concat([[now, values[k]]]);
          next[k] = pts.length > POINTS ? pts.slice(pts.length - POINTS) : pts;
        }
        return next;
      });
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, 2000);
  usePoll(() => {
    if (ctx.me.role === "admin") get("/v1/cluster").then(setCluster, () => {});
  }, 5000);

  const fmt = (v) =>
    v === undefined || v === null ? "—" : Number.isInteger(v) || v >= 100 ? Math.round(v).toLocaleString() : v.toFixed(1);
  return html`<div id="node">
    <${Err} error=${error} />
    <div class="spark">
      ${SERIES.map(([k, label]) => html`<div class="panel" data-series=${k}>
        <div class="muted">${label}</div><div class="stat" id=${`stat-${k}`}>${fmt(latest[k])}</div>
        <${Chart} title="" points=${series[k]} height=${90} max=${POINTS} span=${POINTS * 2000} />
      </div>`)}
    </div>
    <div class="panel" id="cluster"><h2>Cluster</h2>
      ${!cluster ? html`<p class="muted">${ctx.me.role === "admin" ? "Loading…" : "Shown to admin keys."}</p>`
        : !cluster.clustered ? html`<p>This node runs alone and owns every shard.</p>`
        : html`<p>Answered by <b>${cluster.node}</b>; ${cluster.shards.length} shards.</p>
          <table id="cluster-nodes"><tr><th>node</th><th>address</th><th>shards</th><th>started</th><th>lease until</th></tr>
          ${cluster.nodes.map((n) => html`<tr><td>${n.name}</td><td class="mono">${n.addr}</td><td>${n.shards}</td>
            <td>${when(n.started)}</td><td>${when(n.lease_expires)}</td></tr>`)}</table>`}
    </div>
  </div>`;
}
