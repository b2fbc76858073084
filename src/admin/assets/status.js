// Pylon's status page: reads /api/status every 2 s, /api/history every 5 s, /api/fleet and
// the policy document (/config), and draws them; with the write token, an editor validates
// and applies a new document. Nothing is loaded from elsewhere and nothing runs inline, so
// the page works under its strict CSP. Charts are drawn on canvas, without a library.
"use strict";

const REFRESH_MS = 2000;
const HISTORY_MS = 5000;
const READ_TOKEN = "pylon-admin-token";
const WRITE_TOKEN = "pylon-admin-write-token";

let previous = null; // the last status document and when it came, for rates
let generation = null; // the config generation last drawn: a new one reloads the policy
let policy = { text: null, etag: null }; // the document in force, as last loaded

function token() {
  // the write token is accepted for reads too
  return sessionStorage.getItem(READ_TOKEN) || sessionStorage.getItem(WRITE_TOKEN);
}

function writeToken() {
  return sessionStorage.getItem(WRITE_TOKEN);
}

function bearer(t) {
  return t ? { Authorization: "Bearer " + t } : {};
}

function $(id) {
  return document.getElementById(id);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function time(unix) {
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function total(counts) {
  if (!counts) return 0;
  return Object.values(counts.requests).reduce((a, b) => a + b, 0);
}

function errors(counts) {
  if (!counts) return 0;
  return (counts.requests["5xx"] || 0) + counts.upstream_errors;
}

function rate(now, before, pick, seconds) {
  if (before === undefined || seconds <= 0) return "–";
  return ((pick(now) - pick(before)) / seconds).toFixed(1);
}

// A read of the admin API with the token; 401 shows the token field. Returns the response,
// or null when there is nothing to draw.
async function read(path) {
  const res = await fetch(path, { headers: bearer(token()), cache: "no-store" });
  if (res.status === 401) {
    $("login").hidden = false;
    $("state").textContent = "needs the admin token";
    return null;
  }
  $("login").hidden = true;
  return res;
}

// ---- status -------------------------------------------------------------------------

function draw(doc, at) {
  $("version").textContent = doc.version;
  $("state").textContent =
    (doc.draining ? "draining" : "serving") + " · pid " + doc.pid + " · up since " + time(doc.started_at);
  $("config-path").textContent = doc.config.path;
  $("generation").textContent = String(doc.config.generation);
  $("loaded-at").textContent = time(doc.config.loaded_at);
  const last = $("last-reload");
  const r = doc.config.last_reload;
  if (r) {
    last.textContent = time(r.at) + ": " + r.result + (r.error ? " (" + r.error + ")" : "") +
      (r.not_applied.length ? "; needs an upgrade: " + r.not_applied.join(", ") : "");
    last.className = r.result;
  }
  $("connections").textContent =
    doc.connections.open + " open, " + doc.connections.refused + " refused (max " + doc.connections.max + ")";
  $("in-flight").textContent = String(doc.requests_in_flight);

  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const before = {};
  if (previous) for (const r of previous.doc.routes) before[r.prefix] = r.counts;
  const body = $("routes");
  body.replaceChildren();
  for (const route of doc.routes) {
    const tr = document.createElement("tr");
    tr.dataset.prefix = route.prefix;
    tr.append(el("td", route.prefix));
    const ups = el("ul");
    for (const u of route.upstreams) {
      const li = el("li");
      li.append(el("span", u.url + " "), el("span", u.healthy ? "healthy" : "unhealthy", u.healthy ? "up" : "down"));
      li.append(el("span", " · w" + u.weight + " · " + u.in_flight + " in flight", "muted"));
      ups.append(li);
    }
    const upsTd = el("td");
    upsTd.append(ups);
    tr.append(upsTd);
    tr.append(el("td", route.auth.map((a) => a.name + " (" + a.type + ")").join(", ") || "–"));
    const limit = route.rate_limit;
    tr.append(el("td", limit ? limit.requests + " / " + limit.window_seconds + " s" : "–"));
    tr.append(el("td", rate(route.counts, before[route.prefix], total, seconds)));
    tr.append(el("td", rate(route.counts, before[route.prefix], errors, seconds)));
    tr.append(el("td", cacheCell(route.cache), route.cache ? "cache" : undefined));
    body.append(tr);
  }
  previous = { doc, at };
  if (doc.config.generation !== generation) {
    const first = generation === null;
    generation = doc.config.generation;
    // the first policy load is the page's own; a later generation means a new document
    if (!first) loadPolicy();
  }
}

async function refresh() {
  try {
    const res = await read("/api/status");
    if (!res) return;
    draw(await res.json(), Date.now());
    await refreshFleet();
  } catch (e) {
    $("state").textContent = "cannot reach the gateway: " + e;
  }
}

// ---- history charts -----------------------------------------------------------------

// Colours here and in status.css (.s-*) are the same.
const CHARTS = [
  { key: "rps", title: "requests/s", unit: "/s", series: [{ name: "rps", label: "requests/s", color: "#0969da", pick: (p) => p.rps }] },
  {
    key: "latency", title: "latency", unit: " ms", series: [
      { name: "p50", label: "p50", color: "#0969da", pick: (p) => p.p50_ms },
      { name: "p99", label: "p99", color: "#bc4c00", pick: (p) => p.p99_ms },
    ],
  },
  {
    key: "errors", title: "errors per step", unit: "", bars: true, series: [
      { name: "c4xx", label: "4xx", color: "#9a6700", pick: (p) => p.c4xx },
      { name: "c5xx", label: "5xx", color: "#cf222e", pick: (p) => p.c5xx },
    ],
  },
];

// The smallest of 1, 2, 2.5, 5 times a power of ten at or above v: the top of an axis.
function niceCeil(v) {
  if (!(v > 0)) return 0;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v * (1 - 1e-9)) return m * e;
  return 10 * e;
}

function num(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return String(Math.round(v * 100) / 100);
}

function drawChart(canvas, chart, points, doc) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320;
  const h = canvas.clientHeight || 110;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const from = doc.now - doc.window_s;
  let max = 0;
  for (const s of chart.series) {
    for (const p of points) {
      const v = s.pick(p);
      if (v !== null && v > max) max = v;
    }
  }
  const top = niceCeil(max) || 1;
  const plotW = w - pad.l - pad.r;
  const x = (t) => pad.l + ((t - from) / doc.window_s) * plotW;
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);

  ctx.strokeStyle = "#d1d9e0";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const v of [0, top / 2, top]) {
    ctx.moveTo(pad.l, Math.round(y(v)) + 0.5);
    ctx.lineTo(w - pad.r, Math.round(y(v)) + 0.5);
  }
  ctx.stroke();
  ctx.fillStyle = "#59636e";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(num(top) + chart.unit, pad.l - 4, y(top) + 4);
  ctx.fillText("0", pad.l - 4, y(0) + 3);
  ctx.textAlign = "left";
  ctx.fillText("−15 min", pad.l, h - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", w - pad.r, h - 4);

  if (chart.bars) {
    // a step's series side by side, on whole pixels, each at least 2 wide to be seen
    const bw = Math.max(Math.floor(((doc.step_s / doc.window_s) * plotW) / chart.series.length), 2);
    const base = Math.round(y(0));
    chart.series.forEach((s, i) => {
      ctx.fillStyle = s.color;
      for (const p of points) {
        const v = s.pick(p);
        if (!(v > 0)) continue;
        const left = Math.round(x(p.t - doc.step_s)) + i * bw;
        const top = Math.min(Math.round(y(v)), base - 1);
        ctx.fillRect(left, top, bw, base - top);
      }
    });
    return max;
  }
  for (const s of chart.series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let down = false;
    let lastT = null;
    for (const p of points) {
      const v = s.pick(p);
      // a step without a value, or a gap in the steps, lifts the pen
      if (v === null || (lastT !== null && p.t - lastT > doc.step_s * 1.5)) down = false;
      lastT = p.t;
      if (v === null) continue;
      if (down) ctx.lineTo(x(p.t), y(v));
      else ctx.moveTo(x(p.t), y(v));
      down = true;
    }
    ctx.stroke();
    // a dot per point, so that a lone point shows too
    for (const p of points) {
      const v = s.pick(p);
      if (v === null) continue;
      ctx.fillRect(Math.round(x(p.t)) - 1, Math.round(y(v)) - 1, 3, 3);
    }
  }
  return max;
}

