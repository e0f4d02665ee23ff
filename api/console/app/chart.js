// A small time-series chart (uPlot): at most `max` points kept, so appending live values
// never grows the page without bound.
import { html, useEffect, useRef, uPlot } from "/console/vendor/vendor.js";

/**
 * `points`: [[ts ms, value], …] in time order; `live` points are appended as they come. The
 * time axis ends now (or at the last point) and spans `span` ms when given.
 */
export function Chart({ title, points, max = 2000, height = 160, span, id }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(200, el.current.clientWidth || 400);
    const opts = {
      width,
      height,
      legend: { show: false },
      scales: { x: { time: true } },
      series: [{}, { label: title, stroke: "#2f6feb", width: 1.5, points: { show: false } }],
      axes: [{}, { size: 50 }],
    };
    plot.current = new uPlot(opts, [[], []], el.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => {
    const kept = points.length > max ? points.slice(points.length - max) : points;
    plot.current.setData([kept.map((p) => p[0] / 1000), kept.map((p) => p[1])]);
    // The time axis ends now (or at the last point) and spans `span`, or the data (at least a
    // minute): a single point does not make a zero-width axis.
    const hi = Math.max(kept.length ? kept[kept.length - 1][0] : 0, Date.now()) / 1000;
    const lo = span ? hi - span / 1000 : Math.min(kept.length ? kept[0][0] / 1000 : hi, hi - 60);
    plot.current.setScale("x", { min: lo, max: hi });
  }, [points]);
  return html`<div class="chart" id=${id} data-points=${Math.min(points.length, max)}>
    <h3>${title}</h3><div ref=${el}></div>
  </div>`;
}
