/*
 * Netmon dashboard: live data over the WebSocket /ws/monitor/ (protocol: docs/websocket.md),
 * configuration and exports over the JSON API with the session cookie and CSRF token.
 * Incidents are the live feed (shown with incidents.js); the raw packets and anomalies are a
 * closed panel, streamed only while open. No dependencies: the charts are drawn on <canvas> here.
 */
(function () {
  "use strict";

  const WINDOW_S = 300; // chart span
  const CONFIG_ECHO_MS = 3000; // a config_updated this soon after our own save is its echo
  const MIX_WINDOW = 60; // protocol mix and top talkers: the last 60 stats messages per sensor
  const MAX_PACKET_ROWS = 100;
  const MAX_ANOMALIES = 60;
  const MAX_EVENTS = 6;
  const STATUS_REFRESH_MS = 10000;
  const MAX_INCIDENTS = 100; // cards kept: every open one first, then the latest others
  const INCIDENT_PAGE = 50; // incidents loaded per list at start
  const INCIDENT_RENDER_MS = 250; // events arriving within this are drawn together
  const TOP_ANOMALIES = 10;
  const CARD_PACKETS = 20;
  // The configuration keys, their choices and bounds, and the export request's choices are not
  // spelled here: they come from the server's validators (GET /api/config's "options", OPTIONS
  // /api/exports/), see applyFieldOptions.

  // --- small helpers --------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const IN = window.NetmonIncidents;
  const { el, api, goToLogin, toDate, tcpFlags, fmtClock, endpoint } = IN;

  // The user's permissions (netmon/roles.py), from the page and then from the socket's greeting:
  // what they may not do is hidden or disabled. The server refuses it anyway.
  let permissions = new Set((document.body.dataset.permissions || "").split(" ").filter(Boolean));
  const can = (permission) => permissions.has(permission);

  function applyPermissions() {
    const controls = can("capture.control_capture");
    $("capture-form").classList.toggle("hidden", !controls);
    $("capture-form").querySelectorAll("button, input, select").forEach((node) => { node.disabled = !controls; });
    const configure = can("capture.change_monitorconfig");
    $("config-form").querySelectorAll("button, input, select").forEach((node) => { node.disabled = !configure; });
    $("config-form").querySelector("[data-testid=config-save]").closest(".actions").classList.toggle("hidden", !configure);
    $("exports").classList.toggle("hidden", !can("exports.view_exportjob"));
    const exportsAllowed = can("exports.add_exportjob");
    $("export-form").classList.toggle("hidden", !exportsAllowed);
    if (!exportsAllowed) $("export-form").querySelectorAll("button, input, select").forEach((node) => { node.disabled = true; });
  }

  function fmtNumber(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (abs >= 1e9) return (value / 1e9).toFixed(abs >= 1e10 ? 1 : 2) + "G";
    if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 1 : 2) + "M";
    if (abs >= 1e4) return (value / 1e3).toFixed(abs >= 1e5 ? 0 : 1) + "k";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  function fmtBytes(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let v = Math.abs(value);
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return (v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  // Field errors from either {"detail", "fields": {key: msg}} or DRF's {key: [msgs]}.
  function fieldErrors(body) {
    if (!body || typeof body !== "object") return {};
    const source = body.fields && typeof body.fields === "object" ? body.fields : body;
    const out = {};
    for (const [key, value] of Object.entries(source)) {
      if (key === "detail" && source === body) continue;
      out[key] = Array.isArray(value) ? value.join(" ") : String(value);
    }
    return out;
  }

  function showFieldErrors(form, errors) {
    form.querySelectorAll("[data-error-for]").forEach((node) => { node.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((node) => node.classList.remove("invalid"));
    const unplaced = [];
    for (const [key, message] of Object.entries(errors || {})) {
      const slot = form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
      const input = form.querySelector(`[name="${CSS.escape(key)}"]`);
      if (input) input.classList.add("invalid");
      if (slot) slot.textContent = message;
      else unplaced.push(`${key}: ${message}`);
    }
    const general = form.querySelector('[data-error-for="non_field_errors"]');
    if (general && unplaced.length) general.textContent = unplaced.join(" · ");
  }

  function setMessage(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.className = "form-message" + (kind ? " " + kind : "");
  }

  // Fill a form's selects with the choices of the server's field options, and give number inputs
  // their bounds. A select's empty-valued option (e.g. "configured default") stays first.
  function applyFieldOptions(form, options) {
    for (const [name, option] of Object.entries(options || {})) {
      const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
      if (!input) continue;
      if (option.type === "choice" && input.tagName === "SELECT") {
        const chosen = input.value;
        const hints = option.hints || {};
        const placeholders = [...input.options].filter((o) => o.value === "");
        input.replaceChildren(...placeholders, ...option.choices.map((value) =>
          el("option", { value, text: hints[value] ? `${value} (${hints[value]})` : value })));
        if (option.choices.includes(chosen)) input.value = chosen;
      }
      if (option.type === "integer" && input.type === "number") {
        if (option.min !== undefined) input.min = option.min;
        if (option.max !== undefined) input.max = option.max;
      }
    }
  }

  // --- line chart on a canvas -----------------------------------------------------------
  class LineChart {
    constructor(canvas, color, format) {
      this.canvas = canvas;
      this.color = color;
      this.format = format;
      this.points = []; // [epoch seconds, value]
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    push(t, value) {
      this.points.push([t, value]);
      const cutoff = t - WINDOW_S - 5;
      while (this.points.length && this.points[0][0] < cutoff) this.points.shift();
    }

    niceMax(value) {
      if (value <= 0) return 1;
      const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
      for (const step of [1, 2, 2.5, 5, 10]) {
        if (value <= step * magnitude) return step * magnitude;
      }
      return 10 * magnitude;
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (!width || !height) return;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);

      const now = Date.now() / 1000;
      const start = now - WINDOW_S;
      const visible = this.points.filter(([t]) => t >= start - 2);
      const left = 56;
      const right = 10;
      const top = 8;
      const bottom = 20;
      const plotW = width - left - right;
      const plotH = height - top - bottom;
      const max = this.niceMax(Math.max(0, ...visible.map(([, v]) => v)) * 1.1);
      const x = (t) => left + ((t - start) / WINDOW_S) * plotW;
      const y = (v) => top + plotH - (v / max) * plotH;

      // grid + y labels
      ctx.font = "11px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let i = 0; i <= 4; i += 1) {
        const value = (max * i) / 4;
        const gy = Math.round(y(value)) + 0.5;
        ctx.strokeStyle = i === 0 ? "#c9d2dc" : "#edf0f4";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(left, gy);
        ctx.lineTo(width - right, gy);
        ctx.stroke();
        ctx.fillStyle = "#5a6676";
        ctx.fillText(this.format(value), left - 8, gy);
      }
      // x labels: one a minute
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let m = 0; m <= WINDOW_S / 60; m += 1) {
        const t = now - m * 60;
        ctx.fillStyle = "#8b96a5";
        ctx.fillText(m === 0 ? "now" : `-${m} min`, Math.min(Math.max(x(t), left + 16), width - right - 14), top + plotH + 5);
      }
      this.canvas.dataset.points = String(visible.length);
      this.canvas.dataset.last = visible.length ? String(visible[visible.length - 1][1]) : "";
      if (!visible.length) {
        ctx.fillStyle = "#8b96a5";
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText("waiting for data", left + plotW / 2, top + plotH / 2);
        return;
      }

      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top - 2, plotW, plotH + 4);
      ctx.clip();
      // Break the line where samples are missing (capture stopped), instead of bridging the gap.
      const segments = [];
      let current = [];
      visible.forEach(([t, v], i) => {
        if (i > 0 && t - visible[i - 1][0] > 5) { segments.push(current); current = []; }
        current.push([x(t), y(v)]);
      });
      segments.push(current);
      for (const segment of segments) {
        if (!segment.length) continue;
        const gradient = ctx.createLinearGradient(0, top, 0, top + plotH);
        gradient.addColorStop(0, this.color + "33");
        gradient.addColorStop(1, this.color + "05");
        ctx.beginPath();
        ctx.moveTo(segment[0][0], top + plotH);
        segment.forEach(([px, py]) => ctx.lineTo(px, py));
        ctx.lineTo(segment[segment.length - 1][0], top + plotH);
        ctx.closePath();
        ctx.fillStyle = gradient;
        ctx.fill();
        ctx.beginPath();
        segment.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
        ctx.strokeStyle = this.color;
        ctx.lineWidth = 1.8;
        ctx.lineJoin = "round";
        ctx.stroke();
        if (segment.length === 1) {
          ctx.fillStyle = this.color;
          ctx.beginPath();
          ctx.arc(segment[0][0], segment[0][1], 2.5, 0, Math.PI * 2);
          ctx.fill();
        }
      }
      const [lx, ly] = segments[segments.length - 1].slice(-1)[0];
      ctx.fillStyle = this.color;
      ctx.beginPath();
      ctx.arc(lx, ly, 3, 0, Math.PI * 2);
      ctx.fill();
      ctx.restore();
    }
  }

  const ppsChart = new LineChart($("chart-pps"), "#1d5fd6", (v) => fmtNumber(v));
  const bpsChart = new LineChart($("chart-bps"), "#13794a", (v) => fmtBytes(v).replace(" ", ""));

  // --- state ----------------------------------------------------------------------------
  const sensors = new Map(); // name -> merged status (connected/api status + live stats/capture_status)
  const latestStats = new Map(); // name -> last stats message
  const mixHistory = new Map(); // name -> [{protocols, talkers}] (last MIX_WINDOW)
  const talkerGeo = new Map(); // address -> GeoIP, from the stats messages' talkers_geo
  let packetRows = []; // newest first
  let packetsDroppedTotal = 0;
  let anomalyCount = 0;
  let anomaliesLastHour = null;
  let liveConfig = null;
  let configSavedAt = 0; // when this page last saved the configuration (Date.now())

  // --- KPIs -----------------------------------------------------------------------------
  function freshStats() {
    const now = Date.now() / 1000;
    return [...latestStats.values()].filter((s) => now - (s.ts || 0) < 10);
  }

  function renderKpis() {
    const stats = freshStats();
    const pps = stats.reduce((sum, s) => sum + (s.packets_per_s || 0), 0);
    const bps = stats.reduce((sum, s) => sum + (s.bytes_per_s || 0), 0);
    setText("kpi-pps", stats.length ? fmtNumber(pps, 1) : "–");
    setText("kpi-pps-sub", stats.length ? `${stats.length} sensor${stats.length > 1 ? "s" : ""} reporting` : "no live sensor");
    setText("kpi-bps", stats.length ? fmtBytes(bps) + "/s" : "–");
    let stored = 0;
    let dropped = 0;
    let lag = 0;
    for (const s of sensors.values()) {
      const live = latestStats.get(s.sensor);
      stored += s.packets_stored || 0;
      dropped += Math.max(s.packets_dropped || 0, (live && live.packets_dropped) || 0);
      lag += Math.max(0, live ? live.queue_lag_packets || 0 : s.queue_lag_packets || 0);
    }
    setText("kpi-stored", sensors.size ? fmtNumber(stored) : "–");
    setText("kpi-dropped", sensors.size ? fmtNumber(dropped) : "–");
    $("kpi-dropped-card").classList.toggle("alert", dropped > 0);
    setText("kpi-lag", sensors.size ? fmtNumber(lag) : "–");
    const shown = anomaliesLastHour === null ? anomalyCount : Math.max(anomaliesLastHour, anomalyCount);
    setText("kpi-anomalies", fmtNumber(shown));
    $("kpi-anomalies-card").classList.toggle("alert", shown > 0);
  }

  // --- protocol mix and top talkers -----------------------------------------------------
  function renderBars(listId, emptyId, entries, format, tag) {
    const list = $(listId);
    $(emptyId).classList.toggle("hidden", entries.length > 0);
    const max = Math.max(1, ...entries.map(([, v]) => v));
    const total = entries.reduce((sum, [, v]) => sum + v, 0) || 1;
    list.replaceChildren(
      ...entries.map(([label, value]) =>
        el("li", { dataset: { label } },
          el("span", { class: "label mono", title: label }, label, tag ? tag(label) : null),
          el("span", { class: "track" }, el("span", { class: "fill", style: `width:${((value / max) * 100).toFixed(1)}%` })),
          el("span", { class: "value", text: format(value, total) }),
        ),
      ),
    );
  }

  function renderMix() {
    const protocols = new Map();
    const talkers = new Map();
    for (const history of mixHistory.values()) {
      for (const entry of history) {
        for (const [name, count] of Object.entries(entry.protocols || {})) {
          protocols.set(name, (protocols.get(name) || 0) + Number(count || 0));
        }
        for (const pair of entry.talkers || []) {
          if (Array.isArray(pair) && pair.length >= 2) talkers.set(pair[0], (talkers.get(pair[0]) || 0) + Number(pair[1] || 0));
        }
      }
    }
    const byValue = (a, b) => b[1] - a[1];
    renderBars("protocol-bars", "protocol-empty", [...protocols.entries()].sort(byValue).slice(0, 10),
      (v, total) => `${((v / total) * 100).toFixed(v / total < 0.1 ? 1 : 0)}% · ${fmtNumber(v)}`);
    renderBars("talker-bars", "talker-empty", [...talkers.entries()].sort(byValue).slice(0, 10), (v) => fmtBytes(v),
      (ip) => IN.geoTag(talkerGeo.get(ip)));
  }

  // --- capture state --------------------------------------------------------------------
  const STATE_CLASS = { running: "ok", starting: "info", stopping: "warn", stopped: "warn", exited: "bad" };

  function mergeSensor(name, fields) {
    if (!name || name === "*") return;
    const current = sensors.get(name) || { sensor: name };
    sensors.set(name, Object.assign(current, fields));
  }

  function renderCaptureState() {
    const list = [...sensors.values()].sort((a, b) => a.sensor.localeCompare(b.sensor));
    const live = list.filter((s) => s.alive !== false);
    const running = live.filter((s) => s.state === "running");
    const badge = $("capture-state");
    let state;
    let label;
    if (!list.length) { state = "none"; label = "no sensor"; }
    else if (running.length) { state = "running"; label = running.length > 1 ? `capturing · ${running.length} sensors` : "capturing"; }
    else {
      const pending = list.find((s) => s.state === "starting" || s.state === "stopping");
      state = pending ? pending.state : (live.length ? live[0].state || "stopped" : "exited");
      label = { starting: "starting…", stopping: "stopping…", stopped: "stopped", exited: "not running" }[state] || state;
    }
    badge.dataset.state = state;
    badge.className = "badge " + (STATE_CLASS[state] || "");
    badge.textContent = label;

    const primary = running[0] || live[0] || list[0];
    const modeBadge = $("capture-mode");
    if (primary && primary.mode) {
      modeBadge.classList.remove("hidden");
      modeBadge.dataset.mode = primary.mode;
      modeBadge.className = "badge plain " + (primary.mode === "live" ? "info" : "warn");
      modeBadge.textContent = primary.mode === "demo" ? "demo mode" : primary.mode;
      const reason = primary.mode_reason || "";
      setText("mode-reason", primary.mode === "live" ? "" : reason);
      $("mode-reason").title = reason;
    } else {
      modeBadge.classList.add("hidden");
      setText("mode-reason", "");
    }

    const sensorList = $("sensor-list");
    sensorList.replaceChildren(
      ...list.map((s) => {
        const st = s.alive === false && s.state !== "starting" ? "exited" : s.state || "unknown";
        const detail = [s.mode, s.interface, s.packets_captured !== undefined ? `${fmtNumber(s.packets_captured)} captured` : null]
          .filter(Boolean).join(" · ");
        return el("li", { dataset: { sensor: s.sensor, state: st } },
          el("span", { class: "badge " + (STATE_CLASS[st] || ""), text: st }),
          el("span", { class: "name", text: s.sensor }),
          el("span", { class: "detail", text: detail }));
      }),
    );
    if (!list.length) sensorList.append(el("li", { class: "muted", text: "No capture process has reported yet." }));

    const select = $("capture-sensor");
    const chosen = select.value;
    const names = list.map((s) => s.sensor);
    const existing = [...select.options].slice(1).map((o) => o.value);
    if (names.join("\n") !== existing.join("\n")) {
      select.replaceChildren(el("option", { value: "", text: "All sensors" }), ...names.map((n) => el("option", { value: n, text: n })));
      select.value = names.includes(chosen) ? chosen : "";
    }
  }

  function logCaptureEvent(text) {
    const list = $("capture-events");
    list.prepend(el("li", {}, el("time", { text: fmtClock(new Date()) }), text));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  // --- packets table --------------------------------------------------------------------
  function addPackets(message) {
    const incoming = (message.packets || []).slice().reverse();
    packetRows = incoming.concat(packetRows).slice(0, MAX_PACKET_ROWS);
    packetsDroppedTotal += message.dropped || 0;
    const body = $("packet-rows");
    const fragment = document.createDocumentFragment();
    for (const p of packetRows) {
      const proto = String(p.protocol || "");
      fragment.append(
        el("tr", { dataset: { seq: p.seq } },
          el("td", { class: "num mono", text: fmtClock(toDate(p.ts), true) }),
          el("td", { text: p.sensor || message.sensor || "" }),
          el("td", { class: "num mono", text: p.seq }),
          el("td", { class: "mono" }, endpoint(p.src_ip, p.src_port), IN.geoTag(p.src_geo, true)),
          el("td", { class: "mono" }, endpoint(p.dst_ip, p.dst_port), IN.geoTag(p.dst_geo, true)),
          el("td", {}, el("span", { class: "proto proto-" + proto.replace(/[^A-Za-z0-9]/g, ""), text: proto || "?" })),
          el("td", { class: "muted", text: p.app_protocol || "" }),
          el("td", { class: "num", text: p.length }),
          el("td", { class: "mono", text: tcpFlags(p.tcp_flags) }),
        ),
      );
    }
    body.replaceChildren(fragment);
    body.dataset.count = String(packetRows.length);
    body.dataset.lastSeq = packetRows.length ? String(packetRows[0].seq) : "";
    $("packet-empty").classList.toggle("hidden", packetRows.length > 0);
    setText("packet-rate", packetsDroppedTotal ? `${fmtNumber(packetsDroppedTotal)} not shown (sampled)` : "");
  }

  // --- anomaly feed ---------------------------------------------------------------------
  const seenAnomalies = new Set();

  function addAnomaly(anomaly, fresh) {
    if (!anomaly || typeof anomaly !== "object") return;
    if (anomaly.id !== undefined && seenAnomalies.has(anomaly.id)) return;
    if (anomaly.id !== undefined) seenAnomalies.add(anomaly.id);
    const score = Number(anomaly.score);
    const threshold = Number(anomaly.threshold);
    const scale = Math.max(score, threshold, 1e-9) * 1.1;
    const seq = Number(anomaly.packet_seq);
    const links = el("div", { class: "anomaly-links" });
    if (anomaly.sensor && Number.isFinite(seq)) {
      const query = new URLSearchParams({ sensor: anomaly.sensor, seq_from: Math.max(0, seq - 50), seq_to: seq + 50 });
      links.append(el("a", { href: `/api/packets/?${query}`, target: "_blank", rel: "noopener", text: `packets around #${seq}` }));
    }
    if (anomaly.src_ip) {
      links.append(el("a", { href: `/admin/capture/packet/?q=${encodeURIComponent(anomaly.src_ip)}`, target: "_blank", rel: "noopener", text: `all packets of ${anomaly.src_ip}` }));
    }
    const item = el("li", { class: fresh ? "fresh" : "", dataset: { anomalyId: anomaly.id ?? "" } },
      el("div", { class: "anomaly-head" },
        el("span", { class: "score", text: Number.isFinite(score) ? score.toFixed(3) : "?" }),
        el("span", { class: "score-vs", text: Number.isFinite(threshold) ? `vs threshold ${threshold.toFixed(3)}` : "" }),
        el("span", { class: "badge plain", text: anomaly.model || "model" }),
        el("time", { text: fmtClock(toDate(anomaly.ts)) })),
      el("div", { class: "anomaly-flow mono" },
        `${endpoint(anomaly.src_ip, anomaly.src_port)} → ${endpoint(anomaly.dst_ip, anomaly.dst_port)} `,
        el("span", { class: "muted", text: `${anomaly.protocol || ""} · ${anomaly.sensor || ""}` })),
      anomaly.explanation ? el("div", { class: "anomaly-why", text: anomaly.explanation }) : null,
      Number.isFinite(score) && Number.isFinite(threshold)
        ? el("div", { class: "meter", title: `score ${score} / threshold ${threshold}` },
          el("span", { class: "fill", style: `width:${((score / scale) * 100).toFixed(1)}%` }),
          el("span", { class: "mark", style: `left:${((threshold / scale) * 100).toFixed(1)}%` }))
        : null,
      links);
    const feed = $("anomaly-feed");
    if (fresh) feed.prepend(item); else feed.append(item);
    while (feed.children.length > MAX_ANOMALIES) feed.lastChild.remove();
    $("anomaly-empty").classList.toggle("hidden", feed.children.length > 0);
    if (fresh) anomalyCount += 1;
    setText("anomaly-count", String(feed.children.length));
  }

  async function loadRecentAnomalies() {
    const result = await api("GET", "/api/anomalies/?limit=30");
    if (!result.ok || !result.body) return; // the detection API may not be installed
    const items = Array.isArray(result.body) ? result.body : result.body.results || [];
    items.forEach((a) => addAnomaly(a, false));
  }

  // --- incidents: the live feed ----------------------------------------------------------
  // One card per incident, kept by id: an event updates its card (events arriving within
  // INCIDENT_RENDER_MS are drawn together) and the list is reordered by moving cards, never rebuilt.
  const incidents = new Map(); // id -> the incident as the API and the events show it
  const incidentCards = new Map(); // id -> <li>
  const dirtyIncidents = new Set();
  let incidentTimer = null;
  let incidentsLoaded = false;

  // Open incidents first, the most severe on top, then the newest; they keep their place while
  // they grow (ordered by last_seen, every read of a busy sensor would shuffle the cards under the
  // reader's eyes). Then the others, the latest seen first.
  function incidentOrder(a, b) {
    const group = (IN.isNew(a) ? 0 : 1) - (IN.isNew(b) ? 0 : 1);
    if (group) return group;
    if (IN.isNew(a)) {
      const severity = IN.severityLevel(b.severity) - IN.severityLevel(a.severity);
      return severity || String(b.first_seen || "").localeCompare(String(a.first_seen || "")) || b.id - a.id;
    }
    return String(b.last_seen || "").localeCompare(String(a.last_seen || "")) || b.id - a.id;
  }

  function takeIncident(incident) {
    if (!incident || typeof incident !== "object" || incident.id === undefined) return;
    const known = incidents.get(incident.id);
    // A status change answered by the API can arrive before an older read's event: keep the newer.
    if (known && known.status_changed_at && incident.status_changed_at !== undefined
        && String(incident.status_changed_at || "") < String(known.status_changed_at)) {
      incident = Object.assign({}, incident, {
        status: known.status, status_changed_at: known.status_changed_at, status_changed_by: known.status_changed_by,
      });
    }
    incidents.set(incident.id, Object.assign(known || {}, incident));
    dirtyIncidents.add(incident.id);
    if (!incidentTimer) incidentTimer = setTimeout(renderIncidents, INCIDENT_RENDER_MS);
  }

  function say(card) {
    return (text, kind) => {
      const node = card.querySelector(".incident-say");
      node.textContent = text || "";
      node.className = "incident-say form-message" + (kind ? " " + kind : "");
    };
  }

  function incidentSummary(incident, card) {
    const hosts = IN.hostsText(incident);
    const line = IN.firstLine(incident.explanation);
    const geoLine = IN.incidentGeoText(incident);
    return el("div", { class: "incident-summary" },
      el("div", { class: "incident-head" },
        IN.severityBadge(incident),
        el("a", { class: "kind", href: `/incidents/${incident.id}/`, "data-testid": "incident-kind", text: IN.kindTitle(incident.kind) }),
        IN.statusBadge(incident),
        el("span", { class: "times", "data-testid": "incident-times", text: IN.timesText(incident) })),
      el("div", { class: "incident-hosts mono", "data-testid": "incident-hosts" },
        el("span", { class: "sources", text: hosts.sources }), " → ", el("span", { text: hosts.targets })),
      geoLine ? el("div", { class: "incident-geo muted", "data-testid": "incident-geo", text: geoLine }) : null,
      el("div", { class: "incident-meta" },
        `${IN.fmtCount(incident.anomaly_count)} anomalies · ${IN.fmtCount(incident.packet_count)} packets`
        + ` · peak score ${Number(incident.peak_score || 0).toFixed(2)} · ${incident.sensor || ""}`
        + (incident.status_changed_by ? ` · ${IN.statusText(incident.status)} by ${incident.status_changed_by}` : "")),
      line ? el("div", { class: "incident-why", "data-testid": "incident-why", title: "click the card for the whole explanation, its anomalies and packets" },
        line, line.length < String(incident.explanation).length ? el("span", { class: "more", text: " …" }) : null) : null,
      el("div", { class: "incident-foot" },
        IN.actionBar(incident, (changed) => takeIncident(changed), say(card)),
        el("span", { class: "incident-say form-message" }),
        el("a", { class: "incident-open", href: `/incidents/${incident.id}/`, "data-testid": "incident-open", text: "Incident page →" })));
  }

  function fillIncidentCard(card, incident) {
    card.dataset.status = incident.status || "";
    card.dataset.severity = incident.severity || "";
    card.dataset.level = String(IN.severityLevel(incident.severity));
    card.dataset.active = IN.isActive(incident) ? "1" : "";
    card.classList.toggle("done", !IN.isNew(incident));
    const message = card.querySelector(".incident-say");
    const kept = message ? [message.textContent, message.className] : null;
    const summary = incidentSummary(incident, card);
    const old = card.querySelector(".incident-summary");
    if (old) old.replaceWith(summary); else card.prepend(summary);
    if (kept && kept[0]) { const node = card.querySelector(".incident-say"); node.textContent = kept[0]; node.className = kept[1]; }
  }

  function newIncidentCard(incident) {
    const card = el("li", { class: "incident fresh", "data-testid": "incident-card", dataset: { incidentId: incident.id } },
      el("div", { class: "incident-details", hidden: true }));
    card.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input, select, .incident-details")) return;
      toggleIncident(card);
    });
    return card;
  }

  async function toggleIncident(card) {
    const details = card.querySelector(".incident-details");
    const open = details.hidden;
    details.hidden = !open;
    card.classList.toggle("expanded", open);
    if (!open) return;
    let incident = incidents.get(Number(card.dataset.incidentId));
    if (!incident) return;
    details.replaceChildren(el("div", { class: "empty", text: "Loading its anomalies and packets…" }));
    if (!incident.packets_url) { // the events leave out the API's links: ask for the incident once
      const fresh = await api("GET", `/api/incidents/${incident.id}/`);
      if (fresh.ok && fresh.body) { takeIncident(fresh.body); incident = incidents.get(incident.id); }
    }
    const anomalies = await api("GET", `/api/incidents/${incident.id}/anomalies/?order=score&limit=${TOP_ANOMALIES}`);
    const packets = incident.packets_url ? await api("GET", `${incident.packets_url}&limit=${CARD_PACKETS}`) : null;
    const parts = [];
    if (incident.explanation) parts.push(el("div", { class: "incident-explanation", "data-testid": "incident-explanation", text: incident.explanation }));
    parts.push(el("h3", { text: `Top anomalies by score${anomalies.ok ? ` (of ${IN.fmtCount(anomalies.body.count)})` : ""}` }));
    parts.push(anomalies.ok ? IN.table(IN.ANOMALY_HEADERS, IN.anomalyRows(IN.items(anomalies.body)), "incident-anomaly-rows")
      : el("div", { class: "form-message bad", text: IN.problem(anomalies) }));
    if (packets) {
      parts.push(el("h3", { text: `Its source's packets (first ${CARD_PACKETS})` }));
      parts.push(packets.ok ? IN.table(IN.PACKET_HEADERS, IN.packetRows(IN.items(packets.body)), "incident-packet-rows")
        : el("div", { class: "form-message bad", text: IN.problem(packets) }));
    }
    parts.push(el("a", { href: `/incidents/${incident.id}/`, text: "Its timeline and every packet on the incident page →" }));
    details.replaceChildren(...parts);
  }

  function renderIncidents() {
    incidentTimer = null;
    const ordered = [...incidents.values()].sort(incidentOrder);
    for (const gone of ordered.slice(MAX_INCIDENTS)) {
      incidents.delete(gone.id);
      dirtyIncidents.delete(gone.id);
      const card = incidentCards.get(gone.id);
      if (card) card.remove();
      incidentCards.delete(gone.id);
    }
    const kept = ordered.slice(0, MAX_INCIDENTS);
    for (const id of dirtyIncidents) {
      const incident = incidents.get(id);
      if (!incident) continue;
      let card = incidentCards.get(id);
      if (!card) { card = newIncidentCard(incident); incidentCards.set(id, card); }
      fillIncidentCard(card, incident);
    }
    dirtyIncidents.clear();
    const feed = $("incident-feed");
    let cursor = feed.firstElementChild;
    for (const incident of kept) {
      const card = incidentCards.get(incident.id);
      if (card === cursor) { cursor = cursor.nextElementSibling; continue; }
      feed.insertBefore(card, cursor); // only the cards out of place move
    }
    const open = kept.filter(IN.isNew).length;
    setText("incident-open-count", `${open} open`);
    $("incident-open-count").className = "right badge plain" + (open ? " bad" : "");
    $("incident-empty").classList.toggle("hidden", kept.length > 0 || !incidentsLoaded);
  }

  // "active" turns into a duration once a source has been quiet: redraw only the cards that change.
  function refreshActivity() {
    for (const [id, incident] of incidents) {
      const card = incidentCards.get(id);
      if (card && card.dataset.active !== (IN.isActive(incident) ? "1" : "")) dirtyIncidents.add(id);
    }
    if (dirtyIncidents.size && !incidentTimer) incidentTimer = setTimeout(renderIncidents, INCIDENT_RENDER_MS);
  }

  async function loadIncidents() {
    const newStatus = IN.vocabulary.statuses[0];
    const [open, latest] = await Promise.all([
      api("GET", `/api/incidents/?status=${encodeURIComponent(newStatus)}&limit=${INCIDENT_PAGE}`),
      api("GET", `/api/incidents/?limit=${INCIDENT_PAGE}`),
    ]);
    incidentsLoaded = true;
    if (!open.ok || !latest.ok) {
      setMessage("incident-message", `Incidents could not be loaded: ${IN.problem(open.ok ? latest : open)}`, "bad");
    }
    for (const result of [latest, open]) if (result.ok) IN.items(result.body).forEach(takeIncident);
    if (!incidentTimer) incidentTimer = setTimeout(renderIncidents, 0);
  }

  // --- the raw feed: packets and anomalies, streamed only while its panel is open ---------------
  const rawFeed = $("raw-feed");
  const rawStreams = (rawFeed.dataset.streams || "").split(" ").filter(Boolean);
  let allowedStreams = [];

  function subscribeStreams() {
    const wanted = allowedStreams.filter((s) => rawFeed.open || !rawStreams.includes(s));
    socket.request({ type: "subscribe", streams: wanted });
  }

  function showTab(name) {
    rawFeed.querySelectorAll("[data-tab]").forEach((tab) => {
      const chosen = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", chosen ? "true" : "false");
      $(tab.dataset.tab).hidden = !chosen;
    });
  }

  // --- capture controls -----------------------------------------------------------------
  async function loadInterfaces() {
    const result = await api("GET", "/api/interfaces");
    const list = (result.body && (Array.isArray(result.body) ? result.body : result.body.interfaces)) || [];
    const select = $("capture-interface");
    const datalist = $("interface-options");
    const options = list.map((i) => el("option", { value: i.name, text: i.description ? `${i.name} — ${i.description}` : i.name }));
    select.replaceChildren(el("option", { value: "", text: "(configured)" }), ...options);
    datalist.replaceChildren(...list.map((i) => el("option", { value: i.name, label: i.description || i.name })));
    if (!result.ok && result.body && result.body.detail) setMessage("capture-message", result.body.detail, "bad");
  }

  function captureCommand(type) {
    const form = $("capture-form");
    showFieldErrors(form, {});
    const message = { type };
    const sensor = $("capture-sensor").value;
    if (sensor) message.sensor = sensor;
    if (type === "start_capture") {
      const iface = $("capture-interface").value;
      const bpf = $("capture-bpf").value.trim();
      if (iface) message.interface = iface;
      if (bpf) message.bpf = bpf;
    }
    const sent = socket.request(message, (reply) => {
      if (reply.type === "error") {
        setMessage("capture-message", reply.error, "bad");
        if (reply.fields) showFieldErrors(form, reply.fields);
      }
    });
    setMessage("capture-message", sent ? (type === "start_capture" ? "Starting…" : "Stopping…") : "Not connected", sent ? "" : "bad");
  }

  // --- configuration form ---------------------------------------------------------------
  const configForm = $("config-form");
  let configLoaded = null;
  let configOptions = {}; // key -> {type, choices, min, max, ...}: what POST /api/config accepts

  function configInput(key) {
    return configForm.querySelector(`[name="${CSS.escape(key)}"]`);
  }

  function fillConfig(config, onlyUntouched) {
    for (const key of Object.keys(config)) {
      const input = configInput(key);
      if (!input || config[key] === undefined) continue;
      if (onlyUntouched && input.dataset.dirty === "1") continue;
      input.value = config[key];
      input.dataset.dirty = "";
    }
    configLoaded = Object.assign({}, configLoaded || {}, config);
  }

  function configChanges() {
    const changes = {};
    for (const [key, option] of Object.entries(configOptions)) {
      const input = configInput(key);
      if (!input) continue;
      let value = input.value;
      if (option.type === "integer") value = value === "" ? value : Number(value);
      if (!configLoaded || String(configLoaded[key]) !== String(value)) changes[key] = value;
    }
    return changes;
  }

  async function loadConfig() {
    const result = await api("GET", "/api/config");
    if (result.ok && result.body) {
      configOptions = result.body.options || {};
      applyFieldOptions(configForm, configOptions);
      fillConfig(result.body, false);
    }
    else setMessage("config-message", "Could not load the configuration" + (result.body && result.body.detail ? `: ${result.body.detail}` : ""), "bad");
  }

  async function saveConfig(event) {
    event.preventDefault();
    const changes = configChanges();
    showFieldErrors(configForm, {});
    if (!Object.keys(changes).length) { setMessage("config-message", "Nothing to save", ""); return; }
    setMessage("config-message", "Saving…", "");
    const result = await api("POST", "/api/config", changes);
    if (result.ok) {
      fillConfig(result.body, false);
      configSavedAt = Date.now();
      setMessage("config-message", "Saved", "ok");
    } else if (result.status === 400) {
      showFieldErrors(configForm, fieldErrors(result.body));
      setMessage("config-message", (result.body && result.body.detail) || "Invalid configuration", "bad");
    } else {
      setMessage("config-message", (result.body && result.body.detail) || `Failed (HTTP ${result.status})`, "bad");
    }
  }

  // --- exports --------------------------------------------------------------------------
  const exportForm = $("export-form");
  const exportJobs = new Map();
  let exportsAvailable = true;
  let exportOptions = {}; // the export request's fields (OPTIONS /api/exports/)

  async function loadExportOptions() {
    const result = await api("OPTIONS", "/api/exports/");
    if (!result.ok || !result.body) return; // loadExports says what is wrong
    exportOptions = result.body.options || {};
    applyFieldOptions(exportForm, exportOptions);
  }

  // An algorithm with a hint (the one that only signs) gets the warning that nothing is encrypted.
  function showAlgorithmNote() {
    const algorithm = exportForm.elements.algorithm.value;
    const hints = (exportOptions.algorithm && exportOptions.algorithm.hints) || {};
    const note = $("export-algorithm-note");
    note.querySelector("[data-algorithm]").textContent = algorithm;
    note.hidden = !hints[algorithm];
  }

  function renderExports() {
    const jobs = [...exportJobs.values()].sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")));
    const STATUS = { succeeded: "ok", ready: "ok", running: "info", queued: "plain", failed: "bad", expired: "warn" };
    $("export-rows").replaceChildren(
      ...jobs.map((job) => {
        const status = job.status || "queued";
        const progress = status === "running" && job.rows_written ? ` · ${fmtNumber(job.rows_written)} rows` : "";
        const download = job.download_url
          ? el("a", { href: job.download_url, download: "", "data-testid": "export-download", text: "Download" })
          : job.error ? el("span", { class: "muted", title: job.error, text: String(job.error).slice(0, 60) }) : "";
        return el("tr", { dataset: { jobId: job.id, status } },
          el("td", { class: "num", text: job.created_at ? new Date(job.created_at).toLocaleString() : "" }),
          el("td", { text: job.dataset || "" }),
          el("td", { text: job.format || "" }),
          el("td", { text: job.algorithm || "" }),
          el("td", {}, el("span", { class: "badge " + (STATUS[status] || ""), text: status }), progress),
          el("td", { class: "num", text: job.row_count !== null && job.row_count !== undefined ? fmtNumber(job.row_count) : "" }),
          el("td", { class: "num", text: job.size_bytes ? fmtBytes(job.size_bytes) : "" }),
          el("td", {}, download));
      }),
    );
    const empty = $("export-empty");
    empty.classList.toggle("hidden", jobs.length > 0 || !exportsAvailable);
  }

  async function loadExports() {
    const result = await api("GET", "/api/exports/");
    if (!result.ok) {
      exportsAvailable = false;
      exportForm.querySelectorAll("button, input, select").forEach((node) => { node.disabled = true; });
      setMessage("export-message", result.status === 404 ? "Exports are not available on this server yet." : `Exports could not be loaded (HTTP ${result.status}).`, "bad");
      renderExports();
      return;
    }
    const items = Array.isArray(result.body) ? result.body : (result.body && result.body.results) || [];
    exportJobs.clear();
    items.forEach((job) => exportJobs.set(String(job.id), job));
    renderExports();
  }

  function updateJob(job) {
    if (!job || job.id === undefined) return;
    const key = String(job.id);
    if (!exportJobs.has(key)) { loadExports(); return; }
    Object.assign(exportJobs.get(key), job);
    renderExports();
  }

  async function createExport(event) {
    event.preventDefault();
    if (!exportsAvailable) return;
    const body = {};
    for (const input of exportForm.querySelectorAll("select[name], input[name]")) {
      const value = input.value.trim();
      const name = input.name;
      if (value) body[name] = value;
    }
    showFieldErrors(exportForm, {});
    setMessage("export-message", "Queuing…", "");
    const result = await api("POST", "/api/exports/", body);
    if (result.ok) {
      exportForm.elements.passphrase.value = "";
      if (result.body && result.body.id !== undefined) exportJobs.set(String(result.body.id), result.body);
      renderExports();
      setMessage("export-message", "Export queued", "ok");
    } else {
      showFieldErrors(exportForm, fieldErrors(result.body));
      setMessage("export-message", (result.body && result.body.detail) || `Failed (HTTP ${result.status})`, "bad");
    }
  }

  // --- periodic status (counters the socket does not carry) ------------------------------
  async function refreshStatus() {
    const result = await api("GET", "/api/status");
    if (!result.ok || !result.body) return;
    for (const s of result.body.sensors || []) mergeSensor(s.sensor, s);
    if (typeof result.body.anomalies_last_hour === "number") {
      anomaliesLastHour = result.body.anomalies_last_hour;
      anomalyCount = 0; // the server's count already includes what arrived live
    }
    renderCaptureState();
    renderKpis();
  }

  // --- the WebSocket, with reconnect backoff --------------------------------------------
  const socket = {
    ws: null,
    nextId: 1,
    pending: new Map(),
    backoff: 1000,
    timer: null,

    url() {
      return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + "/ws/monitor/";
    },

    status(state, text) {
      const badge = $("ws-status");
      badge.dataset.state = state;
      badge.className = "badge " + ({ open: "ok", connecting: "warn", closed: "bad" }[state] || "");
      badge.textContent = text;
    },

    connect() {
      clearTimeout(this.timer);
      this.status("connecting", "connecting…");
      const ws = new WebSocket(this.url());
      this.ws = ws;
      ws.onopen = () => { this.status("open", "live"); };
      ws.onmessage = (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch (error) { return; }
        if (message.id !== undefined && this.pending.has(message.id)) {
          const callback = this.pending.get(message.id);
          this.pending.delete(message.id);
          callback(message);
        }
        handle(message);
      };
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.pending.clear();
        if (event.code === 4401) {
          this.status("closed", "signed out");
          goToLogin();
          return;
        }
        if (event.code === 4403) { // the account has no role (any more): the page says what to do
          this.status("closed", "no role");
          window.location.reload();
          return;
        }
        const delay = Math.min(30000, this.backoff) * (0.8 + Math.random() * 0.4);
        this.backoff = Math.min(30000, this.backoff * 2);
        this.status("closed", `reconnecting in ${Math.ceil(delay / 1000)} s`);
        this.timer = setTimeout(() => this.connect(), delay);
      };
    },

    request(message, callback) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      const id = this.nextId++;
      if (callback) this.pending.set(id, callback);
      this.ws.send(JSON.stringify(Object.assign({ id }, message)));
      return true;
    },
  };

  function handle(message) {
    switch (message.type) {
      case "connected":
        socket.backoff = 1000;
        if (Array.isArray(message.permissions)) {
          permissions = new Set(message.permissions);
          IN.setPermissions(message.permissions);
          applyPermissions();
        }
        if (message.server_time) IN.setServerTime(message.server_time);
        allowedStreams = Array.isArray(message.streams) ? message.streams : [];
        subscribeStreams();
        sensors.clear();
        for (const s of message.capture || []) mergeSensor(s.sensor, s);
        if (message.config) { liveConfig = message.config; fillConfig(message.config, true); }
        renderCaptureState();
        renderKpis();
        break;
      case "stats": {
        const ts = Number(message.ts) || Date.now() / 1000;
        latestStats.set(message.sensor, Object.assign({}, message, { ts }));
        const history = mixHistory.get(message.sensor) || [];
        history.push({ protocols: message.protocols, talkers: message.top_talkers });
        for (const [ip, geo] of Object.entries(message.talkers_geo || {})) talkerGeo.set(ip, geo);
        if (talkerGeo.size > 1000) talkerGeo.clear(); // a long session's churn; refilled by the next messages
        while (history.length > MIX_WINDOW) history.shift();
        mixHistory.set(message.sensor, history);
        mergeSensor(message.sensor, { state: message.state, mode: message.mode, alive: true });
        const stats = freshStats();
        const pps = stats.reduce((sum, s) => sum + (s.packets_per_s || 0), 0);
        const bps = stats.reduce((sum, s) => sum + (s.bytes_per_s || 0), 0);
        ppsChart.push(ts, pps);
        bpsChart.push(ts, bps);
        setText("chart-pps-now", fmtNumber(pps, 1));
        setText("chart-bps-now", fmtBytes(bps) + "/s");
        ppsChart.draw();
        bpsChart.draw();
        renderMix();
        renderKpis();
        renderCaptureState();
        break;
      }
      case "packet_captured":
        addPackets(message);
        break;
      case "anomaly_detected":
        addAnomaly(message.anomaly, true);
        renderKpis();
        break;
      case "capture_status": {
        const fields = { state: message.state };
        if (message.mode) fields.mode = message.mode;
        if (message.reason !== undefined) fields.mode_reason = message.reason;
        if (message.interface) fields.interface = message.interface;
        if (["running", "starting"].includes(message.state)) fields.alive = true;
        if (message.sensor === "*") {
          for (const name of sensors.keys()) mergeSensor(name, fields);
        } else {
          mergeSensor(message.sensor, fields);
        }
        const who = message.requested_by ? ` (by ${message.requested_by})` : "";
        const target = message.sensor === "*" ? "all sensors" : message.sensor;
        logCaptureEvent(`${target}: ${message.state}${message.mode ? ", " + message.mode : ""}${who}`);
        setMessage("capture-message", `${target}: ${message.state}`, message.state === "running" ? "ok" : "");
        renderCaptureState();
        break;
      }
      case "config_updated":
        if (message.config) { liveConfig = message.config; fillConfig(message.config, true); }
        // The broadcast of this page's own save can arrive after the POST's answer: keep "Saved".
        if (Date.now() - configSavedAt > CONFIG_ECHO_MS) {
          setMessage("config-message", message.changed === false ? "No change" : "Configuration updated", "ok");
        }
        break;
      case "incident_opened":
      case "incident_updated":
        takeIncident(message.incident);
        break;
      case "incident_status":
        takeIncident(message.incident);
        break;
      case "export_progress":
      case "export_ready":
        updateJob(message.job);
        break;
      case "error":
        if (message.id === undefined) console.warn("netmon websocket:", message.error);
        break;
      default:
        break;
    }
  }

  // --- wiring ---------------------------------------------------------------------------
  $("capture-start").addEventListener("click", () => captureCommand("start_capture"));
  $("capture-stop").addEventListener("click", () => captureCommand("stop_capture"));
  configForm.addEventListener("submit", saveConfig);
  configForm.addEventListener("input", (event) => { if (event.target.name) event.target.dataset.dirty = "1"; });
  $("config-reset").addEventListener("click", () => {
    showFieldErrors(configForm, {});
    if (configLoaded) fillConfig(liveConfig || configLoaded, false);
    setMessage("config-message", "", "");
  });
  exportForm.addEventListener("submit", createExport);
  exportForm.elements.algorithm.addEventListener("change", showAlgorithmNote);

  // Keep the time axis moving and stale KPIs honest even when no stats arrive.
  setInterval(() => { ppsChart.draw(); bpsChart.draw(); renderKpis(); }, 1000);
  setInterval(refreshStatus, STATUS_REFRESH_MS);
  setInterval(refreshActivity, 5000);
  rawFeed.addEventListener("toggle", () => { if (socket.ws && socket.ws.readyState === WebSocket.OPEN) subscribeStreams(); });
  rawFeed.querySelectorAll("[data-tab]").forEach((tab) => tab.addEventListener("click", () => showTab(tab.dataset.tab)));

  applyPermissions();
  socket.connect();
  // Only what this user may read: a refused request would only show as an error.
  if (can("capture.view_monitorconfig")) { loadConfig(); loadInterfaces(); }
  if (can("exports.add_exportjob")) loadExportOptions();
  if (can("exports.view_exportjob")) loadExports();
  if (can("detection.view_anomaly")) loadRecentAnomalies();
  if (can("detection.view_incident")) loadIncidents();
  else $("incident-list").classList.add("hidden");
  refreshStatus();
  renderKpis();
  renderCaptureState();
})();
