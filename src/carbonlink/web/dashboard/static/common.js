// Shared by every page: navigation, number formatting, and the event stream.

export const PREFIX = "/dashboard";

export async function loadLayout() {
  const response = await fetch(`${PREFIX}/layout`);
  return (await response.json()).plants;
}

// The navigation: overview, one entry per plant, and coordination.
export function renderNav(plants, active) {
  const nav = document.querySelector("nav");
  const link = (href, text, key) => {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    if (key === active) a.className = "active";
    nav.append(a);
    return a;
  };
  link(PREFIX, "Overview", "overview");
  link(`${PREFIX}/fleet`, "Fleet", "fleet").title = "The whole fleet: totals, ranking, trends, refusals";
  for (const p of plants) link(`${PREFIX}/plants/${p.plant}`, p.plant, p.plant);
  const coordination = link(`${PREFIX}/coordination`, "Coordination", "coordination");
  coordination.title = "Stages, policies compared, subsidies, transfers and the ledger";
}

export function fmt(value, digits = 1) {
  if (value === null || value === undefined) return "\u2013";
  return value.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

// The one date format of every page: "YYYY-MM-DD HH:MM" wall-clock time in a zone, the
// zone named once nearby (a subtitle, an axis title). wallClock() adds the seconds that
// Plotly's date axes take (they know no zones); the charts' hover labels and ticks use
// the same pattern (DATE_AXIS).
export function localTime(ms, timeZone) {
  if (ms === null || ms === undefined) return "no data";
  return wallClock(ms, timeZone).slice(0, 16);
}

export function wallClock(ms, timeZone) {
  const parts = new Intl.DateTimeFormat("sv-SE", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).format(new Date(ms));
  return parts.replace(",", "");
}

// A label the server wrote as "YYYY-MM-DD HH:MM:SS" (the charts' x values), shown as above.
export const labelTime = (label) => label.slice(0, 16);

// Plotly date axes in the same format: hover "YYYY-MM-DD HH:MM"; ticks show the time
// within a day and the date beyond one.
export const DATE_AXIS = {
  type: "date", hoverformat: "%Y-%m-%d %H:%M",
  tickformatstops: [
    { dtickrange: [null, 86400000], value: "%H:%M" },
    { dtickrange: [86400000, null], value: "%Y-%m-%d" },
  ],
};

// One colour per emission source on every chart of every page: the energy mix colours a
// carrier like its source (electricity, heat), fuels in shades of the fuel colour.
export const SOURCE_COLORS = {
  fuel: "#b5654a", process: "#7b8fa6", electricity: "#c08a3e", heat: "#8e5572",
};
const FUEL_SHADES = ["#b5654a", "#8a4a35", "#d4937a", "#6e3a2a", "#e6b8a5"];
export const SCOPE_COLORS = { 1: "#2f6f73", 2: "#5b8c5a", 3: "#6b5b95" };
export const PARTY_COLORS = { M: "#2f6f73", P: "#c08a3e", G: "#6b5b95" };
export const ACCENT = "#2f6f73";

// The colour of an energy carrier, given the layout's carrier -> source map.
export function carrierColor(carrier, carrierSources) {
  const source = carrierSources[carrier];
  if (source !== "fuel") return SOURCE_COLORS[source] ?? ACCENT;
  const fuels = Object.keys(carrierSources).filter((c) => carrierSources[c] === "fuel");
  return FUEL_SHADES[fuels.indexOf(carrier) % FUEL_SHADES.length];
}

// One EventSource, named events dispatched to handlers; the marker shows it is live.
export function listen(url, handlers) {
  const marker = document.querySelector(".live");
  const source = new EventSource(url);
  source.onopen = () => marker?.classList.add("on");
  source.onerror = () => marker?.classList.remove("on");
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => handler(JSON.parse(e.data)));
  }
  return source;
}
