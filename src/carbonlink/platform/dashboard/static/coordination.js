// Coordination: the active stage, live policy comparison, transfers, the ledger and
// what each party knows. Polls the read-only coordination API; every value is written
// with textContent (policy names come from user files).
import { fmt, loadLayout, renderNav } from "./common.js";

const API = "/api/v1/coordination";
const REFRESH_MS = 2000;
const LEDGER_ROWS = 15;
const VERIFY_LINES_SHOWN = 10;
const STAGES = { 1: "primary neutrality", 2: "intermediate dependence", 3: "advanced symbiosis" };
const PARTY_NAMES = { M: "firm", P: "platform", G: "government" };
const COLUMNS = [
  ["policy", "policy", null],
  ["emissions_t", "emitted t", 1],
  ["abatement_t", "abated t", 1],
  ["abatement_share", "abated", "%"],
  ["payoff_M", "firm", 1],
  ["payoff_P", "platform", 1],
  ["payoff_G", "govt", 1],
  ["subsidy", "subsidy", 1],
  ["public_cost_per_t", "public/t", 3],
];

async function get(path) {
  const response = await fetch(`${API}${path}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail ?? response.statusText);
  return body;
}

function cell(row, text, className) {
  const td = document.createElement(row.parentElement?.tagName === "THEAD" ? "th" : "td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
}

function table(id, headers, rows) {
  const el = document.getElementById(id);
  const head = document.createElement("tr");
  el.tHead.replaceChildren(head);
  headers.forEach((h) => cell(head, h));
  el.tBodies[0].replaceChildren(...rows.map((values) => {
    const tr = document.createElement("tr");
    values.forEach((v) => (Array.isArray(v) ? cell(tr, v[0], v[1]) : cell(tr, v)));
    return tr;
  }));
}

const number = (value, digits) => {
  if (value === null || value === undefined) return "\u2013";
  if (digits === "%") return `${fmt(100 * value, 1)}%`;
  return fmt(value, digits);
};
const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) + "Z" : "\u2013");

function showStatus(status) {
  const stage = document.getElementById("stage");
  stage.textContent = `stage ${status.stage}: ${STAGES[status.stage]}`;
  stage.dataset.stage = status.stage;
  document.getElementById("subtitle").firstChild.textContent =
    `Policy ${status.policy}${status.description ? ` (${status.description})` : ""}: ` +
    `${status.periods} periods of ${fmt(status.period_s / 60, 0)} min since ${time(status.run_start_ms)}, ` +
    `updated ${time(status.updated_ms)}. `;
  document.getElementById("ledger-head").textContent =
    `${status.ledger.reports} reports; head ${status.ledger.head.slice(0, 16)}\u2026 ` +
    `(${status.pending_reports} not yet due under the sharing rules)`;
  table("directives", ["plant", "stage", "E_M", "E_P", "\u03c3", "\u03b8_M", "\u03b8_P"],
    Object.entries(status.directives).map(([plant, d]) => [
      plant, d.stage, fmt(d.effort_firm, 2), fmt(d.effort_platform, 2), fmt(d.sigma, 2),
      fmt(d.subsidy_rate_firm, 2), fmt(d.subsidy_rate_platform, 2),
    ]));
  const estimates = Object.entries(status.estimates);
  table("estimates", ["plant", "F", "a_M", "a_P", "\u03b4", "X obs", "baseline"],
    estimates.map(([plant, e]) => [
      plant,
      [fmt(e.params.F, 2), e.sources.F ? "estimated" : ""],
      [fmt(e.params.a_M, 3), e.sources.a_M ? "estimated" : ""],
      [fmt(e.params.a_P, 3), e.sources.a_P ? "estimated" : ""],
      [fmt(e.params.delta, 3), e.sources.delta ? "estimated" : ""],
      number(e.x_observed, 2),
      e.baseline ? `R\u00b2 ${fmt(e.baseline.r2, 2)}, CV ${fmt(100 * e.baseline.cv_rmse, 1)}%` : "fitting",
    ]));
  if (!estimates.length) {
    table("estimates", ["the policy uses its parameter file as given"], []);
  }
  const gov = status.government;
  const el = document.getElementById("government");
  const lines = [
    `subsidies paid ${fmt(gov.spent, 2)}` +
      (gov.budget_total === null ? "" : ` of a budget of ${fmt(gov.budget_total, 1)}`) +
      (gov.unpaid_claims ? `; ${fmt(gov.unpaid_claims, 2)} of claims unpaid` : ""),
    ...Object.entries(gov.plants).map(([plant, k]) =>
      `${plant}: ${k.reports} reports (${k.verified_reports} verified), ` +
      `${fmt(k.reported_tco2e, 1)} tCO\u2082e reported up to ${time(k.last_report_end_ms)}` +
      (k.shared_parameters.length ? `; sees ${k.shared_parameters.length} parameters` : "")),
  ];
  el.replaceChildren(...lines.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }));
}

function showComparison(rows) {
  table("comparison", COLUMNS.map(([, title]) => title), rows.map((r) =>
    COLUMNS.map(([key, , digits]) => {
      if (key !== "policy") return number(r[key], digits);
      return [r.active ? `${r.policy} (active)` : r.policy, r.active ? "active" : ""];
    })));
}

function drawPolicies(history) {
  const byPolicy = new Map();
  for (const row of history) {
    if (!byPolicy.has(row.policy)) byPolicy.set(row.policy, { x: [], y: [], active: row.active });
    const series = byPolicy.get(row.policy);
    series.x.push(new Date(row.end_ms));
    series.y.push(row.emissions_t);
  }
  const traces = [...byPolicy].map(([policy, s]) => ({
    name: s.active ? `${policy} (active)` : policy, x: s.x, y: s.y, mode: "lines",
    line: { width: s.active ? 3 : 1.5, dash: s.active ? "solid" : "dot" },
  }));
  Plotly.react("chart-policies", traces, {
    margin: { t: 10, r: 10, b: 40, l: 60 }, yaxis: { title: "cumulative tCO\u2082e emitted" },
    legend: { orientation: "h" },
  }, { displayModeBar: false, responsive: true });
}

function drawTransfers(transfers) {
  const x = transfers.rows.map((r) => new Date(r.period_end_ms));
  const traces = Object.entries(PARTY_NAMES).map(([party, name]) => ({
    name, x, y: transfers.rows.map((r) => r[`cumulative_${party}`]), mode: "lines",
  }));
  Plotly.react("chart-transfers", traces, {
    margin: { t: 10, r: 10, b: 40, l: 60 }, yaxis: { title: "received (\u2212 paid), cumulative" },
    legend: { orientation: "h" },
  }, { displayModeBar: false, responsive: true });
}

function showLedger(entries) {
  table("ledger", ["#", "hash", "plant", "stage", "shared as", "window end", "tCO\u2082e",
    "M", "P", "G"], entries.reverse().map((e) => {
    const b = e.body;
    if (!b) return [e.index, String(e.hash).slice(0, 10), "malformed", "", "", "", "", "", "", ""];
    return [e.index, e.hash.slice(0, 10), b.plant, b.stage, b.sharing, time(b.period_end_ms),
      fmt(b.reported_tco2e, 1), fmt(b.transfers.M, 2), fmt(b.transfers.P, 2), fmt(b.transfers.G, 2)];
  }));
}

// The lines `carbonlink coordinate --verify-ledger --store` prints, from the same check:
// the verdict on the chain and on storage beside the heading, the findings below it.
async function verify() {
  const el = document.getElementById("verify-result");
  const list = document.getElementById("verify-findings");
  el.textContent = "checking\u2026";
  list.replaceChildren();
  const result = await get("/ledger/verify?against_store=true");
  const [first, ...rest] = result.lines;
  const findings = rest.slice(0, -1);
  el.className = `verify ${result.ok ? "ok" : "bad"}`;
  el.textContent = rest.length ? `${first}. ${rest[rest.length - 1]}` : first;
  for (const line of findings.slice(0, VERIFY_LINES_SHOWN)) {
    const item = document.createElement("li");
    item.textContent = line;
    list.append(item);
  }
  if (findings.length > VERIFY_LINES_SHOWN) {
    const item = document.createElement("li");
    item.textContent = `\u2026 and ${findings.length - VERIFY_LINES_SHOWN} more ` +
      "(carbonlink coordinate --verify-ledger lists them all)";
    list.append(item);
  }
}

async function refresh() {
  const marker = document.querySelector(".live");
  const notice = document.getElementById("notice");
  try {
    const [status, comparison, history, transfers, ledger] = await Promise.all([
      get("/status"), get("/shadows"), get("/shadows?history=true"), get("/transfers"),
      get(`/ledger?newest=true&limit=${LEDGER_ROWS}`),
    ]);
    notice.hidden = true;
    showStatus(status);
    showComparison(comparison);
    drawPolicies(history);
    drawTransfers(transfers);
    showLedger(ledger);
    marker.classList.add("on");
  } catch (error) {
    marker.classList.remove("on");
    notice.hidden = false;
    notice.textContent = `Coordination is not available: ${error.message}`;
  }
}

renderNav(await loadLayout(), "coordination");
document.getElementById("verify").addEventListener("click", verify);
await refresh();
setInterval(refresh, REFRESH_MS);
