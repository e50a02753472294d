// The console's little script: parts of pages that refresh themselves, the live rates chart,
// the analytics charts and the event tail (server-sent events). No credential is ever here:
// the browser sends the session cookie, which this script cannot read (HttpOnly).
"use strict";

(function () {
  // Parts marked data-refresh="MS" are fetched again and swapped in place, while the tab is visible.
  function refresh(el) {
    const every = parseInt(el.dataset.refresh, 10);
    setInterval(async function () {
      if (document.hidden) return;
      if (el.contains(document.activeElement) && document.activeElement !== document.body) return;
      if (el.querySelector("details[open]")) return; // someone is reading
      try {
        const answer = await fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } });
        if (!answer.ok || answer.redirected) return;
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.getElementById(el.id);
        if (fresh) el.innerHTML = fresh.innerHTML;
      } catch (e) { /* the next round tries again */ }
    }, every);
  }

  const palette = ["#2f6fdf", "#1a7f37", "#c62828", "#8e44ad", "#b26a00", "#5f6b7a"];

  function chartWidth(el) { return Math.max(320, el.clientWidth - 16); }

  function ratesChart(el) {
    const nowCalls = document.getElementById("now-calls");
    const inFlight = document.getElementById("in-flight");
    const fail = document.getElementById("rates-error");
    let plot = null;
    async function load() {
      try {
        const answer = await fetch(el.dataset.rates, { credentials: "same-origin" });
        const body = await answer.json();
        if (body.error) { fail.hidden = false; fail.textContent = body.error.code + ": " + body.error.text; return; }
        fail.hidden = true;
        nowCalls.textContent = body.now_calls;
        inFlight.textContent = body.in_flight;
        const data = [body.t, body.calls, body.failed, body.p99_ms];
        if (!plot) {
          plot = new uPlot({
            width: chartWidth(el), height: 220,
            series: [{}, { label: "calls/s", stroke: palette[0], width: 2 },
                     { label: "failed/s", stroke: palette[2], width: 2 },
                     { label: "p99 ms", stroke: palette[4], scale: "ms" }],
            axes: [{}, { label: "per s" }, { side: 1, scale: "ms", label: "ms", grid: { show: false } }],
          }, data, el);
        } else {
          plot.setData(data);
        }
      } catch (e) { fail.hidden = false; fail.textContent = "the console did not answer: " + e; }
    }
    load();
    setInterval(function () { if (!document.hidden) load(); }, 10000);
  }

  function seriesChart(el) {
    const data = JSON.parse(document.getElementById(el.dataset.series).textContent);
    const names = el.dataset.names.split(",");
    const series = [{}].concat(names.map(function (n, i) {
      return { label: n.replace(/_/g, " "), stroke: palette[i % palette.length], width: 2, show: n !== "turns" };
    }));
    new uPlot({ width: chartWidth(el), height: 240, series: series }, [data.t].concat(names.map(function (n) { return data[n]; })), el);
  }

  function tail(table) {
    const body = table.querySelector("tbody");
    const status = document.getElementById("tail-status");
    const failed = document.getElementById("tail-error");
    const source = new EventSource(table.dataset.stream);
    source.onopen = function () { status.textContent = "following"; };
    source.onmessage = function (message) {
      const e = JSON.parse(message.data);
      const row = document.createElement("tr");
      row.className = "fresh";
      row.dataset.type = e.type;
      for (const value of [e.at, e.type, e.tenant, e.conversation, e.shard, e.summary]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    };
    source.addEventListener("failed", function (message) {
      const said = JSON.parse(message.data);
      failed.hidden = false;
      failed.textContent = said.code + ": " + said.text;
      status.textContent = "stopped";
      source.close();
    });
    source.onerror = function () { status.textContent = "reconnecting…"; };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-rates]").forEach(ratesChart);
    document.querySelectorAll("[data-series]").forEach(seriesChart);
    document.querySelectorAll("table[data-stream]").forEach(tail);
  });
})();