function routeCharts(prefix) {
  const box = $("charts");
  for (const c of box.children) if (c.dataset.prefix === prefix) return c;
  const block = el("div", undefined, "route-history");
  block.dataset.prefix = prefix;
  block.append(el("h3", prefix));
  const row = el("div", undefined, "charts-row");
  for (const chart of CHARTS) {
    const fig = el("figure", undefined, "chart");
    fig.dataset.chart = chart.key;
    const canvas = el("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", prefix + " " + chart.title);
    const cap = el("figcaption");
    fig.append(canvas, cap);
    row.append(fig);
  }
  block.append(row);
  box.append(block);
  return block;
}

function drawHistory(doc) {
  const seen = new Set();
  let points = 0;
  for (const route of doc.routes) {
    seen.add(route.prefix);
    points = Math.max(points, route.points.length);
    const block = routeCharts(route.prefix);
    const last = route.points[route.points.length - 1];
    for (const fig of block.querySelectorAll("figure.chart")) {
      const chart = CHARTS.find((c) => c.key === fig.dataset.chart);
      const max = drawChart(fig.querySelector("canvas"), chart, route.points, doc);
      fig.dataset.points = String(route.points.length);
      fig.dataset.max = String(max);
      const cap = fig.querySelector("figcaption");
      cap.replaceChildren(el("span", chart.title + ": ", "chart-title"));
      for (const s of chart.series) {
        cap.append(el("span", "■ ", "swatch s-" + s.name));
        cap.append(el("span", s.label + " " + (last ? num(s.pick(last)) + chart.unit : "–") + "  "));
      }
    }
  }
  for (const block of [...$("charts").children]) {
    if (!seen.has(block.dataset.prefix)) block.remove();
  }
  $("history-state").textContent = points
    ? "one point per " + doc.step_s + " s, the last at " + time(doc.now) + "; the values under each chart are the last step's"
    : "no point yet: the first comes one step (" + doc.step_s + " s) after start";
}

