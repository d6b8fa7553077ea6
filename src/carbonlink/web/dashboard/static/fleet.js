// The whole fleet: total CO2e rate and today's total, plants ranked by today's CO2e with
// a trend line each, and the readings refused by reason. Every figure is a plant's figure
// from the overview's stream (the same numbers as its card) summed, or the API's totals:
// one number per fact.
import { ACCENT, PREFIX, fmt, listen, loadLayout, localTime, renderNav } from "./common.js";

const TREND_WINDOW = "15m";
const TREND_WINDOW_MS = 15 * 60 * 1000;
const TREND_SPAN_MS = 6 * 3600 * 1000;
const TREND_EVERY_MS = 5000;  // the trend is re-read at most this often
const SPARK = { width: 140, height: 28 };
const SVG = "http://www.w3.org/2000/svg";

let trends = new Map();  // plant -> [[start_ms, t CO2e/h], ...]
let trendsRead = 0;
let latest = null;

const sum = (values) => values.reduce((total, v) => total + (v ?? 0), 0);

function set(id, text) {
  document.querySelector(`[data-field="${id}"]`).textContent = text;
}

function showTotals(rows) {
  const known = (key) => rows.filter((r) => r[key] !== null && r[key] !== undefined);
  const rates = known("rate_tco2e_h");
  set("rate", rates.length ? fmt(sum(rates.map((r) => r.rate_tco2e_h)), 1) : "\u2013");
  set("today", fmt(sum(rows.map((r) => r.today_tco2e)), 1));
  set("today-range", `${rows.length} plants, each on its local day`);
  set("readings", fmt(sum(rows.map((r) => r.readings_today)), 0));
  set("estimated", `${fmt(sum(rows.map((r) => r.estimated_today)), 0)} estimated by the meters`);
  const rejected = known("rejected");
  set("rejected", rejected.length ? fmt(sum(rejected.map((r) => r.rejected)), 0) : "\u2013");
}

// A trend line as inline SVG: no axes, scaled from zero to the plant's own peak.
function sparkline(points) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", SPARK.width);
  svg.setAttribute("height", SPARK.height);
  svg.setAttribute("class", "spark");
  if (points.length < 2) return svg;
  const t0 = points[0][0];
  const span = Math.max(points[points.length - 1][0] - t0, 1);
  const peak = Math.max(...points.map(([, y]) => y), 1e-9);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([t, y]) =>
    `${((t - t0) / span * (SPARK.width - 2) + 1).toFixed(1)},` +
    `${(SPARK.height - 1 - y / peak * (SPARK.height - 2)).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", ACCENT);
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  const title = document.createElementNS(SVG, "title");
  title.textContent = `peak ${fmt(peak, 1)} t CO\u2082e/h`;
  svg.append(title);
  return svg;
}

function showRanking(rows) {
  const fleet = sum(rows.map((r) => r.today_tco2e));
  const ranked = [...rows].sort((a, b) => (b.today_tco2e ?? 0) - (a.today_tco2e ?? 0));
  document.querySelector("#ranking tbody").replaceChildren(...ranked.map((row, i) => {
    const tr = document.createElement("tr");
    tr.dataset.plant = row.plant;
    const td = (text, field) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (field) cell.dataset.field = field;
      tr.append(cell);
      return cell;
    };
    td(String(i + 1));
    const name = td("");
    const a = document.createElement("a");
    a.href = `${PREFIX}/plants/${row.plant}`;
    a.textContent = row.name;
    a.title = `${row.plant} \u00b7 newest data ${localTime(row.newest_ms, row.timezone)} (${row.timezone})`;
    name.append(a);
    td(fmt(row.today_tco2e, 1), "today");
    td(fleet > 0 && row.today_tco2e !== null ? `${fmt(100 * row.today_tco2e / fleet, 1)}%` : "\u2013",
      "share");
    td(fmt(row.rate_tco2e_h, 1), "rate");
    td("", "trend").append(sparkline(trends.get(row.plant) ?? []));
    td(row.rejected === null ? "\u2013" : fmt(row.rejected, 0), "rejected");
    return tr;
  }));
}

function showRefusals(quality) {
  const empty = document.getElementById("refusals-empty");
  const reasons = Object.entries(quality.rejected ?? {}).sort((a, b) => b[1] - a[1]);
  document.querySelector("#refusals tbody").replaceChildren(...reasons.map(([reason, n]) => {
    const tr = document.createElement("tr");
    for (const text of [reason.replaceAll("_", " "), fmt(n, 0)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
  empty.hidden = reasons.length > 0;
  empty.textContent = quality.available
    ? "No reading has been refused." : "The ingestion counters are not available from this server.";
}

// The trend of every plant in one request: /api/v1/totals split by plant into windows.
// Only whole windows: none still filling after a plant's newest data, and not the first
// one when the plant's data began inside the span (it would dip for want of readings).
async function readTrends(nowMs, rows) {
  trendsRead = Date.now();
  const url = `/api/v1/totals?by=plant&window=${TREND_WINDOW}&start=${nowMs - TREND_SPAN_MS}`;
  const response = await fetch(url);
  if (!response.ok) return;
  const newest = new Map(rows.map((r) => [r.plant, r.newest_ms ?? nowMs]));
  const next = new Map();
  for (const row of await response.json()) {
    const start = Date.parse(row.window_start);
    if (start + TREND_WINDOW_MS > (newest.get(row.plant) ?? nowMs)) continue;
    if (!next.has(row.plant)) next.set(row.plant, []);
    next.get(row.plant).push([start, row.co2e_t * 3600000 / TREND_WINDOW_MS]);
  }
  for (const points of next.values()) {
    if (points.length > 2 && points[0][0] > nowMs - TREND_SPAN_MS + TREND_WINDOW_MS) points.shift();
  }
  trends = next;
  if (latest) showRanking(latest.plants);
}

const plants = await loadLayout();
renderNav(plants, "fleet");
listen(`${PREFIX}/events`, {
  overview: (data) => {
    latest = data;
    showTotals(data.plants);
    showRanking(data.plants);
    showRefusals(data.quality);
    if (Date.now() - trendsRead > TREND_EVERY_MS) readTrends(data.now_ms, data.plants);
  },
});
