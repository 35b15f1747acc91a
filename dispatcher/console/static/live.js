// The live view: read /console/live/data every 2 s, turn counters into rates, draw the
// last 5 minutes as inline SVG lines. No libraries; nothing is kept but this page's memory.
"use strict";
(() => {
  const KEEP = 150; // readings: 5 minutes at one every 2 s
  const SPAN = 30; // the x axis spans at least a minute, then slides
  const PERIOD = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0550ae", "#bc4c00", "#116329", "#8250df", "#a40e26", "#57606a"];
  const status = document.getElementById("live-status");
  const figures = Array.from(document.querySelectorAll("figure.chart"));
  const lines = {}; // series -> line name -> values (null where unknown)
  let previous = null;

  function record(series, name, value) {
    const byName = (lines[series] = lines[series] || {});
    const values = (byName[name] = byName[name] || []);
    values.push(value);
    if (values.length > KEEP) values.shift();
  }

  function roundUp(value) {
    if (value <= 0) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function format(value) {
    if (value === null || value === undefined) return "–";
    if (Math.abs(value) >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString();
    return value.toFixed(1);
  }

  function draw(figure) {
    const series = figure.dataset.series;
    const byName = lines[series] || {};
    const names = Object.keys(byName).sort();
    const svg = figure.querySelector("svg");
    let peak = 0;
    names.forEach((name) => byName[name].forEach((v) => { if (v !== null && v > peak) peak = v; }));
    const top = roundUp(peak);
    const longest = Math.max(0, ...names.map((name) => byName[name].length));
    const span = Math.min(KEEP, Math.max(SPAN, longest));
    const drawn = names.map((name, i) => {
      const values = byName[name];
      const offset = span - values.length;
      const points = values
        .map((v, j) => `${((offset + j) * 300) / (span - 1)},${100 - ((v || 0) / top) * 100}`)
        .join(" ");
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("stroke", COLORS[i % COLORS.length]);
      return line;
    });
    svg.replaceChildren(...drawn);
    const first = byName[names[0]] || [];
    const latest = names.reduce((sum, n) => sum + (byName[n][byName[n].length - 1] || 0), 0);
    figure.dataset.readings = String(first.length);
    figure.dataset.latest = String(latest);
    figure.dataset.peak = String(peak);
    figure.querySelector("output.now").textContent = first.length ? format(latest) : "–";
    const label = figure.querySelector("figcaption").firstChild.textContent.trim();
    svg.setAttribute("aria-label", `${label}: now ${format(latest)}, peak ${format(peak)}, scale 0 to ${format(top)}, last 5 minutes`);
    figure.querySelector(".axis .from").textContent = `−${Math.round(((span - 1) * PERIOD) / 60000)} min`;
    figure.querySelector(".axis .scale").textContent = `top ${format(top)}`;
    const legend = figure.querySelector(".legend");
    if (legend) {
      legend.replaceChildren(...names.flatMap((name, i) => {
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.setAttribute("aria-hidden", "true");
        swatch.dataset.color = COLORS[i % COLORS.length];
        swatch.style.background = COLORS[i % COLORS.length];
        return [swatch, name];
      }));
    }
  }

  function cells(row, values) {
    row.replaceChildren(...values.map((value) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      return cell;
    }));
    return row;
  }

  function ago(seconds) {
    if (seconds < 2) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  function tables(data) {
    document.querySelector("#queues tbody").replaceChildren(...data.queues.map((q) =>
      cells(document.createElement("tr"), [q.name, format(q.backlog),
        q.oldestAge === null ? "–" : `${format(q.oldestAge)} s`])));
    const workers = data.workers.map((w) =>
      cells(document.createElement("tr"), [w.name, String(w.pid ?? ""), String(w.concurrency ?? ""),
        format(w.processed), ago(w.seenAgo)]));
    if (!workers.length) {
      workers.push(cells(document.createElement("tr"), ["No worker has answered yet.", "", "", "", ""]));
    }
    document.querySelector("#workers tbody").replaceChildren(...workers);
  }

  function take(data) {
    const seconds = previous ? data.at - previous.at : 0;
    for (const name of ["delivered", "retries", "throttled"]) {
      const now = data.counters[name];
      const rate = previous && seconds > 0 ? Math.max(0, now - previous.counters[name]) / seconds : null;
      record(name, name, rate);
      const figure = figures.find((f) => f.dataset.series === name);
      if (figure) figure.querySelector(".count").textContent = format(now);
    }
    record("deadLetters", "dead letters", data.deadLetters);
    const dead = figures.find((f) => f.dataset.series === "deadLetters");
    if (dead) dead.querySelector(".count").textContent = format(data.counters.dead);
    for (const q of data.queues) {
      record("backlog", q.name, q.backlog);
      record("oldestAge", q.name, q.oldestAge);
    }
    previous = data;
    figures.forEach(draw);
    tables(data);
    const clock = new Date(data.at * 1000).toLocaleTimeString([], { timeZone: status.dataset.zone, hour12: false });
    status.textContent = `Updated ${clock} (${status.dataset.zone}).`;
    status.dataset.updated = String(data.at);
  }

  async function poll() {
    try {
      const response = await fetch(status.dataset.source, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        status.textContent = "Your session has ended: reload the page to sign in again.";
        return; // no more polling without a session
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      take(await response.json());
    } catch (error) {
      status.textContent = `Could not read the figures (${error.message}); trying again.`;
    }
    setTimeout(poll, PERIOD);
  }

  poll();
})();
