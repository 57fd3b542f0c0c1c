// qortex-mcp dashboard: polls the JSON under <base>/api and draws tables and SVG charts.
// No framework and no build step: this file is served as is by the server.
"use strict";

(function () {
  const body = document.body;
  const BASE = body.dataset.base;
  const POLL_S = Number(body.dataset.pollS) || 5;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                  "#ca8a04", "#db2777"];
  const PAGE = 50;
  // ?bucket=SECONDS sets the width of the time buckets of the charts (default 60).
  const BUCKET_S = Math.max(1, Math.min(86400,
    parseInt(new URLSearchParams(location.search).get("bucket") || "60", 10) || 60));
  const state = { offset: 0, sort: "estimate" };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const num = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");

  async function getJSON(path) {
    const response = await fetch(BASE + "/api" + path, { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) {
      const e = data.error || {};
      throw new Error((e.code || response.status) + ": " + (e.message || "request failed"));
    }
    return data;
  }

  // An arm's estimate and 95% interval on a 0..1 axis.
  function intervalBar(low, mean, high) {
    const w = 160, h = 14, x = (v) => 4 + v * (w - 8);
    const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "interval",
                           role: "img", "aria-label": `estimate ${num(mean)} in [${num(low)}, ${num(high)}]` });
    s.append(svg("line", { x1: x(0), x2: x(1), y1: h / 2, y2: h / 2, stroke: "#eef0f3" }));
    s.append(svg("rect", { x: x(low), y: 3, width: Math.max(1, x(high) - x(low)), height: h - 6,
                           fill: "#bfdbfe", rx: 2 }));
    s.append(svg("circle", { cx: x(mean), cy: h / 2, r: 3, fill: "#1d4ed8" }));
    return s;
  }

  function probBar(p) {
    const w = 80, h = 10;
    const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}` });
    s.append(svg("rect", { x: 0, y: 1, width: w, height: h - 2, fill: "#f1f5f9" }));
    s.append(svg("rect", { x: 0, y: 1, width: Math.max(0, p * w), height: h - 2, fill: "#16a34a" }));
    return s;
  }

  // A line chart: series = [{name, points: [[t, y], ...]}], y in [0, yMax].
  function lineChart(title, series, yMax, yLabel) {
    const w = 360, h = 150, l = 34, r = 8, t = 8, b = 20;
    const box = el("div", { class: "chart" }, el("h3", {}, title));
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      box.append(el("p", { class: "muted" }, "no data yet"));
      return box;
    }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const top = yMax || Math.max(1e-9, ...all.map((p) => p[1]));
    const X = (v) => l + (t1 > t0 ? (v - t0) / (t1 - t0) : 0.5) * (w - l - r);
    const Y = (v) => t + (1 - v / top) * (h - t - b);
    const s = svg("svg", { width: "100%", viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title });
    for (const f of [0, 0.5, 1]) {
      s.append(svg("line", { x1: l, x2: w - r, y1: Y(f * top), y2: Y(f * top), stroke: "#eef0f3" }));
      const label = svg("text", { x: l - 4, y: Y(f * top) + 3, "text-anchor": "end" });
      const v = f * top;
      label.textContent = yLabel === "%" ? Math.round(v * 100) + "%"
        : v >= 100 ? String(Math.round(v)) : String(Number(v.toPrecision(2)));
      s.append(label);
    }
    const span = svg("text", { x: w - r, y: h - 4, "text-anchor": "end" });
    span.textContent = new Date(t1 * 1000).toLocaleTimeString();
    s.append(span);
    const legend = el("div", { class: "legend" });
    series.forEach((ser, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = ser.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      if (ser.points.length === 1) {
        s.append(svg("circle", { cx: X(ser.points[0][0]), cy: Y(ser.points[0][1]), r: 2.5, fill: color }));
      } else {
        s.append(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 1.5 }));
      }
      const sw = svg("svg", { width: 12, height: 6 });
      sw.append(svg("rect", { x: 0, y: 1, width: 12, height: 4, fill: color }));
      legend.append(el("span", {}, sw, " " + ser.name));
    });
    box.append(s, legend);
    return box;
  }

  function pager(total, onMove) {
    const prev = el("button", { type: "button" }, "‹ previous");
    const next = el("button", { type: "button" }, "next ›");
    prev.disabled = state.offset === 0;
    next.disabled = state.offset + PAGE >= total;
    prev.addEventListener("click", () => onMove(Math.max(0, state.offset - PAGE)));
    next.addEventListener("click", () => onMove(state.offset + PAGE));
    const shown = total ? `${state.offset + 1}–${Math.min(total, state.offset + PAGE)} of ${total}` : "none";
    return el("div", { class: "pager" }, prev, el("span", { class: "muted" }, shown), next);
  }

  function renderLearners(data) {
    const rows = data.learners.map((x) => el("tr", { "data-learner": x.name },
      el("td", {}, el("a", { href: `${BASE}/learners/${encodeURIComponent(x.name)}` }, x.name)),
      el("td", {}, x.strategy), el("td", { class: "num" }, x.arms),
      el("td", { class: "num" }, x.selections),
      el("td", { class: "num", "data-field": "feedback" }, x.feedback),
      el("td", {}, when(x.last_update))));
    const table = el("table", {}, el("thead", {}, el("tr", {},
      ...["learner", "strategy"].map((h) => el("th", {}, h)),
      ...["arms", "selections", "feedback"].map((h) => el("th", { class: "num" }, h)),
      el("th", {}, "last feedback"))), el("tbody", {}, ...rows));
    const out = [el("h1", {}, "Learners"), pager(data.total, (o) => { state.offset = o; refresh(); }),
      data.total ? table : el("p", { class: "muted" }, "No learner yet: qortex_select creates one.")];
    if (data.streams && data.streams.length) {
      out.push(el("h2", {}, "Streams"), el("table", {}, el("thead", {}, el("tr", {},
        el("th", {}, "stream"), el("th", {}, "group"), el("th", { class: "num" }, "lag (messages)"),
        el("th", { class: "num" }, "pending"))), el("tbody", {}, ...data.streams.map((s) =>
        el("tr", { "data-stream": s.stream }, el("td", {}, s.stream), el("td", {}, s.group),
           el("td", { class: "num" }, s.lag === null ? "?" : s.lag), el("td", { class: "num" }, s.pending))))));
    }
    return out;
  }

  function renderLearner(arms, series) {
    const head = [el("h1", {}, arms.learner),
      el("p", {}, `strategy ${arms.strategy} · ${arms.total} arms · ${arms.selections} selections · `,
         el("span", { "data-field": "feedback" }, String(arms.feedback)), " feedback"),
      el("p", { class: "params" }, "parameters " + JSON.stringify(arms.parameters))];
    const sort = el("div", { class: "sort pager" }, el("span", { class: "muted" }, "sort by"),
      ...["estimate", "pulls", "id"].map((k) => {
        const b = el("button", { type: "button", class: k === state.sort ? "on" : "" }, k);
        b.addEventListener("click", () => { state.sort = k; state.offset = 0; refresh(); });
        return b;
      }));
    const rows = arms.arms.map((a) => el("tr", { "data-arm": a.id, "data-pulls": a.pulls },
      el("td", {}, a.id), el("td", { class: "num" }, num(a.estimate)),
      el("td", {}, intervalBar(a.ci_low, a.estimate, a.ci_high)),
      el("td", { class: "num" }, `${num(a.ci_low)} – ${num(a.ci_high)}`),
      el("td", { class: "num", "data-field": "pulls" }, a.pulls),
      el("td", { class: "num" }, pct(a.selection_share)),
      el("td", {}, probBar(a.prob_best), " ", pct(a.prob_best))));
    const table = el("table", {}, el("thead", {}, el("tr", {},
      el("th", {}, "arm"), el("th", { class: "num" }, "estimate"), el("th", {}, "95% credible interval"),
      el("th", { class: "num" }, "interval"), el("th", { class: "num" }, "pulls"),
      el("th", { class: "num" }, "selection share"), el("th", {}, "P(best)"))),
      el("tbody", {}, ...rows));
    const b = series.buckets;
    const charts = el("div", { class: "charts" },
      lineChart("Estimate over time (most pulled arms)", series.arms.map((id) => ({
        name: id, points: b.map((x) => [x.t, x.estimates[id]]) })), 1, "%"),
      lineChart("Share of selections (since the dashboard started)", series.arms.map((id) => ({
        name: id, points: series.shares.map((x) => [x.t, x.shares[id] || 0]) })), 1, "%"),
      lineChart("Mean reward per " + series.bucket_s + " s", [{ name: "reward",
        points: b.filter((x) => x.reward !== null).map((x) => [x.t, x.reward]) }], 1, "%"),
      lineChart("Feedback per minute", [{ name: "feedback",
        points: b.map((x) => [x.t, x.feedback * 60 / series.bucket_s]) }], 0, ""));
    return [...head, el("h2", {}, "Arms"), sort, pager(arms.total, (o) => { state.offset = o; refresh(); }),
            table, el("h2", {}, "Over time"), charts];
  }

  const learnerName = (() => {
    const m = location.pathname.match(/\/learners\/([^/]+)\/?$/);
    return m ? decodeURIComponent(m[1]) : null;
  })();

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const main = document.getElementById("main");
    try {
      let parts;
      if (learnerName === null) {
        document.getElementById("where").textContent = "learners";
        parts = renderLearners(await getJSON(`/learners?offset=${state.offset}&limit=${PAGE}`));
      } else {
        document.getElementById("where").textContent = learnerName;
        const q = encodeURIComponent(learnerName);
        const [arms, series] = await Promise.all([
          getJSON(`/learners/${q}?offset=${state.offset}&limit=${PAGE}&sort=${state.sort}`),
          getJSON(`/learners/${q}/series?bucket_s=${BUCKET_S}`)]);
        parts = renderLearner(arms, series);
      }
      main.replaceChildren(...parts);
      document.getElementById("updated").textContent = new Date().toLocaleTimeString();
      document.getElementById("problem").textContent = "";
      body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
    } catch (err) {
      document.getElementById("problem").textContent = String(err.message || err);
    }
    timer = setTimeout(refresh, POLL_S * 1000);
  }

  document.getElementById("interval").textContent = String(POLL_S);
  refresh();
})();
