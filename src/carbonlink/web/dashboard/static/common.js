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
  for (const p of plants) link(`${PREFIX}/plants/${p.plant}`, p.plant, p.plant);
  const coordination = link(`${PREFIX}/coordination`, "Coordination", "coordination");
  coordination.title = "Stages, policies compared, subsidies, transfers and the ledger";
}

export function fmt(value, digits = 1) {
  if (value === null || value === undefined) return "\u2013";
  return value.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

// Wall-clock time in a plant's zone, the way its staff read it.
export function localTime(ms, timeZone) {
  if (ms === null || ms === undefined) return "no data";
  return new Date(ms).toLocaleString("en-GB", { timeZone, dateStyle: "medium", timeStyle: "medium" });
}

// "YYYY-MM-DD HH:MM:SS" wall-clock time in a zone: what Plotly's date axes take (they
// know no zones), and what the coordination page prints.
export function wallClock(ms, timeZone) {
  const parts = new Intl.DateTimeFormat("sv-SE", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).format(new Date(ms));
  return parts.replace(",", "");
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
