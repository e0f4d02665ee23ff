// The rules page: the list of rules and an editor (CodeMirror) that shows the checker's
// diagnostics as you type (line:col markers and hints from /v1/rules/check), runs the
// source's in-language tests, dry-runs the deployed rule against a twin's recorded telemetry,
// deploys and deletes.
import {
  html, useState, useEffect, useRef,
  EditorView, EditorState, StreamLanguage, basicSetup, linter, lintGutter,
} from "/console/vendor/vendor.js";
import { call, get } from "./api.js";
import { when, Err } from "./util.js";

const TEMPLATE = `// A rule for every thing of a device type. The checker runs as you type.
rule hot for type Sensor {
  when exists(telemetry.temp) and telemetry.temp > 30 for 1m
  then { alert Hot severity major "temperature {telemetry.temp}" }
}

test "hot after a minute above 30" {
  at 0s telemetry {temp: 35}
  at 2m expect alert Hot firing
}
`;

/** A message for the next Rules page (a new rule, once deployed, opens at its own address). */
let carried = null;

/** The name of the first rule a source defines. */
const ruleName = (source) => source.match(/^\s*rule\s+([A-Za-z0-9_]+)/m)?.[1] || "";

const KEYWORDS = new Set(("rule test for type thing when clear cooldown then on children set command alert " +
  "emit severity at expect no firing resolved and or not over of event reply report connected " +
  "disconnected timeout true false null").split(" "));
const ROOTS = new Set(["telemetry", "reported", "desired", "device", "job", "child", "children"]);

/** Highlighting of the rule language: comments, strings, durations and numbers, keywords, and
 * the roots of fields (`telemetry.temp`). The checker, not this, decides what is valid. */
const ruleLanguage = StreamLanguage.define({
  token(stream) {
    if (stream.eatSpace()) return null;
    if (stream.match("//")) {
      stream.skipToEnd();
      return "comment";
    }
    if (stream.match(/^"(?:[^"\\]|\\.)*"?/)) return "string";
    if (stream.match(/^\d+(?:\.\d+)?(?:ms|s|m|h|d)\b/)) return "number";
    if (stream.match(/^\d+(?:\.\d+)?/)) return "number";
    const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
    if (word) return KEYWORDS.has(word[0]) ? "keyword" : ROOTS.has(word[0]) ? "variableName.special" : "variableName";
    stream.next();
    return "operator";
  },
});

/** The checker's diagnostics as CodeMirror's: `line`/`column` (from 1) and the span's length. */
function toEditor(doc, diagnostics) {
  return diagnostics.map((d) => {
    const line = doc.line(Math.min(Math.max(d.line, 1), doc.lines));
    const from = Math.min(line.from + Math.max(d.column - 1, 0), line.to);
    const length = Math.max(1, (d.span?.end ?? 0) - (d.span?.start ?? 0));
    const to = Math.min(from + length, doc.length);
    return {
      from,
      to: Math.max(to, Math.min(from + 1, doc.length)),
      severity: d.severity === "error" ? "error" : d.severity === "warning" ? "warning" : "info",
      message: `${d.code}: ${d.message}${d.hint ? `\nhint: ${d.hint}` : ""}`,
    };
  });
}

function Editor({ source, readOnly, onChange, onDiagnostics, viewRef }) {
  const el = useRef(null);
  useEffect(() => {
    const check = async (view) => {
      const text = view.state.doc.toString();
      try {
        const { body } = await call("POST", "/v1/rules/check", { body: { source: text } });
        if (view.state.doc.toString() !== text) return [];
        onDiagnostics(body.diagnostics);
        return toEditor(view.state.doc, body.diagnostics);
      } catch (e) {
        onDiagnostics(null, e);
        return [];
      }
    };
    const view = new EditorView({
      parent: el.current,
      state: EditorState.create({
        doc: source,
        extensions: [
          basicSetup,
          ruleLanguage,
          lintGutter(),
          linter(check, { delay: 300 }),
          EditorState.readOnly.of(readOnly),
          EditorView.editable.of(!readOnly),
          EditorView.updateListener.of((u) => u.docChanged && onChange(u.state.doc.toString())),
        ],
      }),
    });
    // The view, for scripted editing (and the browser tests).
    el.current.cmView = view;
    viewRef.current = view;
    return () => view.destroy();
  }, []);
  return html`<div class="editor" id="rule-editor" ref=${el}></div>`;
}

