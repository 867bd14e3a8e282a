// Dashboard (managers): progress, queue make-up, label distribution, model versions
// with hold-out metrics and thresholds, next retraining, runs (live), realised precision; and the
// manager's activity (GET /activity): labels over time, people, agreement, model versions over time.

import { get, parseTime, post, rows, watchJob } from "../api.js";
import { chartInto } from "../charts.js";
import { loopState, missing, nextModel, whyBlock } from "../next_step.js";
import { classColor, clear, fmtNum, fmtPct, fmtTime, h, notAvailable, progressBar, showError, toast } from "../ui.js";
import { coverageFromWord, fmtThreshold, jobWord, labelKindWord, metricWord, originWord, statusWord } from "../words.js";

const STATUS_COLORS = { labelled: "#1f8a4c", proposed: "#2f6fed", unlabelled: "#c3cad6", skipped: "#b7791f", review: "#c53030" };
const LABEL_KINDS = [["human", "#2f6fed"], ["confirmed", "#1f8a4c"], ["auto_accepted", "#b7791f"]];
const TILES = [["total", "Images"], ["labelled", "Labelled"], ["unlabelled", "Unlabelled"], ["proposed", "Pending"],
  ["skipped", "Skipped"], ["review", "In review"]];

export async function render(root, { project }) {
  const watchers = [];
  const charts = [];
  let timer = null;
  let stopped = false;
  const classes = [...project.classes].sort((a, b) => a.position - b.position);

  const head = h("div", { class: "grid-head" }, h("h1", {}, "Dashboard"),
    h("button", { type: "button", testid: "train-now", onclick: () => trainNow() }, "Train now"),
    h("button", { type: "button", testid: "open-annotate", onclick: () => openAnnotate() }, "Automatic annotation…"),
    h("button", { type: "button", class: "link", onclick: () => refresh() }, "Refresh"));
  const body = h("div", { testid: "dashboard" });
  root.append(head, body);

  async function openAnnotate() {
    const mod = await import("../annotate.js");
    mod.openAnnotateDialog(project, { onDone: () => refresh() });
  }

  async function trainNow() {
    try {
      const job = await post(`/projects/${project.id}/train`, {});
      toast(`Training started (job ${job.id})`, "ok");
      refresh();
    } catch (err) { showError(err, "Cannot train"); }
  }

  async function refresh() {
    let stats;
    try {
      stats = await get(`/projects/${project.id}/stats`);
    } catch (err) {
      if (err.missingRoute) { clear(body, notAvailable("The dashboard")); return; }
      showError(err);
      return;
    }
    let versions = [];
    try { versions = rows(await get(`/projects/${project.id}/model-versions`)); } catch (err) {
      if (!err.missingRoute) showError(err);
    }
    let activity = null;
    try { activity = await get(`/projects/${project.id}/activity`); } catch (err) {
      if (!err.missingRoute && err.status !== 403) showError(err);
    }
    const loop = await loopState(project);
    if (stopped) return;
    for (const w of watchers.splice(0)) w.close();
    for (const c of charts.splice(0)) if (c) c.destroy();
    clear(body);
    const lacking = missing(loop);
    if (lacking.length) { // on the way to pre-labels: what is missing, and how far it is
      body.append(whyBlock("dash-why", loop.model ? "Pre-labels are not proven yet." : "No model yet.",
        [...lacking, loop.model ? nextModel(loop) : null]));
    }
    await draw(stats, versions, activity);
  }

  async function draw(st, versions, act) {
    const c = st.counts || {};
    const pct = c.total ? (c.labelled || 0) / c.total : 0;
    body.append(h("div", { class: "tiles" },
      TILES.map(([k, name]) => h("div", { class: "tile" },
        h("div", { class: "value", testid: `stat-${k}` }, fmtNum(c[k] ?? 0)), h("div", { class: "name" }, name))),
      h("div", { class: "tile" }, h("div", { class: "value", testid: "stat-holdout" }, fmtNum(st.queue ? st.queue.holdout_labels : 0)),
        h("div", { class: "name" }, "Hold-out labels")),
      h("div", { class: "tile" }, h("div", { class: "value", testid: "stat-coverage" }, fmtPct(st.coverage)),
        h("div", { class: "name" }, "Pre-label coverage"))));
    const grid = h("div", { class: "dash" });
    body.append(grid);

    // progress
    const prog = h("section", { class: "card", "aria-labelledby": "d-progress" },
      h("h2", { id: "d-progress" }, "Progress ", h("span", { class: "muted", testid: "stat-progress" }, fmtPct(pct, 0)), " labelled"));
    grid.append(prog);
    const statuses = Object.keys(STATUS_COLORS);
    charts.push(await chartInto(prog, { type: "doughnut",
      data: { labels: statuses.map(statusWord), datasets: [{ data: statuses.map((k) => c[k] || 0), backgroundColor: statuses.map((k) => STATUS_COLORS[k]) }] },
      options: { plugins: { legend: { position: "right" } }, cutout: "60%" } }, "Items by status", "chart-progress"));

    // queue make-up
    const q = st.queue || {};
    const origins = q.human_labels_by_origin || {};
    const queue = h("section", { class: "card", "aria-labelledby": "d-queue" }, h("h2", { id: "d-queue" }, "Queue make-up"),
      h("p", { class: "muted small" },
        h("span", { testid: "stat-pool" }, fmtNum(q.unlabelled_pool ?? 0)), " images in the pool · ",
        h("span", { testid: "stat-audit-open" }, fmtNum(q.audit_open ?? 0)), " audits open · ",
        h("span", {}, fmtNum(q.holdout_labels ?? 0)), " hold-out labels (",
        h("span", { testid: "stat-holdout-calibrating", title: "hold-out images no other route would have taken: the ones thresholds are calibrated on" },
          fmtNum(q.holdout_calibrating ?? 0)), " calibrating)"));
    grid.append(queue);
    const oKeys = Object.keys(origins).sort((a, b) => origins[b] - origins[a]);
    if (oKeys.length) {
      queue.append(h("ul", { class: "chips", testid: "labels-by-origin" }, oKeys.map((k) =>
        h("li", { class: "chip", title: k }, `${originWord(k)}: `, h("span", { testid: `origin-${k}` }, fmtNum(origins[k]))))));
      charts.push(await chartInto(queue, { type: "bar",
        data: { labels: oKeys.map(originWord), datasets: [{ label: "human labels", data: oKeys.map((k) => origins[k]), backgroundColor: "#2f6fed" }] },
        options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } },
      "Human labels by where they were made", "chart-queue"));
    } else queue.append(h("p", { class: "muted" }, "No human labels yet."));

    // label distribution
    const dist = st.label_distribution || {};
    const names = [...classes.map((x) => x.name), ...Object.keys(dist).filter((k) => !classes.some((x) => x.name === k))];
    const distCard = h("section", { class: "card", "aria-labelledby": "d-dist" }, h("h2", { id: "d-dist" }, "Label distribution"),
      h("ul", { class: "chips", testid: "label-distribution" }, names.map((n) =>
        h("li", { class: "chip", dataset: { class: n } }, `${n}: `, h("span", { testid: `dist-${n}` }, fmtNum(dist[n] || 0))))));
    grid.append(distCard);
    charts.push(await chartInto(distCard, { type: "bar",
      data: { labels: names, datasets: [{ label: "labels", data: names.map((n) => dist[n] || 0),
        backgroundColor: names.map((n, i) => classColor(classes.find((x) => x.name === n), i)) }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } } },
    "Labels per class", "chart-distribution"));

    // next training
    grid.append(nextTraining(st));
    // precision
    grid.append(precisionCard(st));
    // runs
    grid.append(runsCard(st.runs || []));
    // the team and the models over time (GET /activity)
    if (act) await drawActivity(act);
    // model versions (full width)
    body.append(versionsCard(versions));
  }

  async function drawActivity(act) {
    const grid = h("div", { class: "dash", testid: "activity", style: { marginTop: "1rem" } });
    body.append(grid);
    grid.append(await labelsCard(act), peopleCard(act), await modelsCard(act.versions || []));
  }

  /** A bucket's start as a short key for test ids and labels: "2026-01-05" or "2026-01-05T09". */
  const bucketKey = (start, hourly) => String(start).slice(0, hourly ? 13 : 10);

  async function labelsCard(act) {
    const hourly = act.bucket === "hour";
    const t = act.totals || {};
    const list = act.labels || [];
    const card = h("section", { class: "card", "aria-labelledby": "d-labels", testid: "labels-over-time" },
      h("h2", { id: "d-labels" }, "Labels over time"),
      h("p", { class: "muted small" }, h("span", { testid: "labels-total" }, fmtNum(t.total ?? 0)), " labels: ",
        h("span", { testid: "labels-human" }, fmtNum(t.human ?? 0)), ` ${labelKindWord("human")}, `,
        h("span", { testid: "labels-confirmed" }, fmtNum(t.confirmed ?? 0)), ` ${labelKindWord("confirmed")}, `,
        h("span", { testid: "labels-auto_accepted" }, fmtNum(t.auto_accepted ?? 0)), ` ${labelKindWord("auto_accepted")}`,
        ` · per ${hourly ? "hour" : "day"} (UTC); imports, undos and renames not counted.`));
    if (!t.total) { card.append(h("p", { class: "muted" }, "No labels yet.")); return card; }
    const names = list.map((r) => (hourly ? `${bucketKey(r.start, true).slice(5).replace("T", " ")}:00` : bucketKey(r.start, false)));
    charts.push(await chartInto(card, { type: "bar",
      data: { labels: names, datasets: LABEL_KINDS.map(([k, color]) => ({ label: labelKindWord(k), data: list.map((r) => r[k] || 0), backgroundColor: color })) },
      options: { plugins: { legend: { position: "bottom" } },
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } },
    "Labels over time", "chart-labels-over-time"));
    // the chart's numbers, for the days (hours) that have labels
    const tbody = h("tbody");
    for (const r of list.filter((x) => x.total)) {
      const key = bucketKey(r.start, hourly);
      tbody.append(h("tr", { testid: `labels-row-${key}` }, h("td", {}, hourly ? `${key.replace("T", " ")}:00` : key),
        LABEL_KINDS.map(([k]) => h("td", { class: "num", testid: `labels-${key}-${k}` }, fmtNum(r[k] || 0))),
        h("td", { class: "num", testid: `labels-${key}-total` }, fmtNum(r.total))));
    }
    card.append(h("details", { class: "small" }, h("summary", {}, `Numbers per ${hourly ? "hour" : "day"}`),
      h("table", { testid: "labels-table" }, h("thead", {}, h("tr", {}, h("th", {}, hourly ? "Hour (UTC)" : "Day (UTC)"),
        LABEL_KINDS.map(([k]) => h("th", { class: "num" }, labelKindWord(k))), h("th", { class: "num" }, "all"))), tbody)));
    return card;
  }

  function peopleCard(act) {
    const list = act.people || [];
    const gap = Math.round((act.session_gap_seconds ?? 600) / 60);
    const card = h("section", { class: "card", "aria-labelledby": "d-people", testid: "people" },
      h("h2", { id: "d-people" }, "People"),
      h("p", { class: "muted small" }, "Labels each person made (confirmed proposals included); per hour counts the hours in which they saved a label; ",
        `seconds per image is the median time between their saves, pauses over ${gap} minutes left out.`));
    if (!list.length) card.append(h("p", { class: "muted" }, "No one has labelled yet."));
    else {
      card.append(h("table", { testid: "people-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Labeller"), h("th", { class: "num" }, "Labels"),
          h("th", { class: "num" }, "Labels per hour"), h("th", { class: "num" }, "Seconds per image (median)"))),
        h("tbody", {}, list.map((p) => h("tr", { testid: `person-${p.user_id}` },
          h("td", { testid: `person-${p.user_id}-name` }, p.name),
          h("td", { class: "num", testid: `person-${p.user_id}-labels` }, fmtNum(p.labels)),
          h("td", { class: "num", testid: `person-${p.user_id}-per-hour`, title: `${p.labels} labels in ${p.active_hours} active hours` },
            p.labels_per_hour == null ? "–" : Number(p.labels_per_hour).toFixed(1)),
          h("td", { class: "num", testid: `person-${p.user_id}-median`, title: `from ${p.timed_saves} saves` },
            p.median_seconds == null ? "–" : Number(p.median_seconds).toFixed(1)))))));
    }
    const ag = act.agreement || {};
    card.append(h("p", { class: "small", testid: "agreement" }, h("strong", {}, "Agreement: "),
      ag.images ? [h("span", { testid: "agreement-agreeing" }, fmtNum(ag.agreeing)), " of ",
        h("span", { testid: "agreement-images" }, fmtNum(ag.images)),
        " images labelled by two or more people got the same first label from each (",
        h("span", { testid: "agreement-share" }, fmtPct(ag.share)), ")."]
        : [h("span", { testid: "agreement-images" }, "0"), " images labelled by two or more people yet."]));
    return card;
  }

  async function modelsCard(list) {
    const card = h("section", { class: "card", "aria-labelledby": "d-models-time", testid: "versions-over-time" },
      h("h2", { id: "d-models-time" }, "Model versions over time"),
      h("p", { class: "muted small" }, "Coverage: share of the unlabelled images the version pre-labelled with certified precision. ",
        "Realised precision: share of its decided proposals people found right."));
    if (!list.length) { card.append(h("p", { class: "muted" }, "No model trained yet.")); return card; }
    const names = list.map((v) => `v${v.version}`);
    charts.push(await chartInto(card, { type: "line",
      data: { labels: names, datasets: [
        { label: "coverage", data: list.map((v) => (v.coverage == null ? null : v.coverage * 100)), borderColor: "#2f6fed", backgroundColor: "#2f6fed" },
        { label: "realised precision", data: list.map((v) => (v.precision == null ? null : v.precision * 100)), borderColor: "#1f8a4c", backgroundColor: "#1f8a4c" }] },
      options: { spanGaps: true, plugins: { legend: { position: "bottom" } }, scales: { y: { min: 0, max: 100, ticks: { callback: (x) => `${x}%` } } } } },
    "Coverage and realised precision per model version", "chart-versions-over-time"));
    card.append(h("table", { testid: "versions-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", { class: "num" }, "Coverage"), h("th", { class: "num" }, "Realised precision"))),
      h("tbody", {}, list.map((v) => h("tr", { testid: `mv-${v.version}` },
        h("td", {}, h("strong", {}, `v${v.version}`), h("br"), h("span", { class: "small muted", testid: `mv-${v.version}-created` }, fmtTime(parseTime(v.created_at)))),
        h("td", { class: "num", title: coverageFromWord(v.coverage_from) },
          h("span", { testid: `mv-${v.version}-coverage` }, fmtPct(v.coverage)), h("br"),
          h("span", { class: "small muted" }, v.pool ? `${fmtNum(v.proposed)} of ${fmtNum(v.pool)} images` : coverageFromWord(v.coverage_from))),
        h("td", { class: "num" }, h("span", { testid: `mv-${v.version}-precision` }, fmtPct(v.precision)), h("br"),
          h("span", { class: "small muted" }, v.decided
            ? [h("span", { testid: `mv-${v.version}-right` }, fmtNum(v.right)), " right of ", h("span", { testid: `mv-${v.version}-decided` }, fmtNum(v.decided)), " decided"]
            : "no decisions yet")))))));
    return card;
  }

  function nextTraining(st) {
    const nt = st.next_training || {};
    const card = h("section", { class: "card", "aria-labelledby": "d-next", testid: "next-training" },
      h("h2", { id: "d-next" }, "Next retraining"));
    if (nt.labels_needed != null) {
      const bar = progressBar("next-labels");
      bar.set(nt.labels_share, `${nt.labels} of ${nt.labels_needed} new labels`);
      card.append(h("p", { class: "small" }, "New labels since the last training"), bar.el);
    }
    if (nt.minutes_needed != null) {
      const bar = progressBar("next-minutes");
      bar.set(nt.minutes_share || 0, nt.minutes == null ? `every ${nt.minutes_needed} min (after the first training)`
        : `${Math.round(nt.minutes)} of ${nt.minutes_needed} minutes`);
      card.append(h("p", { class: "small" }, "Time since the last training"), bar.el);
    }
    const ready = st.readiness || {};
    if (nt.training_running) card.append(h("p", { class: "small", testid: "next-reason" }, "A training is running now."));
    else if (ready.ready === false && (ready.reasons || []).length) {
      card.append(h("p", { class: "small", testid: "next-reason" }, "Not ready to train yet:"),
        h("ul", { class: "small muted" }, ready.reasons.map((r) => h("li", {}, r))));
    } else card.append(h("p", { class: "small", testid: "next-reason" }, nt.will_train ? `Training is due: ${nt.reason}` : nt.reason || ""));
    return card;
  }

  function precisionCard(st) {
    const card = h("section", { class: "card", "aria-labelledby": "d-prec", testid: "precision" },
      h("h2", { id: "d-prec" }, "Realised pre-label precision"),
      h("p", { class: "muted small" }, `Share of proposals people found right (confirmed or audited), with its 95% interval, against the target `,
        h("strong", { testid: "target-precision" }, fmtPct(st.target_precision)), "."));
    const list = st.precision || [];
    if (!list.length) { card.append(h("p", { class: "muted" }, "No decided proposals yet.")); return card; }
    for (const p of list) {
      const [lo, hi] = p.interval || [null, null];
      const iv = h("div", { class: "interval", title: `interval ${fmtPct(lo)} – ${fmtPct(hi)}` });
      if (lo != null && hi != null) iv.append(h("div", { class: "ci", style: { left: `${lo * 100}%`, width: `${(hi - lo) * 100}%` } }));
      if (p.precision != null) iv.append(h("div", { class: "point", style: { left: `calc(${p.precision * 100}% - 1px)` } }));
      iv.append(h("div", { class: "target", style: { left: `${(p.target ?? st.target_precision) * 100}%` } }));
      const [word, kind] = verdict(lo, hi, p.decided, p.target ?? st.target_precision);
      card.append(h("div", { testid: `precision-v${p.version}` },
        h("p", { class: "small" }, h("strong", {}, `model v${p.version ?? "?"}: `),
          h("span", { testid: "precision-value" }, fmtPct(p.precision)),
          ` (interval ${fmtPct(lo)} – ${fmtPct(hi)}) from ${p.decided} decided · ${p.open} open · ${p.auto_accepted} auto-accepted `,
          h("span", { class: `badge ${kind}`, testid: "precision-badge" }, word)),
        iv));
    }
    card.append(h("div", { class: "legend" }, h("span", {}, "▮ interval"), h("span", {}, "| realised"), h("span", { style: { color: "var(--err)" } }, "| target")));
    return card;
  }

  /** The interval against the target: below only when its top is under the target, met only when its bottom is over. */
  function verdict(lo, hi, decided, target) {
    if (!decided || lo == null || hi == null) return ["no decisions yet", ""];
    if (lo >= target) return ["meets target", "good"];
    if (hi < target) return ["below target", "hard"];
    return ["too few decisions", ""];
  }

  function runsCard(runs) {
    const tbody = h("tbody");
    for (const r of runs.slice(0, 10)) {
      const bar = progressBar(`run-progress-${r.id}`);
      bar.set(r.progress, r.state === "running" ? `${Math.round(r.progress * 100)}%` : r.state);
      const msg = h("span", { class: "small muted" }, r.message || "");
      const state = h("span", { class: "badge", testid: `run-state-${r.id}` }, r.state);
      const cancel = ["queued", "running"].includes(r.state)
        ? h("button", { type: "button", class: "icon", "aria-label": `Cancel job ${r.id}`, onclick: () => post(`/jobs/${r.id}/cancel`, {}).catch(showError) }, "Cancel") : null;
      tbody.append(h("tr", { testid: `run-${r.id}` },
        h("td", {}, `#${r.id} ${jobWord(r.kind)}`, h("br"), h("span", { class: "small muted" }, fmtTime(parseTime(r.created_at)))),
        h("td", {}, state), h("td", { style: { width: "40%" } }, bar.el, msg), h("td", {}, cancel)));
      if (["queued", "running"].includes(r.state)) {
        watchers.push(watchJob(r.id, (job) => {
          if (!job) return;
          bar.set(job.progress, job.state === "running" ? `${Math.round(job.progress * 100)}%` : job.state);
          state.textContent = job.state;
          msg.textContent = job.message || "";
          if (["succeeded", "failed", "cancelled"].includes(job.state) && cancel) cancel.remove();
        }));
      }
    }
    return h("section", { class: "card", "aria-labelledby": "d-runs" }, h("h2", { id: "d-runs" }, "Recent runs"),
      runs.length ? h("table", { testid: "runs" }, h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "State"), h("th", {}, "Progress"), h("th", {}, ""))), tbody)
        : h("p", { class: "muted" }, "No runs yet."));
  }

  function versionsCard(versions) {
    const card = h("section", { class: "card", "aria-labelledby": "d-versions", style: { marginTop: "1rem" }, testid: "model-versions" },
      h("h2", { id: "d-versions" }, "Model versions"));
    // where this deployment's jobs compute (LABELLOOP_DEVICE), from /health
    get("/health").then((hl) => { if (hl && hl.device) card.append(h("p", { class: "small muted", testid: "jobs-device" }, `Jobs run on ${hl.device}.`)); })
      .catch(() => {});
    if (!versions.length) { card.append(h("p", { class: "muted" }, "No model trained yet.")); return card; }
    const tbody = h("tbody");
    for (const v of versions) {
      const m = v.metrics || {};
      const metricText = Object.entries(m).filter(([k, x]) => typeof x === "number" && k !== "n_holdout")
        .slice(0, 4).map(([k, x]) => `${metricWord(k)} ${fmtNum(x)}`).join(" · ");
      const th = v.thresholds || {};
      const per = th.per_class || {};
      // auto: the threshold in force per class (pooled, a class's own, or none), not each class's own walk
      const force = (cls, t) => (th.auto && th.auto.thresholds ? th.auto.thresholds[cls] : t && t.threshold);
      tbody.append(h("tr", { testid: `version-${v.version}` },
        h("td", {}, h("strong", {}, `v${v.version}`), v.is_current ? h("span", { class: "badge model" }, " current") : null,
          h("br"), h("span", { class: "small muted", testid: `version-${v.version}-meta` },
            [v.algorithm, v.kind, m.device ? `trained on ${m.device}` : null, fmtTime(parseTime(v.created_at))]
              .filter(Boolean).join(" · "))),
        h("td", {}, h("span", { class: "badge" }, v.status)),
        h("td", { class: "num" }, fmtNum(v.n_train)), h("td", { class: "num" }, fmtNum(v.n_holdout)),
        h("td", { class: "small" }, metricText || (m.error ? h("span", { class: "warn" }, m.error) : "–")),
        h("td", { class: "small" }, h("div", { class: "chips" },
          Object.entries(per).map(([cls, t]) => h("span", { class: "chip", testid: `threshold-${v.version}-${cls}`, title: t && t.reason ? t.reason :
            t ? `precision ≥ ${fmtPct(t.lower_bound)} (bound) on ${t.n_above} hold-out items, coverage ${fmtPct(t.coverage)}` : "" },
          `${cls} `, force(cls, t) != null ? `≥ ${fmtThreshold(force(cls, t))}` : "not pre-labelled")),
          th.pooled && th.pooled.threshold != null ? h("span", { class: "chip" }, `all classes ≥ ${fmtThreshold(th.pooled.threshold)}`) : null,
          !Object.keys(per).length && th.reason ? h("span", { class: "muted" }, th.reason) : null),
          th.statement ? h("div", { class: "muted", testid: `statement-${v.version}` }, th.statement) : null)));
    }
    card.append(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", {}, "Status"),
      h("th", { class: "num" }, "Train"), h("th", { class: "num" }, "Hold-out"), h("th", {}, "Hold-out metrics"),
      h("th", {}, "Thresholds (per class)"))), tbody));
    return card;
  }

  await refresh();
  timer = setInterval(() => { if (!document.hidden && !document.querySelector("dialog[open]")) refresh(); }, 30000);
  return () => {
    stopped = true;
    clearInterval(timer);
    for (const w of watchers) w.close();
    for (const c of charts) if (c) c.destroy();
  };
}