async function refreshHistory() {
  try {
    const res = await read("/api/history");
    if (!res || !res.ok) return;
    drawHistory(await res.json());
  } catch (e) {
    $("history-state").textContent = "cannot read the history: " + e;
  }
}

// ---- fleet --------------------------------------------------------------------------

function ago(unix) {
  const s = Math.max(0, Date.now() / 1000 - unix);
  return s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

async function refreshFleet() {
  const res = await read("/api/fleet");
  if (!res) return;
  const summary = $("fleet-summary");
  if (!res.ok) {
    summary.textContent = "no fleet view from this gateway (/api/fleet: " + res.status + ")";
    summary.className = "muted";
    return;
  }
  const doc = await res.json();
  const parts = [doc.fleet ? "fleet " + doc.fleet : "one node, no shared store"];
  if (doc.store) parts.push("store " + doc.store + " (" + (doc.store_state || "unknown") + ")");
  if (doc.document && doc.document.hash) {
    parts.push("document " + doc.document.hash + (doc.document.version != null ? " v" + doc.document.version : ""));
  }
  parts.push(doc.agree ? "all nodes agree" : "nodes disagree");
  summary.textContent = parts.join(" · ");
  summary.className = doc.agree ? "agree" : "disagree";
  summary.dataset.agree = String(doc.agree);
  const body = $("fleet");
  body.replaceChildren();
  for (const n of doc.nodes) {
    const tr = el("tr");
    tr.dataset.name = n.name;
    tr.append(el("td", n.name + (n.self ? " (this node)" : "")));
    tr.append(el("td", n.address || "–"));
    const hash = el("td");
    hash.append(el("code", n.hash || "–"));
    tr.append(hash);
    tr.append(el("td", n.generation != null ? String(n.generation) : "–"));
    tr.append(el("td", n.state, "state-" + n.state));
    tr.append(el("td", n.last_error || "–", n.last_error ? "failure" : undefined));
    tr.append(el("td", n.last_seen ? time(n.last_seen) + " (" + ago(n.last_seen) + ")" : "–"));
    body.append(tr);
  }
}

// ---- the policy document and its editor ---------------------------------------------

function hashOf(etag) {
  return etag ? etag.replace(/^W\//, "").replace(/"/g, "") : "–";
}

async function loadPolicy() {
  try {
    const res = await read("/config");
    if (!res) return;
    if (!res.ok) {
      $("policy").textContent = "the document cannot be read here (/config: " + res.status + ")";
      return;
    }
    const text = await res.text();
    const area = $("document");
    // an editor left as it was loaded follows the document; one being edited is kept
    const untouched = area.value === "" || area.value === policy.text;
    policy = { text, etag: res.headers.get("ETag") };
    $("policy").textContent = text;
    $("config-hash").textContent = hashOf(policy.etag);
    if (untouched) {
      area.value = text;
      number();
    }
  } catch (e) {
    $("policy").textContent = "cannot read the document: " + e;
  }
}

let marks = new Map(); // line number -> messages, from the last Validate or Apply

// The gutter beside the textarea: a number per line, the lines with an error marked.
function number() {
  const lines = $("document").value.split("\n").length;
  const gutter = $("gutter");
  gutter.replaceChildren();
  for (let i = 1; i <= lines; i++) {
    const span = el("span", String(i) + "\n", marks.has(i) ? "bad" : undefined);
    if (marks.has(i)) span.title = marks.get(i).join("\n");
    gutter.append(span);
  }
  gutter.scrollTop = $("document").scrollTop;
}

function selectLine(line) {
  const area = $("document");
  const lines = area.value.split("\n");
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

function result(text, cls) {
  const p = $("editor-result");
  p.textContent = text;
  p.className = cls || "muted";
}

function showErrors(list) {
  marks = new Map();
  const ul = $("editor-errors");
  ul.replaceChildren();
  for (const e of list || []) {
    const parts = [];
    if (e.line) parts.push("line " + e.line);
    if (e.key) parts.push("key " + e.key);
    parts.push(e.message || e.text || "invalid");
    const li = el("li", parts.join(": "), "failure");
    if (e.line) {
      li.dataset.line = String(e.line);
      li.classList.add("jump");
      li.addEventListener("click", () => selectLine(e.line));
      marks.set(e.line, (marks.get(e.line) || []).concat([e.message || e.text]));
    }
    ul.append(li);
  }
  $("document").classList.toggle("invalid", marks.size > 0 || (list || []).length > 0);
  number();
}

// Send the editor's text with the write token; returns the status and the JSON answer.
async function send(method, path, extra) {
  const headers = Object.assign({ "Content-Type": "application/toml; charset=utf-8" }, bearer(writeToken()), extra);
  const res = await fetch(path, { method, headers, body: $("document").value, cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  return { status: res.status, body };
}

// The answers Validate and Apply share: refused, too large, not valid.
function refused(status, body) {
  const message = (body && body.error) || "status " + status;
  if (status === 400) {
    showErrors(body && body.errors);
    result(message, "failure");
  } else if (status === 401) {
    showErrors([]);
    result("the write token was refused: " + message, "failure");
    $("write-login").hidden = false;
  } else {
    showErrors([]);
    result(message, "failure");
  }
}

async function validate() {
  result("validating…");
  try {
    const { status, body } = await send("POST", "/config/validate", {});
    if (status === 200 && body && body.valid) {
      showErrors([]);
      result("valid; its hash would be " + body.hash, "success");
    } else {
      refused(status, body);
    }
  } catch (e) {
    result("cannot reach the gateway: " + e, "failure");
  }
}

async function apply() {
  if (!policy.etag) {
    result("load the document in force first: Apply sends its hash, so as not to overwrite a change unseen", "failure");
    return;
  }
  result("applying…");
  try {
    const { status, body } = await send("PUT", "/config", { "If-Match": policy.etag });
    if (status === 200 && body && body.result === "applied") {
      showErrors([]);
      result("applied: hash " + body.hash + " (was " + body.previous + "), generation " + body.generation, "success");
      $("config-hash").textContent = body.hash;
      policy.text = $("document").value;
      await loadPolicy();
      refresh();
    } else if (status === 200 && body && body.result === "unchanged") {
      showErrors([]);
      result("unchanged: hash " + body.hash + " is already in force", "success");
    } else if (status === 412) {
      showErrors([]);
      result("the document in force changed since it was loaded (now " + (body && body.current) +
        "): Revert to see it, or Apply again to replace it", "failure");
      await loadPolicy();
    } else {
      refused(status, body);
    }
  } catch (e) {
    result("cannot reach the gateway: " + e, "failure");
  }
}

function openEditor() {
  const has = Boolean(writeToken());
  $("editor").hidden = !has;
  $("write-login").hidden = has;
  $("policy").hidden = has;
  if (has && $("document").value === "" && policy.text !== null) {
    $("document").value = policy.text;
  }
  number();
}

document.addEventListener("DOMContentLoaded", () => {
  $("use-token").addEventListener("click", () => {
    sessionStorage.setItem(READ_TOKEN, $("token").value);
    refresh();
    refreshHistory();
    loadPolicy();
  });
  $("use-write-token").addEventListener("click", () => {
    sessionStorage.setItem(WRITE_TOKEN, $("write-token").value);
    $("write-token").value = "";
    openEditor();
    refresh();
    refreshHistory();
    loadPolicy();
  });
  $("forget-write-token").addEventListener("click", () => {
    sessionStorage.removeItem(WRITE_TOKEN);
    result("");
    openEditor();
  });
  $("document").addEventListener("input", number);
  $("document").addEventListener("scroll", () => {
    $("gutter").scrollTop = $("document").scrollTop;
  });
  $("validate").addEventListener("click", validate);
  $("apply").addEventListener("click", apply);
  $("revert").addEventListener("click", () => {
    $("document").value = policy.text || "";
    showErrors([]);
    result("");
  });
  openEditor();
  refresh();
  refreshHistory();
  loadPolicy();
  setInterval(refresh, REFRESH_MS);
  setInterval(refreshHistory, HISTORY_MS);
});

// A cached route's hit ratio (hits, stale and revalidated answers over every answer it
// made from its cache or the upstream) and what it stores; "–" for a route without cache.
function cacheCell(cache) {
  if (!cache) return "–";
  const ratio = cache.hit_ratio == null ? "no answers yet" : (cache.hit_ratio * 100).toFixed(1) + "% hits";
  return ratio + ", " + Math.round(cache.stored_bytes / 1024) + " KiB stored";
}
