// Fleet overview: one card per plant, its figures replaced in place on each event.
import { PREFIX, fmt, listen, loadLayout, localTime, renderNav } from "./common.js";

// [key, label, unit]: each figure and its unit on one line that never wraps; what
// qualifies it (the 95% interval, estimated and rejected readings) on a line below.
const METRICS = [
  ["rate", "CO\u2082e rate (15 min)", "t CO\u2082e/h"],
  ["today", "Today", "t CO\u2082e"],
  ["intensity", "Carbon intensity", ""],
  ["readings", "Readings today", ""],
];

function card(plant) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.plant = plant.plant;
  el.innerHTML = `
    <span class="status unknown" data-field="status">unknown</span>
    <h2><a href="${PREFIX}/plants/${plant.plant}"></a></h2>
    <div class="tz"></div>
    <div class="metrics">${METRICS.map(([key, label, unit]) => `
      <div class="metric"><div class="label">${label}</div>
        <span class="figure"><span class="value" data-field="${key}">\u2013</span><span class="unit" data-unit="${key}">${unit}</span></span>
        <div class="range" data-detail="${key}"></div></div>`).join("")}
    </div>
    <div class="tz" data-field="newest"></div>
    <div class="tz" data-field="factors"></div>`;
  el.querySelector("h2 a").textContent = plant.name;
  el.querySelector(".tz").textContent = `${plant.plant} \u00b7 ${plant.timezone}`;
  return el;
}

function update(row) {
  const el = document.querySelector(`[data-plant="${row.plant}"]`);
  if (!el) return;
  const set = (field, text) => { el.querySelector(`[data-field="${field}"]`).textContent = text; };
  const status = el.querySelector('[data-field="status"]');
  status.className = `status ${row.status}`;
  status.textContent = row.status;
  set("rate", fmt(row.rate_tco2e_h, 1));
  set("today", fmt(row.today_tco2e, 1));
  const today = row.today_tco2e_interval;
  el.querySelector('[data-detail="today"]').textContent = today && today[0] !== null
    ? `95%: ${fmt(today[0], 1)}\u2013${fmt(today[1], 1)}` : "";
  set("factors", `factor set ${row.factor_version}`);
  set("intensity", fmt(row.carbon_intensity, 3));
  el.querySelector('[data-unit="intensity"]').textContent =
    row.output_unit ? `t CO\u2082e/${row.output_unit}` : "";
  set("readings", fmt(row.readings_today, 0));
  const rejected = row.rejected === null ? "" : ` \u00b7 ${fmt(row.rejected, 0)} rejected`;
  el.querySelector('[data-detail="readings"]').textContent =
    `${fmt(row.estimated_today, 0)} estimated${rejected}`;
  set("newest", `newest data ${localTime(row.newest_ms, row.timezone)} (${row.timezone})`);
}

function showQuality(quality) {
  const el = document.getElementById("quality");
  if (!quality.available) {
    el.textContent = "Data quality: ingestion counters are not available from this server.";
    return;
  }
  const reasons = Object.entries(quality.rejected);
  const total = reasons.reduce((sum, [, n]) => sum + n, 0);
  const detail = reasons.map(([reason, n]) => `${reason} ${n}`).join(", ");
  el.textContent = `Data quality: ${quality.stored ?? 0} readings stored, ${total} rejected` +
    (detail ? ` (${detail})` : "") + (quality.lag_s === null ? "" : `, lag ${fmt(quality.lag_s, 1)} s`);
}

const plants = await loadLayout();
renderNav(plants, "overview");
const container = document.getElementById("plants");
for (const plant of plants) container.append(card(plant));
listen(`${PREFIX}/events`, {
  overview: (data) => {
    data.plants.forEach(update);
    showQuality(data.quality);
  },
});
