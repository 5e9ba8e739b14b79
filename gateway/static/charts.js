// Small SVG charts of our own: horizontal grouped bars, a histogram, line charts and paired
// recalls with intervals. Drawn at the container's width (redrawn when it changes), every label
// a text node, every mark with a <title> and data-* attributes a test (or a person) can read.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}
function title(text) { const t = svg("title"); t.textContent = text; return t; }
function text(x, y, content, attrs = {}) { const t = svg("text", { x, y, ...attrs }); t.textContent = content; return t; }
// A label cut to fit `room` pixels (about 5.6 px a character at 11 px), the whole of it in a <title>.
function fitted(x, y, content, room, attrs = {}) {
  const most = Math.max(3, Math.floor(room / 5.6));
  const t = text(x, y, content.length > most ? content.slice(0, most - 1) + "…" : content, attrs);
  if (content.length > most) t.append(title(content));
  return t;
}

const drawn = new Map();  // container -> draw function, redrawn on resize
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => drawn.forEach((draw, box) => box.isConnected ? draw() : drawn.delete(box)), 150);
});
function mount(container, label, build) {
  const draw = () => {
    const width = Math.max(260, Math.floor(container.clientWidth || 600));
    const [height, parts] = build(width);
    container.replaceChildren(svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": label }, title(label), ...parts));
  };
  drawn.set(container, draw);
  draw();
}
export function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span"), swatch = document.createElement("i");
    swatch.style.background = s.color;
    item.append(swatch, s.name);
    box.append(item);
  }
  return box;
}
function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((m) => m >= value);
}

// rows: [{label, values: [n per series]}]; series: [{name, color}]. One row per label.
export function groupedBars(container, label, rows, series, format = String) {
  mount(container, label, (width) => {
    const labelW = Math.min(170, Math.floor(width * 0.36)), valueW = 44, barH = 11, gap = 8;
    const rowH = series.length * barH + gap, plotW = width - labelW - valueW - 8;
    const max = niceMax(Math.max(1, ...rows.flatMap((r) => r.values)));
    const parts = [];
    rows.forEach((row, i) => {
      const y0 = 6 + i * rowH;
      parts.push(fitted(labelW - 6, y0 + (series.length * barH) / 2 + 4, row.label, labelW - 8, { "text-anchor": "end" }));
      row.values.forEach((value, j) => {
        const y = y0 + j * barH, w = (plotW * value) / max;
        parts.push(svg("rect", { x: labelW, y, width: Math.max(value ? 1 : 0, w), height: barH - 2, fill: series[j].color,
          "data-label": row.raw || row.label, "data-series": series[j].name, "data-value": value },
        title(`${row.label}, ${series[j].name}: ${format(value)}`)));
        parts.push(text(labelW + w + 4, y + barH - 3, format(value), { "font-size": 10 }));
      });
    });
    parts.push(svg("line", { class: "axis", x1: labelW, x2: labelW, y1: 2, y2: 6 + rows.length * rowH - gap + 2 }));
    return [10 + rows.length * rowH, parts];
  });
}

// bins: [{label, value}]: a histogram, one vertical bar a bin.
export function histogram(container, label, bins, color) {
  mount(container, label, (width) => {
    const left = 34, bottom = 34, top = 14, height = 170, plotW = width - left - 6, plotH = height - bottom - top;
    const max = niceMax(Math.max(1, ...bins.map((b) => b.value)));
    const step = plotW / bins.length, parts = [];
    const crowded = bins.some((b) => b.label.length * 5.4 > step - 4);  // then every other label a line lower
    for (const tick of [0, max / 2, max]) {
      const y = top + plotH - (plotH * tick) / max;
      parts.push(svg("line", { class: "gridline", x1: left, x2: width - 6, y1: y, y2: y }),
        text(left - 4, y + 4, String(Math.round(tick)), { "text-anchor": "end", "font-size": 10 }));
    }
    bins.forEach((bin, i) => {
      const h = (plotH * bin.value) / max, x = left + i * step + 2;
      parts.push(svg("rect", { x, y: top + plotH - h, width: Math.max(1, step - 4), height: h, fill: color,
        "data-label": bin.label, "data-value": bin.value }, title(`${bin.label}: ${bin.value}`)));
      if (bin.value) parts.push(text(x + (step - 4) / 2, top + plotH - h - 3, String(bin.value), { "text-anchor": "middle", "font-size": 10 }));
      parts.push(text(x + (step - 4) / 2, top + plotH + 14 + (i % 2 && crowded ? 12 : 0), bin.label,
        { "text-anchor": "middle", "font-size": 10 }));
    });
    parts.push(svg("line", { class: "axis", x1: left, x2: width - 6, y1: top + plotH, y2: top + plotH }));
    return [height, parts];
  });
}

