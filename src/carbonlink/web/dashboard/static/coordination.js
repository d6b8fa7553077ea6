// Coordination: the stage in force, the live policy comparison, the money moved, the
// ledger and what each party knows, in plain words and with units. Polls the read-only
// coordination API; every value is written with textContent (policy names come from
// user files). Times follow the dashboard's convention: the plants' own time zone (as on
// the plant pages), or UTC when the plants are in different zones; the zone is named.
import {
  DATE_AXIS, PARTY_COLORS, fmt, loadLayout, localTime, renderNav, wallClock,
} from "./common.js";

const API = "/api/v1/coordination";
const REFRESH_MS = 2000;
const LEDGER_ROWS = 15;
const VERIFY_LINES_SHOWN = 10;
const STAGES = {
  1: ["primary neutrality", "the firm and the platform each decide their own effort; " +
    "nobody pays anybody, and the government only receives daily self-reported totals."],
  2: ["intermediate dependence", "the government pays part of the firm's and the " +
    "platform's effort costs (a subsidy) to make them do more; it sees hourly verified " +
    "reports and pays the subsidy claims in them."],
  3: ["advanced symbiosis", "firm, platform and government decide together on shared " +
    "data, which makes every effort go further; the value they create is split between " +
    "them and settled every period by transfers."],
};
const PARTIES = { M: "firm", P: "platform", G: "government" };

let zone = "UTC";
let money = { label: "money units", long: "model money units", per_t: "money units/tCO2e" };

