// Chart.js (vendored UMD build, web/vendor/) loaded on first use, plus small chart makers.

import { h } from "./ui.js";

let loading = null;
export function loadChart() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = new URL("../vendor/chart.umd.min.js", import.meta.url).href;
      tag.onload = () => resolve(window.Chart);
      tag.onerror = () => { loading = null; reject(new Error("could not load the chart library")); };
      document.head.append(tag);
    });
  }
  return loading;
}

/** Append a chart in a fixed-height box to `parent`; returns the Chart (null when it failed). */
export async function chartInto(parent, config, label, testid) {
  const canvas = h("canvas", { role: "img", "aria-label": label });
  const el = h("div", { class: "chart-box", testid }, canvas);
  parent.append(el);
  try {
    const Chart = await loadChart();
    Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    Chart.defaults.animation = false;
    const chart = new Chart(canvas, { ...config, options: { responsive: true, maintainAspectRatio: false, ...config.options } });
    return chart;
  } catch (err) {
    el.replaceChildren(h("p", { class: "muted" }, err.message));
    return null;
  }
}