// series: [{name, color, points: [[x, y]]}]: lines over x from 1 to xMax.
export function lines(container, label, series, { xMax, yMin = 0, yMax = null, format = (v) => v.toFixed(2) }) {
  mount(container, label, (width) => {
    const left = 40, bottom = 24, top = 10, height = 170, plotW = width - left - 10, plotH = height - bottom - top;
    const ys = series.flatMap((s) => s.points.map((p) => p[1]));
    const hi = yMax ?? niceMax(Math.max(0.01, ...ys)), span = hi - yMin || 1, xm = Math.max(2, xMax);
    const X = (x) => left + (plotW * (x - 1)) / (xm - 1), Y = (y) => top + plotH - (plotH * (y - yMin)) / span;
    const parts = [];
    for (const tick of [yMin, yMin + span / 2, hi]) {
      parts.push(svg("line", { class: "gridline", x1: left, x2: width - 10, y1: Y(tick), y2: Y(tick) }),
        text(left - 4, Y(tick) + 4, format(tick), { "text-anchor": "end", "font-size": 10 }));
    }
    parts.push(text(left, height - 6, "epoch 1", { "font-size": 10 }),
      text(width - 10, height - 6, `epoch ${xm}`, { "text-anchor": "end", "font-size": 10 }));
    for (const s of series) {
      if (!s.points.length) continue;
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      parts.push(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name,
        "data-points": s.points.length }, title(`${s.name}: ${s.points.length} epochs`)));
      const [lx, ly] = s.points[s.points.length - 1];
      parts.push(svg("circle", { cx: X(lx), cy: Y(ly), r: 3, fill: s.color }, title(`${s.name} at epoch ${lx}: ${format(ly)}`)));
    }
    parts.push(svg("line", { class: "axis", x1: left, x2: width - 10, y1: top + plotH, y2: top + plotH }));
    return [height, parts];
  });
}

// rows: [{label, current, candidate, change: {difference, low, high} | null, judgement}]: each
// class's held-out recall, current beside candidate, and the candidate - current difference
// with its interval around zero.
export function recallPairs(container, label, rows) {
  mount(container, label, (width) => {
    const labelW = Math.min(150, Math.floor(width * 0.3)), barH = 9, rowH = 2 * barH + 10;
    const barsW = Math.floor((width - labelW) * 0.55) - 10, diffX = labelW + barsW + 16, diffW = width - diffX - 6;
    const reach = Math.max(0.1, ...rows.flatMap((r) => r.change ? [Math.abs(r.change.low), Math.abs(r.change.high)] : []));
    const D = (d) => diffX + diffW / 2 + (diffW / 2) * (d / reach);
    const parts = [text(labelW, 10, "recall: current / candidate", { "font-size": 10 }),
      text(diffX + diffW / 2, 10, "change [interval]", { "text-anchor": "middle", "font-size": 10 })];
    rows.forEach((row, i) => {
      const y0 = 18 + i * rowH;
      parts.push(fitted(labelW - 6, y0 + barH + 3, row.label, labelW - 8, { "text-anchor": "end" }));
      [["current", row.current, "#8a96a3"], ["candidate", row.candidate, "#2457c5"]].forEach(([name, value, color], j) => {
        const y = y0 + j * barH;
        if (value === null || value === undefined) {
          parts.push(text(labelW + 2, y + barH - 1, `${name}: –`, { "font-size": 9 }));
          return;
        }
        parts.push(svg("rect", { x: labelW, y, width: Math.max(1, barsW * value), height: barH - 1, fill: color,
          "data-label": row.raw || row.label, "data-series": name, "data-value": value },
        title(`${row.label} ${name} recall ${(100 * value).toFixed(1)}%`)),
        text(labelW + barsW * value + 3, y + barH - 1, `${(100 * value).toFixed(0)}%`, { "font-size": 9 }));
      });
      if (row.change) {
        const c = row.change, y = y0 + barH;
        parts.push(svg("line", { x1: D(c.low), x2: D(c.high), y1: y, y2: y, stroke: "#1d2733", "stroke-width": 1.5 }),
          svg("circle", { cx: D(c.difference), cy: y, r: 3.5, fill: row.judgement === "worse" ? "#a3361f" : "#1d2733" },
            title(`${row.label}: ${(100 * c.difference).toFixed(1)} points [${(100 * c.low).toFixed(1)}, ${(100 * c.high).toFixed(1)}], ${row.judgement}`)));
      }
    });
    const bottom = 18 + rows.length * rowH;
    parts.push(svg("line", { class: "axis", x1: D(0), x2: D(0), y1: 14, y2: bottom }),
      text(D(-reach), bottom + 10, `${(-100 * reach).toFixed(0)}`, { "font-size": 9 }),
      text(D(reach), bottom + 10, `+${(100 * reach).toFixed(0)} pts`, { "text-anchor": "end", "font-size": 9 }));
    return [bottom + 14, parts];
  });
}
