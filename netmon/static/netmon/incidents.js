/*
 * Netmon incidents, shared by the dashboard (dashboard.js) and the incident page (incident.js):
 * the JSON API with the session cookie and CSRF token, and how an incident is shown: its kind's
 * title, severity, hosts, duration, counts, explanation, its anomalies and packets, and the
 * buttons an operator's permissions allow. The words (kinds, severities, statuses, the transition
 * rule, the buttons' labels) come from the page (the server's vocabulary, capture/choices.py).
 */
(function () {
  "use strict";

  // sustained evidence this recently: "active" (60 s without it closes it; lone stray anomalies
  // since move last_seen, not active_until)
  const ACTIVE_SECONDS = 60;
  const SHOWN_TARGETS = 3;
  // Suppression lengths offered (the API takes any expires_at, or none).
  const SUPPRESS_FOR = [["1 hour", 3600], ["1 day", 86400], ["1 week", 604800], ["no expiry", 0]];

  const vocabularyNode = document.getElementById("incident-vocabulary");
  const vocabulary = vocabularyNode ? JSON.parse(vocabularyNode.textContent) : { kinds: {}, severities: [], statuses: [], transitions: {}, actions: {} };
  let permissions = new Set((document.body.dataset.permissions || "").split(" ").filter(Boolean));
  let clockSkewMs = 0; // server clock minus this browser's, from the socket's greeting

  // --- DOM and formatting -------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n, w) => String(n).padStart(w || 2, "0");

  function fmtClock(date, millis) {
    if (!(date instanceof Date) || Number.isNaN(date.getTime())) return "";
    const base = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
    return millis ? `${base}.${pad(date.getMilliseconds(), 3)}` : base;
  }

  function fmtDateTime(date) {
    if (!(date instanceof Date) || Number.isNaN(date.getTime())) return "";
    const today = new Date(Date.now() + clockSkewMs);
    const sameDay = date.toDateString() === today.toDateString();
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    return sameDay ? fmtClock(date) : `${day} ${fmtClock(date)}`;
  }

  function fmtCount(value) {
    return Number(value || 0).toLocaleString("en-US");
  }

  function fmtDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "";
    if (seconds < 1) return "under 1 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(seconds < 36000 ? 1 : 0)} h`;
    return `${Math.round(seconds / 86400)} days`;
  }

  function toDate(ts) {
    if (ts === null || ts === undefined || ts === "") return null;
    return typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  }

  function endpoint(ip, port) {
    if (!ip) return "–";
    const host = ip.includes(":") ? `[${ip}]` : ip;
    return port ? `${host}:${port}` : host;
  }

  function tcpFlags(bits) {
    if (!bits) return "";
    const names = [[1, "F"], [2, "S"], [4, "R"], [8, "P"], [16, "A"], [32, "U"], [64, "E"], [128, "C"]];
    return names.filter(([bit]) => bits & bit).map(([, n]) => n).join("");
  }

  // --- the JSON API -------------------------------------------------------------------------
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.content : "";

  function goToLogin() {
    window.location.assign("/accounts/login/?next=" + encodeURIComponent(window.location.pathname));
  }

  async function api(method, url, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrfToken;
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      return { ok: false, status: 0, body: { detail: "the server is unreachable" } };
    }
    if (response.status === 401 || (response.status === 403 && response.redirected)) goToLogin();
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try { data = await response.json(); } catch (error) { data = null; }
    }
    return { ok: response.ok, status: response.status, body: data };
  }

  function problem(result) {
    const body = result.body || {};
    if (body.detail) return body.detail;
    const first = Object.entries(body)[0];
    if (first) return `${first[0]}: ${Array.isArray(first[1]) ? first[1].join(" ") : first[1]}`;
    return result.status ? `failed (HTTP ${result.status})` : "the server is unreachable";
  }

  // --- what an incident reads as ------------------------------------------------------------
  const kindTitle = (kind) => vocabulary.kinds[kind] || String(kind || "incident").replace(/_/g, " ");
  const severityLevel = (severity) => Math.max(0, vocabulary.severities.indexOf(severity));
  const statusRank = (status) => { const i = vocabulary.statuses.indexOf(status); return i < 0 ? 99 : i; };
  const isNew = (incident) => statusRank(incident.status) === 0; // the status of a new incident
  const statusText = (status) => String(status || "").replace(/_/g, " ");

  function serverNow() {
    return Date.now() + clockSkewMs;
  }

  function isActive(incident) {
    const last = toDate(incident.active_until || incident.last_seen);
    return Boolean(last) && (serverNow() - last.getTime()) / 1000 < ACTIVE_SECONDS && isNew(incident);
  }

  // "IP:port/proto" -> [IP, "port/proto"]; a portless target is its address alone.
  function splitTarget(target) {
    const text = String(target);
    const slash = text.indexOf("/");
    if (slash < 0) return [text, ""];
    const colon = text.lastIndexOf(":", slash);
    return colon < 0 ? [text, ""] : [text.slice(0, colon), text.slice(colon + 1)];
  }

  // --- GeoIP (capture/geo.py; the API's src_geo/dst_geo/geo) ---------------------------------
  // "US · GOOGLE" (or "US · AS15169 GOOGLE" when the data has AS numbers) for a public address,
  // its scope ("private", "loopback", ...) for the others, "" when nothing is known.
  function geoText(geo) {
    if (!geo) return "";
    if (geo.scope !== "public") return geo.scope || "";
    const as = geo.asn ? `AS${geo.asn}${geo.asn_name ? " " + geo.asn_name : ""}` : (geo.asn_name || "");
    return [geo.country || "??", as].filter(Boolean).join(" · ");
  }

  // A small tag after an address; with publicOnly, nothing for non-public ones (a LAN's packets).
  function geoTag(geo, publicOnly) {
    if (!geo || (publicOnly && geo.scope !== "public")) return null;
    const text = geoText(geo);
    const title = geo.scope === "public" ? [geo.country_name, geo.asn_name].filter(Boolean).join(", ") : `${geo.scope} address`;
    return text ? el("span", { class: "geo", "data-testid": "geo", title, text }) : null;
  }

  // The incident's public addresses with their country and AS: "8.8.8.8 US · GOOGLE, …" (at most 4).
  function incidentGeoText(incident) {
    const geo = incident.geo || {};
    const shown = Object.entries(geo).filter(([, g]) => g && g.scope === "public").slice(0, 4);
    return shown.map(([address, g]) => `${address} ${geoText(g)}`).join(", ");
  }

  function hostsText(incident) {
    const sources = (incident.sources || []).join(", ") || "unknown source";
    const targets = incident.targets || [];
    const more = targets.length - SHOWN_TARGETS + Number(incident.targets_more || 0);
    const tail = more > 0 ? ` and ${fmtCount(more)} more` : "";
    const hosts = new Set(targets.map((t) => splitTarget(t)[0]));
    if (hosts.size === 1 && targets.every((t) => splitTarget(t)[1])) {
      // one host, many ports (a scan): the host once, then its ports
      const ports = targets.slice(0, SHOWN_TARGETS).map((t) => splitTarget(t)[1]).join(", ");
      return { sources, targets: `${[...hosts][0]} ports ${ports}${tail}` };
    }
    return { sources, targets: (targets.slice(0, SHOWN_TARGETS).join(", ") || "no target recorded") + tail };
  }

  function timesText(incident) {
    const first = toDate(incident.first_seen);
    const last = toDate(incident.last_seen);
    if (!first || !last) return "";
    const span = fmtDuration((last - first) / 1000);
    if (isActive(incident)) return `since ${fmtDateTime(first)} · ${span} · active`;
    return `${fmtDateTime(first)} – ${fmtClock(last)} · ${span}`;
  }

  function severityBadge(incident) {
    return el("span", {
      class: `badge sev sev-${severityLevel(incident.severity)}`,
      "data-testid": "incident-severity",
      text: incident.severity || "",
    });
  }

  function statusBadge(incident) {
    return el("span", {
      class: `badge plain status status-${statusRank(incident.status)}`,
      "data-testid": "incident-status",
      text: statusText(incident.status),
    });
  }

  function firstLine(text) {
    return String(text || "").split(/\r?\n|(?<=\.)\s+(?=[A-Z0-9])/)[0];
  }

  // --- actions ------------------------------------------------------------------------------
  async function changeStatus(incident, status) {
    return api("PATCH", `/api/incidents/${incident.id}/`, { status });
  }

  async function suppress(incident, reason, seconds) {
    const body = {};
    if (reason) body.reason = reason;
    // null: never expires (left out, the server's default length applies)
    body.expires_at = seconds ? new Date(serverNow() + seconds * 1000).toISOString() : null;
    return api("POST", `/api/incidents/${incident.id}/suppress/`, body);
  }

  /*
   * The buttons for an incident, as the user's permissions and the transition rule allow.
   * onChanged(incident) gets the API's answer after a status change; messages go to `say`.
   */
  function actionBar(incident, onChanged, say) {
    const bar = el("div", { class: "incident-actions", "data-testid": "incident-actions" });
    if (permissions.has("detection.change_incident")) {
      for (const status of vocabulary.transitions[incident.status] || []) {
        const button = el("button", {
          type: "button",
          class: statusRank(status) === 0 ? "" : "act",
          "data-testid": `incident-action-${status}`,
          dataset: { status },
          text: vocabulary.actions[status] || statusText(status),
        });
        button.addEventListener("click", async (event) => {
          event.stopPropagation();
          bar.querySelectorAll("button").forEach((b) => { b.disabled = true; });
          say("Saving…", "");
          const result = await changeStatus(incident, status);
          bar.querySelectorAll("button").forEach((b) => { b.disabled = false; });
          if (result.ok && result.body) { say("", ""); onChanged(result.body); }
          else say(problem(result), "bad");
        });
        bar.append(button);
      }
    }
    if (permissions.has("detection.add_suppressionrule")) {
      const button = el("button", { type: "button", class: "quiet", "data-testid": "incident-suppress", text: "Suppress…" });
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        const open = bar.querySelector(".suppress-form");
        if (open) { open.remove(); return; }
        bar.append(suppressForm(incident, say, () => bar.querySelector(".suppress-form")?.remove()));
      });
      bar.append(button);
    }
    return bar;
  }

  function suppressForm(incident, say, close) {
    const reason = el("input", { name: "reason", placeholder: "reason (e.g. the backup job)", "data-testid": "suppress-reason", maxlength: "200" });
    const length = el("select", { name: "for", "data-testid": "suppress-for" },
      ...SUPPRESS_FOR.map(([label, seconds]) => el("option", { value: String(seconds), text: label })));
    const go = el("button", { type: "button", class: "primary", "data-testid": "suppress-submit", text: "Suppress" });
    const cancel = el("button", { type: "button", text: "Cancel" });
    const form = el("div", { class: "suppress-form", "data-testid": "suppress-form" },
      el("span", { class: "muted", text: `Stop alerting on ${(incident.sources || []).join(", ") || "this source"} like this, for` }),
      length, reason, go, cancel);
    form.addEventListener("click", (event) => event.stopPropagation());
    cancel.addEventListener("click", close);
    go.addEventListener("click", async () => {
      go.disabled = true;
      const result = await suppress(incident, reason.value.trim(), Number(length.value));
      go.disabled = false;
      if (result.ok) {
        const rule = result.body || {};
        const until = rule.expires_at ? ` until ${fmtDateTime(toDate(rule.expires_at))}` : ", no expiry";
        say(`Suppressed${rule.id !== undefined ? ` by rule ${rule.id}` : ""}${until}`, "ok");
        close();
      } else if (result.status === 404 || result.status === 405) {
        say("Suppression is not available on this server yet.", "bad");
      } else {
        say(problem(result), "bad");
      }
    });
    return form;
  }

  // --- its anomalies and packets ------------------------------------------------------------
  function anomalyRows(anomalies) {
    return anomalies.map((a) => el("tr", { dataset: { anomalyId: a.id } },
      el("td", { class: "num score-cell", text: Number(a.score).toFixed(3) }),
      el("td", { class: "num mono", text: fmtClock(toDate(a.ts), true) }),
      el("td", { class: "mono", title: a.community_id ? `Community ID ${a.community_id}` : "",
        text: `${endpoint(a.src_ip, a.src_port)} → ${endpoint(a.dst_ip, a.dst_port)}` }),
      el("td", {}, el("span", { class: "proto proto-" + String(a.protocol || "").replace(/[^A-Za-z0-9]/g, ""), text: a.protocol || "?" })),
      el("td", { class: "why", title: a.explanation || "", text: a.explanation || "" })));
  }

  function packetRows(packets) {
    return packets.map((p) => el("tr", { dataset: { seq: p.seq } },
      el("td", { class: "num mono", text: fmtClock(toDate(p.ts), true) }),
      el("td", { class: "mono", title: p.community_id ? `Community ID ${p.community_id}` : "" }, endpoint(p.src_ip, p.src_port), geoTag(p.src_geo, true)),
      el("td", { class: "mono" }, endpoint(p.dst_ip, p.dst_port), geoTag(p.dst_geo, true)),
      el("td", {}, el("span", { class: "proto proto-" + String(p.protocol || "").replace(/[^A-Za-z0-9]/g, ""), text: p.protocol || "?" })),
      el("td", { class: "num", text: p.length }),
      el("td", { class: "mono", text: tcpFlags(p.tcp_flags) })));
  }

  function table(headers, rows, testid) {
    return el("div", { class: "table-scroll compact" },
      el("table", {},
        el("thead", {}, el("tr", {}, ...headers.map(([text, num]) => el("th", { class: num ? "num" : "", text })))),
        el("tbody", { "data-testid": testid }, ...rows)));
  }

  const ANOMALY_HEADERS = [["Score", true], ["Time", true], ["Flow"], ["Proto"], ["Why"]];
  const PACKET_HEADERS = [["Time", true], ["Source"], ["Destination"], ["Proto"], ["Length", true], ["Flags"]];

  const items = (body) => (Array.isArray(body) ? body : (body && body.results) || []);

  window.NetmonIncidents = {
    vocabulary, el, api, problem, goToLogin, toDate, tcpFlags, fmtClock, fmtDateTime, fmtCount, fmtDuration, endpoint,
    kindTitle, severityLevel, statusRank, statusText, isNew, isActive, hostsText, timesText, firstLine,
    geoText, geoTag, incidentGeoText, splitTarget,
    severityBadge, statusBadge, actionBar, anomalyRows, packetRows, table, items,
    ANOMALY_HEADERS, PACKET_HEADERS,
    can: (permission) => permissions.has(permission),
    setPermissions(list) { permissions = new Set(list); },
    setServerTime(iso) {
      const server = Date.parse(iso);
      if (Number.isFinite(server)) clockSkewMs = server - Date.now();
    },
  };
})();
