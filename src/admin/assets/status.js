// Pylon's status page: reads /api/status every 2 s and draws it. Nothing is loaded from
// elsewhere and nothing runs inline, so the page works under its strict CSP.
"use strict";

const REFRESH_MS = 2000;
let previous = null; // the last document and when it came, for rates

function token() {
  return sessionStorage.getItem("pylon-admin-token");
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

function draw(doc, at) {
  document.getElementById("version").textContent = doc.version;
  document.getElementById("state").textContent =
    (doc.draining ? "draining" : "serving") + " · pid " + doc.pid + " · up since " + time(doc.started_at);
  document.getElementById("config-path").textContent = doc.config.path;
  document.getElementById("generation").textContent = String(doc.config.generation);
  document.getElementById("loaded-at").textContent = time(doc.config.loaded_at);
  const last = document.getElementById("last-reload");
  const r = doc.config.last_reload;
  if (r) {
    last.textContent = time(r.at) + ": " + r.result + (r.error ? " (" + r.error + ")" : "") +
      (r.not_applied.length ? "; needs an upgrade: " + r.not_applied.join(", ") : "");
    last.className = r.result;
  }
  document.getElementById("connections").textContent =
    doc.connections.open + " open, " + doc.connections.refused + " refused (max " + doc.connections.max + ")";
  document.getElementById("in-flight").textContent = String(doc.requests_in_flight);

  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const before = {};
  if (previous) for (const r of previous.doc.routes) before[r.prefix] = r.counts;
  const body = document.getElementById("routes");
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
    body.append(tr);
  }
  previous = { doc, at };
}

async function refresh() {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  try {
    const res = await fetch("/api/status", { headers, cache: "no-store" });
    if (res.status === 401) {
      document.getElementById("login").hidden = false;
      document.getElementById("state").textContent = "needs the admin token";
      return;
    }
    document.getElementById("login").hidden = true;
    draw(await res.json(), Date.now());
  } catch (e) {
    document.getElementById("state").textContent = "cannot reach the gateway: " + e;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("use-token").addEventListener("click", () => {
    sessionStorage.setItem("pylon-admin-token", document.getElementById("token").value);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