async function get(path) {
  const response = await fetch(`${API}${path}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail ?? response.statusText);
  return body;
}

function cell(row, value, className) {
  const td = document.createElement(row.parentElement?.tagName === "THEAD" ? "th" : "td");
  if (Array.isArray(value)) {
    [value, className] = value;
  }
  if (value && typeof value === "object") {  // a header: {text, title}
    td.textContent = value.text;
    td.title = value.title;
  } else {
    td.textContent = value;
  }
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
    values.forEach((v) => cell(tr, v));
    return tr;
  }));
}

// Show the empty-state text instead of a chart (or table) that would have no data.
function emptyState(id, chartId, message) {
  const el = document.getElementById(id);
  el.hidden = !message;
  el.textContent = message ?? "";
  if (chartId) document.getElementById(chartId).hidden = Boolean(message);
}

const number = (value, digits) => {
  if (value === null || value === undefined) return "\u2013";
  if (digits === "%") return `${fmt(100 * value, 1)}%`;
  return fmt(value, digits);
};
const time = (ms) => (ms ? localTime(ms, zone) : "\u2013");
const minutes = (s) => `${fmt(s / 60, 0)} min`;

function showStatus(status, transfers) {
  money = status.money ?? money;
  const [name, meaning] = STAGES[status.stage];
  const stage = document.getElementById("stage");
  stage.textContent = `stage ${status.stage}: ${name}`;
  stage.dataset.stage = status.stage;
  document.getElementById("stage-meaning").textContent =
    `In force: stage ${status.stage}, ${name}: ${meaning}`;
  document.getElementById("conventions").textContent =
    `Times are in ${zone}${zone === "UTC" ? "" : ", the plants' time zone, as on the plant pages"}. ` +
    `Money is in ${money.long} (${money.label}). tCO\u2082e: tonnes of CO\u2082 equivalent.`;
  document.getElementById("subtitle").firstChild.textContent =
    `Policy ${status.policy}${status.description ? ` (${status.description})` : ""}: ` +
    `${status.periods} period${status.periods === 1 ? "" : "s"} of ${minutes(status.period_s)} since ${time(status.run_start_ms)}, ` +
    `updated ${time(status.updated_ms)} (${zone}). `;
  document.getElementById("ledger-head").textContent =
    `${status.ledger.reports} reports in the hash chain; head ${status.ledger.head.slice(0, 16)}\u2026 ` +
    `(${status.pending_reports} more not yet due under the sharing rules)`;
  table("directives", [
    "plant", "stage",
    { text: "firm's effort", title: "E_M in the model" },
    { text: "platform's effort", title: "E_P in the model" },
    { text: "data-sharing gain", title: "sigma = 1 + eta x R: how much further every effort goes on shared data (stage 3)" },
    { text: "firm's cost subsidised", title: "theta_M: share of the firm's effort cost the government pays" },
    { text: "platform's cost subsidised", title: "theta_P: share of the platform's effort cost the government pays" },
  ], Object.entries(status.directives).map(([plant, d]) => [
    plant, d.stage, fmt(d.effort_firm, 2), fmt(d.effort_platform, 2),
    `\u00d7${fmt(d.sigma, 2)}`, number(d.subsidy_rate_firm, "%"), number(d.subsidy_rate_platform, "%"),
  ]));
  showDrop(status.drop);
  showSettlement(status.settlement ?? {}, status.stage);
  const estimates = Object.entries(status.estimates);
  table("estimates", [
    "plant",
    { text: "functional availability", title: "F: metered share x completeness x on-time share, 0 to 1" },
    { text: "firm productivity", title: "a_M: abatement capacity one unit of firm effort builds, tCO2e per period" },
    { text: "platform productivity", title: "a_P: the same for the platform's effort, before F" },
    { text: "capacity lost per period", title: "delta: share of abatement capacity that fades each model period" },
    { text: "abatement observed, tCO\u2082e/period", title: "X observed against the fitted baseline" },
    "baseline fit",
  ], estimates.map(([plant, e]) => [
    plant,
    [fmt(e.params.F, 2), e.sources.F ? "estimated" : ""],
    [fmt(e.params.a_M, 3), e.sources.a_M ? "estimated" : ""],
    [fmt(e.params.a_P, 3), e.sources.a_P ? "estimated" : ""],
    [number(e.params.delta, "%"), e.sources.delta ? "estimated" : ""],
    number(e.x_observed, 2),
    e.baseline ? `R\u00b2 ${fmt(e.baseline.r2, 2)}, CV ${fmt(100 * e.baseline.cv_rmse, 1)}%` : "fitting",
  ]));
  if (!estimates.length) {
    table("estimates", ["This policy uses its parameter file as given: nothing is estimated."], []);
  }
  showGovernment(status.government, transfers);
}

// The emission drop since the last switch, when the run can measure it (the demo).
function showDrop(drop) {
  const panel = document.getElementById("drop");
  panel.hidden = !drop;
  if (!drop) return;
  document.getElementById("drop-line").textContent =
    `Emission drop since the switch at ${time(drop.switch_ms)}: measured ` +
    `${fmt(drop.measured, 2)} tCO\u2082e/h, the model predicted ${fmt(drop.predicted, 2)} ` +
    `tCO\u2082e/h (its abatement X went from ${fmt(drop.projected_before_t_per_h, 2)} to ` +
    `${fmt(drop.projected_after_t_per_h, 2)} tCO\u2082e/h), on the ${fmt(drop.readings, 0)} ` +
    `emission readings stored over the ${fmt(drop.hours_after, 2)} h since the switch. All ` +
    `plants emitted ${fmt(drop.before_t_per_h, 1)} tCO\u2082e/h before it, ` +
    `${fmt(drop.after_t_per_h, 1)} since.`;
}

function showSettlement(settlement, stage) {
  const el = document.getElementById("settlement");
  const rows = Object.entries(settlement);
  const lines = [];
  if (!rows.length) {
    lines.push("No decision yet.");
  } else {
    const intro = stage === 3
      ? `Each period the stage-3 value is settled by transfers so that each party gets this ` +
        `share of it (value from now on, ${money.label}); in brackets, its best in stages 1 and 2:`
      : `If stage 3 were in force, each party would get this share of its value ` +
        `(${money.label}); in brackets, its best in stages 1 and 2:`;
    lines.push(intro);
    for (const [plant, s] of rows) {
      const parts = Object.entries(PARTIES).map(([p, who]) =>
        `${who} ${fmt(s.values[p], 1)} (${fmt(s.floors[p], 1)})`);
      lines.push(`${plant}: ${s.split === "core" ? "core split" : "Shapley value"}: ${parts.join(", ")}.`);
    }
    for (const why of new Set(rows.map(([, s]) => s.why))) lines.push(`Why: ${why}.`);
  }
  el.replaceChildren(...lines.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }));
}

function showGovernment(gov, transfers) {
  const el = document.getElementById("government");
  const paid = 0 - (transfers?.totals?.G ?? 0);  // 0 - x: never a "-0.00"
  const settlements = paid - gov.spent;
  const lines = [
    `Public money paid so far: ${fmt(paid, 2)} ${money.label} in all, ` +
      `${fmt(gov.spent, 2)} in subsidies and ${fmt(settlements, 2)} in stage-3 settlement transfers` +
      (gov.budget_total === null ? "." : `; the subsidy budget is ${fmt(gov.budget_total, 1)} ${money.label}.`) +
      (gov.unpaid_claims ? ` ${fmt(gov.unpaid_claims, 2)} ${money.label} of claims went unpaid.` : ""),
    ...Object.entries(gov.plants).map(([plant, k]) =>
      `${plant}: ${k.reports} reports received (${k.verified_reports} verified), ` +
      `${fmt(k.reported_tco2e, 1)} tCO\u2082e reported up to ${time(k.last_report_end_ms)}` +
      (k.shared_parameters.length
        ? "; it also knows the model parameters the joint decision used (productivities, costs, values per tonne)."
        : ".")),
  ];
  if (!Object.keys(gov.plants).length) {
    lines.push("No report has reached the government yet: the sharing rules delay them.");
  }
  el.replaceChildren(...lines.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }));
}

function showComparison(rows) {
  const columns = [
    ["policy", "policy", null],
    ["emissions_t", "emitted, tCO\u2082e", 1],
    ["abatement_t", "abated, tCO\u2082e", 1],
    ["abatement_share", "abated", "%"],
    ["value_M", `value to firm, ${money.label}`, 1],
    ["value_P", `to platform, ${money.label}`, 1],
    ["value_G", `to government, ${money.label}`, 1],
    ["value_total", `total value, ${money.label}`, 1],
    ["public_cost", `public cost, ${money.label}`, 1],
    ["public_cost_per_t", `public cost per tonne abated, ${money.per_t}`, 3],
  ];
  table("comparison", columns.map(([, title]) => title), rows.map((r) =>
    columns.map(([key, , digits]) => {
      if (key !== "policy") return number(r[key], digits);
      return [r.active ? `${r.policy} (in force)` : r.policy, r.active ? "active" : ""];
    })));
  emptyState("comparison-empty", null, rows.length ? null
    : "No period has been evaluated yet: the comparison starts once the first period " +
      "has ended and its readings are in.");
}

const LAYOUT = {
  margin: { t: 10, r: 10, b: 50, l: 70 }, legend: { orientation: "h", y: -0.25 },
  font: { size: 11 },
};

function drawPolicies(history, periodS) {
  // Before the first period there is nothing to draw: the table's empty state says so.
  document.getElementById("chart-policies").hidden = !history.length;
  if (!history.length) return;
  const byPolicy = new Map();
  for (const row of history) {
    if (!byPolicy.has(row.policy)) byPolicy.set(row.policy, { x: [], y: [], active: row.active });
    const series = byPolicy.get(row.policy);
    series.x.push(wallClock(row.end_ms, zone));
    series.y.push(row.emissions_t);
  }
  const traces = [...byPolicy].map(([policy, s]) => ({
    name: s.active ? `${policy} (in force)` : policy, x: s.x, y: s.y, mode: "lines+markers",
    marker: { size: 4 }, line: { width: s.active ? 3 : 1.5, dash: s.active ? "solid" : "dot" },
  }));
  Plotly.react("chart-policies", traces, {
    ...LAYOUT,
    xaxis: { ...DATE_AXIS, title: { text: `time (${zone})` }, range: timeRange(history.map((r) => r.end_ms), periodS) },
    yaxis: { title: { text: "emitted since the start, tCO\u2082e" }, rangemode: "tozero" },
  }, { displayModeBar: false, responsive: true });
}

// An axis that spans at least a period either side of the data: one point alone would
// otherwise get an axis of milliseconds.
function timeRange(times, periodS) {
  const low = Math.min(...times);
  const high = Math.max(...times);
  const pad = Math.max(periodS * 1000, (high - low) * 0.05);
  return [wallClock(low - pad, zone), wallClock(high + pad, zone)];
}

function drawTransfers(transfers, periodS) {
  document.getElementById("transfers-sub").textContent =
    `Cumulative, in ${money.label}: above zero a party has received more than it paid, ` +
    `below zero it has paid more. Stage 1 moves no money; in stage 2 the government pays ` +
    `subsidies; in stage 3 transfers settle the agreed split. Each point is a report to ` +
    `the government, at the end of the window it covers.`;
  const chart = document.getElementById("chart-transfers");
  if (!transfers.rows.length) {
    chart.hidden = true;
    emptyState("transfers-empty", null,
      "No money has moved yet: transfers appear with the first stage-2 or stage-3 report.");
    return;
  }
  emptyState("transfers-empty", null, null);
  chart.hidden = false;
  const x = transfers.rows.map((r) => wallClock(r.period_end_ms, zone));
  const traces = Object.entries(PARTIES).map(([party, name]) => ({
    name, x, y: transfers.rows.map((r) => r[`cumulative_${party}`]), mode: "lines+markers",
    marker: { size: 4, color: PARTY_COLORS[party] }, line: { color: PARTY_COLORS[party] },
  }));
  Plotly.react("chart-transfers", traces, {
    ...LAYOUT,
    xaxis: { ...DATE_AXIS, title: { text: `time (${zone})` }, range: timeRange(transfers.rows.map((r) => r.period_end_ms), periodS) },
    yaxis: { title: { text: `received (+) or paid (\u2212), ${money.label}` }, zeroline: true },
  }, { displayModeBar: false, responsive: true });
}

function showLedger(entries) {
  table("ledger", ["#", "hash", "plant", "stage", "shared as", `window end (${zone})`, "tCO\u2082e",
    `to firm, ${money.label}`, `to platform, ${money.label}`, `to government, ${money.label}`],
  entries.reverse().map((e) => {
    const b = e.body;
    if (!b) return [e.index, String(e.hash).slice(0, 10), "malformed", "", "", "", "", "", "", ""];
    return [e.index, e.hash.slice(0, 10), b.plant, b.stage, b.sharing.replace("_", " "),
      time(b.period_end_ms), fmt(b.reported_tco2e, 1), fmt(b.transfers.M, 2),
      fmt(b.transfers.P, 2), fmt(b.transfers.G, 2)];
  }));
  emptyState("ledger-empty", null, entries.length ? null
    : "No report has been released yet: each stage's sharing rule sets when reports reach the government.");
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
    showStatus(status, transfers);
    showComparison(comparison);
    drawPolicies(history, status.period_s);
    drawTransfers(transfers, status.period_s);
    showLedger(ledger);
    marker.classList.add("on");
  } catch (error) {
    marker.classList.remove("on");
    notice.hidden = false;
    notice.textContent = `Coordination is not available: ${error.message}`;
  }
}

const plants = await loadLayout();
const zones = new Set(plants.map((p) => p.timezone));
zone = zones.size === 1 ? [...zones][0] : "UTC";
renderNav(plants, "coordination");
document.getElementById("verify").addEventListener("click", verify);
await refresh();
setInterval(refresh, REFRESH_MS);