function Diagnostics({ diagnostics, error, goTo }) {
  if (error) return html`<${Err} error=${error} />`;
  if (!diagnostics) return html`<p class="muted" id="diagnostics">Checking…</p>`;
  const errors = diagnostics.filter((d) => d.severity === "error").length;
  const warnings = diagnostics.length - errors;
  return html`<div id="diagnostics" data-errors=${errors} data-warnings=${warnings}>
    <p class=${errors ? "error" : "ok"}>${errors ? `${errors} error${errors > 1 ? "s" : ""}` : "No errors"}${
      warnings ? `, ${warnings} warning${warnings > 1 ? "s" : ""}` : ""}</p>
    ${diagnostics.map((d) => html`<div class="diag" data-line=${d.line} data-column=${d.column} data-code=${d.code} onClick=${() => goTo(d)}>
      <span class=${d.severity === "error" ? "error" : "muted"}>${d.line}:${d.column} ${d.severity}</span> ${d.message} <code>${d.code}</code>
      ${d.hint && html`<div class="hint">hint: ${d.hint}</div>`}
    </div>`)}
  </div>`;
}

function Tests({ results }) {
  if (!results) return null;
  if (!results.tests.length) return html`<p class="muted" id="test-results">The source has no tests.</p>`;
  return html`<div id="test-results" data-passed=${results.passed}>
    ${results.tests.map((t) => html`<div class=${"test " + (t.passed ? "passed" : "failed")}>
      <b>${t.name}</b>
      ${t.failures.map((f) => html`<div class="error">${f.line}:${f.column} ${f.message}</div>`)}
      ${!t.passed && t.timeline.length > 0 && html`<pre class="json">${t.timeline.join("\n")}</pre>`}
    </div>`)}
  </div>`;
}

function DryRun({ name }) {
  const [thing, setThing] = useState("");
  const [hours, setHours] = useState(1);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const run = async () => {
    setError(null);
    setResult(null);
    try {
      const to = Date.now();
      const { body } = await call("POST", `/v1/rules/${encodeURIComponent(name)}/dry-run`, {
        body: { thing: thing.trim(), from: to - hours * 3600e3, to },
      });
      setResult(body);
    } catch (e) {
      setError(e);
    }
  };
  return html`<div class="panel"><h2>Dry-run the deployed rule</h2>
    <div class="row">
      <input id="dryrun-thing" placeholder="thing" value=${thing} onInput=${(e) => setThing(e.target.value)} />
      <select value=${hours} onChange=${(e) => setHours(Number(e.target.value))}>
        <option value="1">last hour</option><option value="24">last day</option><option value="168">last week</option>
      </select>
      <button id="dryrun" disabled=${!thing.trim()} onClick=${run}>Replay telemetry</button>
    </div>
    <${Err} error=${error} />
    ${result && html`<div id="dryrun-result"><p>${result.samples} samples replayed, ${result.outputs.length} outputs.</p>
      <table>${result.outputs.map((o) => html`<tr><td>${when(o.at)}</td><td>${o.kind}</td><td class="mono">${JSON.stringify(o)}</td></tr>`)}</table></div>`}
  </div>`;
}

