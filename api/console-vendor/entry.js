// The console's third-party libraries, re-exported from one ES module (bundled by build.sh).
export { render } from "preact";
export { useState, useEffect, useRef, useMemo } from "preact/hooks";
import htm from "htm";
import { h } from "preact";
export const html = htm.bind(h);
export { default as uPlot } from "uplot";
export { EditorView, basicSetup } from "codemirror";
export { EditorState } from "@codemirror/state";
export { StreamLanguage } from "@codemirror/language";
export { linter, lintGutter } from "@codemirror/lint";
