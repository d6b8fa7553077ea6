// One plant: three stacked charts fed by the plant's event stream.
// "history" draws them once; "append" only extends traces; "current" refreshes the KPIs.
import {
  DATE_AXIS, PREFIX, SCOPE_COLORS, SOURCE_COLORS, carrierColor, fmt, labelTime, listen,
  loadLayout, localTime, renderNav,
} from "./common.js";

const plantId = decodeURIComponent(location.pathname.split("/").pop());
const CO2E_RATE = "t CO\u2082e/h";
const CHARTS = [
  // [element id, title, key in the windows record, y axis unit, trace label, colour]
  ["chart-source", "CO\u2082e by source", "source", CO2E_RATE, (k) => k,
    (k) => SOURCE_COLORS[k]],
  ["chart-scope", "CO\u2082e by scope", "scope", CO2E_RATE, (k) => `Scope ${k}`,
    (k) => SCOPE_COLORS[k]],
  ["chart-energy", "Energy mix", "energy", "GJ/h", (k) => k.replaceAll("_", " "),
    (k) => carrierColor(k, plant.carrier_sources)],
];
const FONT = { family: "system-ui, sans-serif", size: 12, color: "#1f2933" };

let plant;
let stream;

function traces(windows, key, label, color) {
  return Object.keys(windows[key]).map((name) => ({
    name: label(name), x: windows.x, y: windows[key][name], type: "scatter", mode: "lines",
    stackgroup: key, line: { width: 1, color: color(name) }, fillcolor: `${color(name)}99`,
  }));
}

function layout(title, unit) {
  return {
    title: { text: title, font: { size: 14 }, x: 0, xanchor: "left" }, font: FONT,
    margin: { l: 60, r: 20, t: 40, b: 40 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    xaxis: { ...DATE_AXIS, title: { text: `time (${plant.timezone})` }, gridcolor: "#eef0f3" },
    yaxis: { title: { text: unit }, gridcolor: "#eef0f3", rangemode: "tozero" },
    legend: { orientation: "h", y: -0.25 }, hovermode: "x unified",
  };
}

function drawAll(history) {
  for (const [id, title, key, unit, label, color] of CHARTS) {
    // react() reuses the same element; the first call after a selector change redraws.
    Plotly.react(id, traces(history.windows, key, label, color), layout(title, unit),
      { displaylogo: false, responsive: true });
  }
}

function appendAll(windows, maxPoints) {
  for (const [id, , key] of CHARTS) {
    const names = Object.keys(windows[key]);
    Plotly.extendTraces(id, {
      x: names.map(() => windows.x),
      y: names.map((n) => windows[key][n]),
    }, names.map((_, i) => i), maxPoints);
  }
}

// The 95% interval under a KPI (IPCC 2006 Approach 1, docs/platform.md "Uncertainty").
function range(interval, digits) {
  if (!interval || interval[0] === null || interval[1] === null) return "";
  return `<div class="range" title="95% interval: emission-factor ranges and meter accuracy">` +
    `95%: ${fmt(interval[0], digits)} \u2013 ${fmt(interval[1], digits)}</div>`;
}

function showKpis(current) {
  const k = current.kpis;
  const i = k.intervals ?? {};
  const out = k.output_unit ?? plant.output_unit ?? "unit";
  const rows = [
    ["Total", k.total_tco2e, "t CO\u2082e", 1, i.total_tco2e],
    ...Object.entries(k.tco2e_by_scope).map(([s, v]) =>
      [`Scope ${s}`, v, "t CO\u2082e", 1, i[`scope${s}_tco2e`]]),
    ["Output", k.output, out, 1, i.output],
    ["Carbon intensity", k.carbon_intensity, `t CO\u2082e/${out}`, 3, i.carbon_intensity],
    ["Energy", k.energy_gj, "GJ", 0, i.energy_gj],
    ["Energy intensity", k.energy_intensity, `GJ/${out}`, 2, i.energy_intensity],
    ["Electricity", k.electricity_kwh, "kWh", 0, i.electricity_kwh],
    ...Object.entries(k.energy_structure).map(([a, v]) =>
      [`Share ${a.replaceAll("_", " ")}`, v === null ? null : v * 100, "% of energy", 1, null]),
  ];
  document.getElementById("kpis").innerHTML = rows.map(([label, value, unit, digits, interval]) => `
    <div class="metric"><div class="label">${label}</div>
      <span class="value">${fmt(value, digits)}</span><span class="unit">${unit}</span>
      ${range(interval, digits)}</div>`).join("");
  const open = current.open;
  const filling = open.x.length
    ? `Window filling since ${labelTime(open.x[open.x.length - 1])}: ` +
      `${fmt(Object.values(open.scope).reduce((sum, ys) => sum + ys[ys.length - 1], 0), 1)} ${CO2E_RATE}. `
    : "";
  document.getElementById("open").textContent =
    `${filling}Newest data ${localTime(current.newest_ms, plant.timezone)}.`;
}

function connect() {
  stream?.close();
  const window = document.getElementById("window").value;
  const range = document.getElementById("range").value;
  let maxPoints = 0;
  stream = listen(`${PREFIX}/plants/${plantId}/events?window=${window}&range=${range}`, {
    history: (h) => { maxPoints = h.max_points; drawAll(h); showKpis(h); },
    append: (a) => appendAll(a.windows, maxPoints),
    current: showKpis,
  });
}

const plants = await loadLayout();
plant = plants.find((p) => p.plant === plantId);
renderNav(plants, plantId);
document.title = `carbonlink - ${plant.plant}`;
document.getElementById("title").textContent = plant.name;
document.getElementById("subtitle").textContent =
  `${plant.plant} \u00b7 times in ${plant.timezone} \u00b7 rates are window sums per hour` +
  ` \u00b7 counted under factor set ${plant.factor_version}`;
document.getElementById("window").addEventListener("change", connect);
document.getElementById("range").addEventListener("change", connect);
connect();