export function Rules({ name, ctx }) {
  const [rules, setRules] = useState(null);
  const [listError, setListError] = useState(null);
  const [loaded, setLoaded] = useState(name ? null : { source: TEMPLATE, isNew: true });
  const [text, setText] = useState(null);
  const [diag, setDiag] = useState({ diagnostics: null, error: null });
  const [tests, setTests] = useState(null);
  const [status, setStatus] = useState(() => {
    const message = carried;
    carried = null;
    return message;
  });
  const [error, setError] = useState(null);
  const view = useRef(null);
  const readOnly = !ctx.canEdit;

  const refreshList = () => get("/v1/rules").then((r) => setRules(r.rules), setListError);
  useEffect(() => {
    refreshList();
  }, []);
  useEffect(() => {
    if (!name) return;
    get(`/v1/rules/${encodeURIComponent(name)}`).then((r) => setLoaded({ ...r, isNew: false }), setError);
  }, [name]);

  const source = text ?? loaded?.source ?? "";
  const target = loaded?.isNew ? ruleName(source) : name;
  const goTo = (d) => {
    const v = view.current;
    const line = v.state.doc.line(Math.min(d.line, v.state.doc.lines));
    v.dispatch({ selection: { anchor: Math.min(line.from + d.column - 1, line.to) }, scrollIntoView: true });
    v.focus();
  };
  const runTests = async () => {
    setTests(null);
    setError(null);
    try {
      const { body } = await call("POST", "/v1/rules/check", { body: { source, tests: true } });
      if (!body.ok) setError(new Error("fix the errors before running the tests"));
      setTests(body.tests || null);
    } catch (e) {
      setError(e);
    }
  };
  const deploy = async () => {
    setError(null);
    setStatus(null);
    try {
      await call("PUT", `/v1/rules/${encodeURIComponent(target)}`, { body: { source } });
      const message = `Deployed ${target} at ${new Date().toLocaleTimeString()}.`;
      if (loaded.isNew) {
        carried = message;
        location.hash = `#/rules/${encodeURIComponent(target)}`;
        return;
      }
      setStatus(message);
      setText(null);
      setLoaded({ ...loaded, source });
      refreshList();
    } catch (e) {
      setError(e.details?.diagnostics ? new Error(`${e.message}: ${e.details.diagnostics.map((d) => `${d.line}:${d.column} ${d.message}`).join("; ")}`) : e);
    }
  };
  const remove = async () => {
    if (!confirm(`Delete the rule ${name}?`)) return;
    try {
      await call("DELETE", `/v1/rules/${encodeURIComponent(name)}`);
      location.hash = "#/rules";
      refreshList();
    } catch (e) {
      setError(e);
    }
  };

  return html`<div class="rules" id="rules">
    <div class="panel">
      <h2>Rules</h2>
      ${ctx.canEdit && html`<p><a href="#/rules" id="new-rule">+ New rule</a></p>`}
      <${Err} error=${listError} />
      <ul id="rule-list">
        ${(rules || []).map((r) => html`<li><a href=${`#/rules/${encodeURIComponent(r.name)}`} class=${r.name === name ? "on" : ""}>
          ${r.name} <span class="muted">· ${r.type || r.thing || ""}</span></a></li>`)}
      </ul>
      ${rules && !rules.length && html`<p class="muted">No rules yet.</p>`}
    </div>
    <div>
      <div class="panel">
        <div class="row">
          <h2 class="name">${loaded?.isNew ? "New rule" : name}</h2>
          ${loaded?.isNew && html`<span class="muted">will be deployed as <b id="rule-target">${target || "?"}</b></span>`}
          ${loaded && !loaded.isNew && loaded.updated_by && html`<span class="muted">by ${loaded.updated_by}, ${when(loaded.updated_at)}</span>`}
          ${readOnly && html`<span class="badge">read only</span>`}
        </div>
      </div>
      ${loaded && html`<${Editor} key=${name || "new"} source=${loaded.source} readOnly=${readOnly} viewRef=${view}
        onChange=${setText} onDiagnostics=${(diagnostics, error) => setDiag({ diagnostics, error })} />`}
      <div class="row" style=${{ margin: "10px 0" }}>
        <button id="run-tests" onClick=${runTests}>Run tests</button>
        ${ctx.canEdit && html`<button class="primary" id="deploy" disabled=${!target || diag.diagnostics?.some((d) => d.severity === "error")} onClick=${deploy}>Deploy</button>`}
        ${ctx.canEdit && name && html`<button class="danger" id="delete-rule" onClick=${remove}>Delete</button>`}
        ${text !== null && text !== loaded?.source && html`<span class="muted" id="unsaved">unsaved changes</span>`}
      </div>
      ${status && html`<p class="ok" id="rule-status">${status}</p>`}
      <${Err} error=${error} />
      <div class="grid two">
        <div class="panel"><h2>Diagnostics</h2><${Diagnostics} ...${diag} goTo=${goTo} /></div>
        <div class="panel"><h2>Tests</h2><${Tests} results=${tests} />${!tests && html`<p class="muted">Run the source's tests on a virtual clock.</p>`}</div>
      </div>
      ${name && html`<${DryRun} name=${name} />`}
    </div>
  </div>`;
}
