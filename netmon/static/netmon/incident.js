/*
 * The incident page (/incidents/<id>/): its header and actions, its packet-rate timeline (drawn on
 * a <canvas> here, no dependencies), its sources and targets, and its anomalies and packets a
 * page at a time, all from the JSON API; the WebSocket's incident_updated keeps it current.
 */
(function () {
  "use strict";

  const IN = window.NetmonIncidents;
  const { el, api } = IN;
  const $ = (id) => document.getElementById(id);
  const ID = Number(document.body.dataset.incident);
  const PAGE = 50;
  const TIMELINE_REFRESH_MS = 5000; // at most one timeline reload this often while it grows

  let incident = null;
  let timeline = null;

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  // --- header -------------------------------------------------------------------------------
  function say(text, kind) {
    const node = $("head-actions").querySelector(".incident-say");
    if (!node) return;
    node.textContent = text || "";
    node.className = "incident-say form-message" + (kind ? " " + kind : "");
  }

  function renderHead(changed) {
    incident = Object.assign(incident || {}, changed);
    document.title = `Netmon · ${IN.kindTitle(incident.kind)} from ${(incident.sources || []).join(", ")}`;
    $("head-severity").replaceChildren(IN.severityBadge(incident));
    setText("head-kind", IN.kindTitle(incident.kind));
    $("head-status").replaceChildren(IN.statusBadge(incident));
    setText("head-times", IN.timesText(incident));
    const hosts = IN.hostsText(incident);
    $("head-hosts").replaceChildren(el("span", { class: "sources", text: hosts.sources }), " → ", hosts.targets);
    const when = (ts) => (ts ? IN.fmtDateTime(IN.toDate(ts)) : "–");
    setText("fact-first", when(incident.first_seen));
    setText("fact-last", when(incident.last_seen));
    const opened = IN.toDate(incident.opened_at);
    const delay = opened ? ` (after ${IN.fmtDuration((opened - IN.toDate(incident.first_seen)) / 1000)})` : "";
    setText("fact-opened", opened ? when(incident.opened_at) + delay : "–");
    setText("fact-anomalies", IN.fmtCount(incident.anomaly_count));
    setText("fact-packets", IN.fmtCount(incident.packet_count));
    setText("fact-peak", Number(incident.peak_score || 0).toFixed(3));
    setText("fact-community", incident.community_id || "–");
    setText("fact-changed", incident.status_changed_by
      ? `${IN.statusText(incident.status)} by ${incident.status_changed_by}, ${when(incident.status_changed_at)}` : "–");
    setText("head-explanation", incident.explanation || "No explanation recorded.");
    const message = $("head-actions").querySelector(".incident-say");
    const kept = message ? [message.textContent, message.className] : ["", "incident-say form-message"];
    $("head-actions").replaceChildren(
      IN.actionBar(incident, renderHead, say),
      ...pcapButton(),
      el("span", { class: kept[1], text: kept[0] }));
    renderHosts();
  }

  // "Download pcap": only while capture still keeps its frames (the evidence ring) and for the
  // roles that may download them (the analyst's and the admin's).
  function pcapButton() {
    if (!incident.pcap_kept || !incident.pcap_url || !IN.can("capture.download_evidence")) return [];
    return [el("a", {
      class: "button quiet", href: incident.pcap_url, download: `netmon-incident-${ID}.pcap`,
      "data-testid": "incident-pcap", title: "the frames of its packets, for Wireshark", text: "Download pcap",
    })];
  }

  function renderHosts() {
    const geo = incident.geo || {};
    $("source-list").replaceChildren(...(incident.sources || []).map((s) => el("li", {}, s, " ", IN.geoTag(geo[s]))));
    $("target-list").replaceChildren(...(incident.targets || []).map((t) => el("li", {}, t, " ", IN.geoTag(geo[IN.splitTarget(t)[0]]))));
    const more = Number(incident.targets_more || 0);
    setText("targets-hint", `${IN.fmtCount((incident.targets || []).length)} listed${more ? `, and ${IN.fmtCount(more)} more not listed` : ""}`);
  }

  async function loadIncident() {
    const result = await api("GET", `/api/incidents/${ID}/`);
    if (!result.ok) { setText("head-explanation", `The incident could not be loaded: ${IN.problem(result)}`); return; }
    renderHead(result.body);
  }

  // --- timeline -----------------------------------------------------------------------------
  // A round step for about four grid lines over [0, value] (1, 2 or 5 times a power of ten).
  function niceStep(value) {
    if (value <= 0) return 1;
    const rough = value / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(rough)));
    for (const step of [1, 2, 5, 10]) if (rough <= step * magnitude) return Math.max(step * magnitude, 1);
    return 10 * magnitude;
  }

  function fmtRate(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (value >= 1e4) return (value / 1e3).toFixed(0) + "k";
    if (value >= 1e3) return (value / 1e3).toFixed(1) + "k";
    return value >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(1);
  }

  function drawTimeline() {
    const canvas = $("timeline-chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    const buckets = (timeline && timeline.buckets) || [];
    canvas.dataset.buckets = String(buckets.length);
    if (!buckets.length) return;
    const width_s = timeline.bucket_seconds;
    const rates = buckets.map((b) => b.packets / width_s);
    const step = niceStep(Math.max(...rates) * 1.05);
    const lines = Math.max(1, Math.ceil((Math.max(...rates) * 1.05) / step));
    const max = step * lines;
    canvas.dataset.peak = String(Math.max(...rates));
    const left = 52, right = 10, top = 8, bottom = 34;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const y = (v) => top + plotH - (v / max) * plotH;
    const slot = plotW / buckets.length;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= lines; i += 1) {
      const value = step * i;
      const gy = Math.round(y(value)) + 0.5;
      ctx.strokeStyle = i === 0 ? "#c9d2dc" : "#edf0f4";
      ctx.beginPath(); ctx.moveTo(left, gy); ctx.lineTo(width - right, gy); ctx.stroke();
      ctx.fillStyle = "#5a6676";
      ctx.fillText(fmtRate(value) + "/s", left - 6, gy);
    }
    const bar = Math.max(1, slot - (slot > 6 ? 2 : 0));
    buckets.forEach((b, i) => {
      const x = left + i * slot + (slot - bar) / 2;
      // the context (every packet of its hosts) pale, what its sources sent in front of it
      ctx.fillStyle = "#93b4ee";
      ctx.fillRect(x, y(b.packets / width_s), bar, top + plotH - y(b.packets / width_s));
      if (b.from_sources) {
        ctx.fillStyle = "#b42323";
        ctx.fillRect(x, y(b.from_sources / width_s), bar, top + plotH - y(b.from_sources / width_s));
      }
      if (b.anomalies) {
        ctx.fillStyle = "#e0a54a";
        ctx.fillRect(x, top + plotH + 3, bar, 5);
      }
    });
    // time labels: about one per 110 px, at bucket starts
    ctx.fillStyle = "#5a6676";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const every = Math.max(1, Math.ceil(buckets.length / Math.max(1, Math.floor(plotW / 110))));
    for (let i = 0; i < buckets.length; i += every) {
      const x = Math.min(Math.max(left + i * slot + slot / 2, left + 24), width - right - 24);
      ctx.fillText(IN.fmtClock(IN.toDate(buckets[i].start)), x, top + plotH + 12);
    }
  }

  let timelineLoadedAt = 0;
  let timelineTimer = null;

  async function loadTimeline() {
    timelineTimer = null;
    timelineLoadedAt = Date.now();
    const result = await api("GET", `/api/incidents/${ID}/timeline/`);
    if (!result.ok) { $("timeline-message").textContent = `The timeline could not be loaded: ${IN.problem(result)}`; return; }
    timeline = result.body;
    const peak = timeline.peak_packets_per_second;
    setText("timeline-hint", `${IN.fmtCount(timeline.packets)} packets of its hosts; buckets of ${IN.fmtDuration(timeline.bucket_seconds)}; peak ${fmtRate(peak)} packets/s`);
    $("timeline-message").textContent = timeline.packets ? "" : "No stored packets of its hosts in this time (they may have been pruned).";
    drawTimeline();
  }

  function timelineLater() {
    if (timelineTimer) return;
    const wait = Math.max(0, timelineLoadedAt + TIMELINE_REFRESH_MS - Date.now());
    timelineTimer = setTimeout(loadTimeline, wait);
  }

  // --- anomalies and packets, a page at a time ---------------------------------------------
  function pager(node, offset, count, go) {
    const last = Math.min(offset + PAGE, count);
    const prev = el("button", { type: "button", text: "← Previous", disabled: offset <= 0 });
    const next = el("button", { type: "button", text: "Next →", disabled: last >= count });
    prev.addEventListener("click", () => go(Math.max(0, offset - PAGE)));
    next.addEventListener("click", () => go(offset + PAGE));
    node.replaceChildren(prev, next,
      el("span", { text: count ? `${IN.fmtCount(offset + 1)}–${IN.fmtCount(last)} of ${IN.fmtCount(count)}` : "none" }));
  }

  async function loadAnomalies(offset) {
    const order = $("anomaly-order").value;
    const result = await api("GET", `/api/incidents/${ID}/anomalies/?order=${encodeURIComponent(order)}&limit=${PAGE}&offset=${offset}`);
    if (!result.ok) { $("anomaly-table").replaceChildren(el("div", { class: "form-message bad", text: IN.problem(result) })); return; }
    $("anomaly-table").replaceChildren(IN.table(IN.ANOMALY_HEADERS, IN.anomalyRows(IN.items(result.body)), "anomaly-rows"));
    pager($("anomaly-pager"), offset, result.body.count || 0, loadAnomalies);
  }

  async function loadPackets(offset) {
    if (!incident || !incident.packets_url) return;
    const result = await api("GET", `${incident.packets_url}&limit=${PAGE}&offset=${offset}`);
    if (!result.ok) { $("packet-table").replaceChildren(el("div", { class: "form-message bad", text: IN.problem(result) })); return; }
    $("packet-table").replaceChildren(IN.table(IN.PACKET_HEADERS, IN.packetRows(IN.items(result.body)), "packet-rows"));
    pager($("packet-pager"), offset, result.body.count || 0, loadPackets);
  }

  function showTab(name) {
    document.querySelectorAll("#incident-evidence [data-tab]").forEach((tab) => {
      const chosen = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", chosen ? "true" : "false");
      $(tab.dataset.tab).hidden = !chosen;
    });
  }

  // --- live: this incident's events ----------------------------------------------------------
  function status(state, text) {
    const badge = $("ws-status");
    badge.dataset.state = state;
    badge.className = "badge " + ({ open: "ok", connecting: "warn", closed: "bad" }[state] || "");
    badge.textContent = text;
  }

  let backoff = 1000;

  function connect() {
    status("connecting", "connecting…");
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/monitor/");
    ws.onopen = () => status("open", "live");
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      if (message.type === "connected") {
        backoff = 1000;
        if (message.server_time) IN.setServerTime(message.server_time);
        if (Array.isArray(message.permissions)) IN.setPermissions(message.permissions);
        // Only this page's streams (the body's data-streams), of those the user may see.
        const wanted = (document.body.dataset.streams || "").split(" ");
        const streams = (message.streams || []).filter((s) => wanted.includes(s));
        ws.send(JSON.stringify({ type: "subscribe", streams, id: 1 }));
        if (incident) renderHead({});
      } else if ((message.type === "incident_updated" || message.type === "incident_opened") && message.incident && message.incident.id === ID) {
        const grew = incident && message.incident.last_seen !== incident.last_seen;
        renderHead(message.incident);
        if (grew) { timelineLater(); }
      }
    };
    ws.onclose = (event) => {
      if (event.code === 4401) { status("closed", "signed out"); IN.goToLogin(); return; }
      if (event.code === 4403) { status("closed", "no role"); location.reload(); return; }
      const delay = Math.min(30000, backoff) * (0.8 + Math.random() * 0.4);
      backoff = Math.min(30000, backoff * 2);
      status("closed", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      setTimeout(connect, delay);
    };
  }

  // --- wiring -------------------------------------------------------------------------------
  document.querySelectorAll("#incident-evidence [data-tab]").forEach((tab) => tab.addEventListener("click", () => {
    showTab(tab.dataset.tab);
    if (tab.dataset.tab === "evidence-packets" && !$("packet-table").firstChild) loadPackets(0);
  }));
  $("anomaly-order").addEventListener("change", () => loadAnomalies(0));
  new ResizeObserver(drawTimeline).observe($("timeline-chart"));
  setInterval(() => { if (incident) setText("head-times", IN.timesText(incident)); }, 5000);

  (async () => {
    await loadIncident();
    loadTimeline();
    if (IN.can("detection.view_anomaly")) loadAnomalies(0);
    loadPackets(0);
  })();
  connect();
})();
