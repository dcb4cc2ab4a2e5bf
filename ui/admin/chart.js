// Bar charts as inline SVG, built with DOM calls (no markup strings, nothing external). Each
// chart is an image with a label for screen readers and the numbers in a table beside it.
import { h } from "/common/dom.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

// categories: labels along the x axis; series: one or two arrays of numbers (drawn side by
// side); format: how a value is written in its tooltip and the data table.
export function barChart({ label, categories, series, format = String }) {
  const width = 720;
  const height = 220;
  const pad = { top: 12, right: 12, bottom: 36, left: 12 };
  const max = Math.max(1, ...series.flat());
  const slot = categories.length ? (width - pad.left - pad.right) / categories.length : 0;
  const barWidth = Math.max(2, (slot * 0.7) / series.length);
  const plot = height - pad.top - pad.bottom;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, stroke: "#9aa1a8" }));
  categories.forEach((name, i) => {
    series.forEach((values, s) => {
      const value = values[i] || 0;
      const barHeight = (value / max) * plot;
      const x = pad.left + i * slot + slot * 0.15 + s * barWidth;
      chart.append(svg("rect", { class: s ? "bar alt" : "bar", x, y: height - pad.bottom - barHeight, width: barWidth, height: Math.max(0, barHeight) }, svg("title", {}, `${name}: ${format(value)}`)));
    });
    if (categories.length <= 16 || i % Math.ceil(categories.length / 16) === 0) {
      chart.append(svg("text", { x: pad.left + i * slot + slot / 2, y: height - pad.bottom + 16, "text-anchor": "middle" }, name));
    }
  });
  const data = h(
    "details",
    {},
    h("summary", {}, "Show the numbers"),
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, label),
      h("tbody", {}, categories.map((name, i) => h("tr", {}, h("th", { scope: "row" }, name), series.map((values) => h("td", { class: "num" }, format(values[i] || 0)))))),
    ),
  );
  return h("figure", { class: "chart" }, chart, data);
}
