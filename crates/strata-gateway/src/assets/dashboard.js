// The landscape page: polls /_strata/api/dashboard every 2 s with the admin token taken
// from the URL's fragment (#token=…, never sent to a server), and renders with textContent
// only — namespaces and tags are data, never markup.
"use strict";

const EVERY_MS = 2000;
const LOW_HIT_RATIO = 0.8; // the seeds' alert threshold

function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("strata-token", fromHash);
    history.replaceState(null, "", location.pathname); // out of sight and history
  }
  return sessionStorage.getItem("strata-token") || "";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function percent(x) {
  return (100 * x).toFixed(1) + " %";
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function renderNamespaces(namespaces) {
  const body = document.querySelector("#namespaces tbody");
  body.replaceChildren();
  for (const n of namespaces) {
    const hits = n.l1_hits + n.l2_hits;
    const row = document.createElement("tr");
    row.dataset.namespace = n.namespace;
    cell(row, n.namespace);
    cell(row, n.reads.toLocaleString("en"));
    cell(row, percent(n.hit_ratio), "hit-ratio");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = (100 * n.hit_ratio).toFixed(1) + "%";
    if (n.hit_ratio < LOW_HIT_RATIO) fill.className = "low";
    bar.appendChild(fill);
    cell(row, "").appendChild(bar);
    // Between the gateway's last two samples of the counters (2 s apart).
    const recent = n.interval;
    cell(row, recent && recent.hit_ratio !== null ? percent(recent.hit_ratio) : "—");
    cell(row, recent ? Math.round(recent.reads_per_s).toLocaleString("en") : "—");
    cell(row, hits > 0 ? percent(n.l1_hits / hits) : "—");
    cell(row, n.loader_calls.toLocaleString("en"));
    cell(row, n.stale_served.toLocaleString("en"));
    body.appendChild(row);
  }
}

function renderInvalidations(list, now) {
  const ol = document.getElementById("invalidations");
  ol.replaceChildren();
  for (const i of list) {
    const li = document.createElement("li");
    for (const [cls, text] of [
      ["when", ago(now - i.at_ms)],
      ["ns", i.namespace],
      ["what", i.kind === "clear" ? "whole namespace" : i.kind + " " + i.name],
      ["muted", i.via],
    ]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      li.appendChild(span);
    }
    ol.appendChild(li);
  }
  document.getElementById("no-invalidations").hidden = list.length > 0;
}

function status(text, error) {
  const p = document.getElementById("status");
  p.textContent = text;
  p.className = error ? "error" : "";
}

async function poll() {
  try {
    const response = await fetch("/_strata/api/dashboard", {
      headers: { authorization: "Bearer " + token() },
      cache: "no-store",
    });
    if (response.status === 401) {
      status("the admin token is needed", true);
      document.getElementById("login").hidden = false;
      return;
    }
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.status);
    document.getElementById("login").hidden = true;
    renderNamespaces(data.namespaces);
    renderInvalidations(data.invalidations, data.now_ms);
    if (data.error) {
      status(data.error, true); // the counters shown are the last ones read
    } else {
      status(
        "cache: " + data.backend + " — updated " + new Date(data.now_ms).toLocaleTimeString("en-GB"),
        false,
      );
    }
    document.body.dataset.ready = "1";
  } catch (e) {
    status("cannot reach the gateway: " + e.message, true);
  } finally {
    setTimeout(poll, EVERY_MS);
  }
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("strata-token", document.getElementById("token").value);
  status("checking the token…", false); // the next poll uses it
});
token();
poll();
