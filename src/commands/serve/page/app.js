// fkp serve's page: the overview, a pipeline's training, comparisons and faces,
// kept current by the server's event stream (/api/events). Every string that
// comes from a pipeline file reaches the page through textContent or an
// attribute, never as HTML.
"use strict";

// Every event received, for tests and latency measurements (bench/serve_latency.py).
window.__fkp = { events: [] };
const MAX_KEPT_EVENTS = 5000;
const COLOURS = ["#0b63ce", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7a5195", "#444444", "#f0e442", "#ef5675"];

const state = {
  overview: null,
  // The comparison's sort, filter and baseline, kept when it refreshes.
  compare: null,
  view: null, // { refresh(), onEvent(name, data) }
  // The status generation the overview was drawn from.
  generation: null,
  refreshTimer: null,
};

// ---------- small helpers ----------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    // (through the CSSOM: the server's Content-Security-Policy refuses style attributes)
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  const response = await fetch(path + query, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

function fmt(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function badge(text, kind, title) {
  return el("span", { class: "badge " + kind, title: title || undefined, "data-state": kind }, text);
}

function hashParams() {
  const [, query] = location.hash.split("?");
  return new URLSearchParams(query || "");
}

function link(href, text) {
  return el("a", { href }, text);
}

function setMain(...children) {
  for (const chart of document.querySelectorAll(".u-wrap")) chart.remove();
  const main = document.getElementById("main");
  main.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// The overview, kept for the live events; on failure the error is shown and null returned.
async function loadOverview(heading) {
  try {
    const overview = await api("/api/overview");
    state.overview = overview;
    state.generation = overview.generation;
    return overview;
  } catch (error) {
    setMain(heading ? el("h1", { text: heading }) : null, errorCard(error));
    return null;
  }
}

function errorCard(error) {
  return el("div", { class: "card problems" }, el("strong", { text: "Could not load: " }), error.message);
}

// ---------- charts (uPlot) ----------

// A line chart: xs and one array per series, with the values under the
// pointer in the legend and drag-to-zoom (double-click resets).
function lineChart(title, series, data, options = {}) {
  const box = el("div", { class: "card chart" }, el("h3", { text: title }));
  const width = Math.max(420, Math.min(660, (document.getElementById("main").clientWidth || 900) / 2 - 40));
  const plot = new uPlot(
    {
      width,
      height: 260,
      scales: { x: { time: false }, y: options.log ? { distr: 3 } : {} },
      // (epochs are whole numbers: no ticks between them)
      axes: [
        { label: options.xLabel || "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        { label: options.yLabel || "", size: 60 },
      ],
      series: [{ label: options.xLabel || "epoch" }].concat(
        series.map((s, i) => ({
          label: s,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          points: { show: data[0].length < 60 },
          value: (u, v) => fmt(v, options.digits ?? 4),
        })),
      ),
      legend: { live: true },
    },
    data,
    box,
  );
  box.dataset.points = String(data[0].length);
  box.update = (next) => {
    plot.setData(next);
    box.dataset.points = String(next[0].length);
  };
  return box;
}

// ---------- the event stream ----------

function connect() {
  const indicator = document.getElementById("connection");
  const source = new EventSource("/api/events");
  const keep = (name) => (event) => {
    let data = null;
    try {
      data = JSON.parse(event.data);
    } catch (_) {
      data = event.data;
    }
    const events = window.__fkp.events;
    events.push({ name, data, receivedAt: Date.now() });
    if (events.length > MAX_KEPT_EVENTS) events.splice(0, events.length - MAX_KEPT_EVENTS);
    onEvent(name, data);
  };
  for (const name of ["hello", "status", "run", "progress", "epoch", "lagged"]) {
    source.addEventListener(name, keep(name));
  }
  source.onopen = () => {
    indicator.textContent = "live";
    indicator.className = "connection live";
  };
  source.onerror = () => {
    indicator.textContent = "reconnecting…";
    indicator.className = "connection";
  };
}

function onEvent(name, data) {
  // (the stream's first event repeats the generation the page may have drawn already)
  const drawn = (name === "hello" || name === "status") && data && data.generation === state.generation;
  if (!drawn && (name === "status" || name === "run" || name === "lagged" || name === "hello")) {
    // The states changed: refetch what is shown, at most every 250 ms.
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => state.view && state.view.refresh && state.view.refresh(), 250);
  }
  if (state.view && state.view.onEvent) state.view.onEvent(name, data);
}

// ---------- overview ----------

function runCell(stage) {
  const run = stage.run;
  if (!run) return el("td", { class: "run" });
  const cell = el("td", { class: "run", "data-run": stage.key });
  fillRun(cell, run);
  return cell;
}

function fillRun(cell, run) {
  const epochs = run.epochs || 0;
  let done = run.epoch;
  if (run.batch && run.batch.epoch > run.epoch && run.batch.of > 0) done += run.batch.batch / run.batch.of;
  const fraction = epochs > 0 ? Math.min(1, done / epochs) : 0;
  const words = [];
  const current = run.state === "running" && run.batch && run.batch.epoch > run.epoch ? run.batch : null;
  if (run.state !== "running") words.push(run.state);
  // The epoch under way with its batches, or how many were done.
  if (current) words.push("epoch " + current.epoch + (epochs ? "/" + epochs : "") + " · batch " + current.batch + "/" + current.of);
  else words.push(run.epoch + (epochs ? " of " + epochs : "") + " epochs done");
  if (run.val_rmse_px !== null && run.val_rmse_px !== undefined) words.push("val RMSE " + fmt(run.val_rmse_px) + " px");
  if (run.images_per_s) words.push(fmt(run.images_per_s, 1) + " img/s");
  if (run.state === "running" && run.eta_s !== null && run.eta_s !== undefined) words.push("ETA " + duration(run.eta_s));
  const bar = el("div", { class: "progress" }, el("div", { style: "width:" + (fraction * 100).toFixed(1) + "%" }));
  cell.replaceChildren(run.state === "running" ? bar : badge(run.state, run.state, run.message), el("div", { text: words.join(" · ") }));
  if (run.message) cell.append(el("div", { text: run.message }));
}

function stageBadges(pipeline) {
  return pipeline.stages.map((s) => badge(s.stage, s.state, s.state + (s.reason ? ": " + s.reason : "")));
}

async function renderOverview() {
  const overview = await loadOverview();
  if (!overview) return;
  const selected = new Set();
  const compareButton = el("button", {
    text: "Compare selected",
    disabled: true,
    onclick: () => (location.hash = "#/compare?pipelines=" + encodeURIComponent([...selected].join(","))),
  });
  const rows = overview.pipelines.map((p) => {
    const training = p.stages.find((s) => s.run) || p.stages.find((s) => s.stage.startsWith("train"));
    const box = p.evaluated
      ? el("input", {
          type: "checkbox",
          "aria-label": "select " + p.name,
          onchange: (e) => {
            e.target.checked ? selected.add(p.name) : selected.delete(p.name);
            compareButton.disabled = selected.size === 0;
          },
        })
      : null;
    const links = [];
    if (p.evaluated) links.push(link("#/faces?a=" + encodeURIComponent(p.name), "faces"));
    if (p.members.length) links.push(link("#/compare?pipelines=" + encodeURIComponent(p.members.join(",")), "compare members"));
    if (p.report_page) links.push(el("a", { href: "/reports/" + p.report_page, target: "_blank", rel: "noopener" }, "report page"));
    return el(
      "tr",
      { "data-pipeline": p.name },
      el("td", {}, box),
      el("td", {}, link("#/pipeline/" + encodeURIComponent(p.name), p.name), el("div", { class: "quiet", text: p.file })),
      el("td", { text: p.description || "" }),
      el("td", {}, stageBadges(p)),
      training && training.run ? runCell(training) : el("td", { class: "run" }),
      el("td", {}, links.map((a, i) => [i ? " · " : "", a])),
    );
  });
  const problems = overview.problems.length
    ? el(
        "div",
        { class: "card problems" },
        el("strong", { text: overview.problems.length + " pipeline file(s) do not load" }),
        overview.problems.map((p) => el("pre", { text: (p.file ? p.file + ": " : "") + p.message })),
      )
    : null;
  setMain(
    el("h1", { text: "Pipelines" }),
    el("p", { class: "quiet", text: overview.workspace + " · " + overview.pipelines.length + " pipelines" }),
    problems,
    el("div", { class: "controls" }, compareButton),
    el(
      "table",
      { id: "overview" },
      el("thead", {}, el("tr", {}, ["", "pipeline", "description", "stages", "training", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows),
    ),
    overview.pipelines.length ? null : el("p", { class: "quiet", text: "No pipelines: add *.toml files to pipelines/." }),
  );
}

function overviewView() {
  return {
    refresh: renderOverview,
    onEvent(name, data) {
      if (name !== "progress" && name !== "epoch") return;
      const cell = document.querySelector('td[data-run="' + CSS.escape(data.key) + '"]');
      const stage = state.overview && findStage(state.overview, data.pipeline, data.stage);
      if (!cell || !stage || !stage.run) {
        if (name === "epoch" || name === "progress") onEvent("status", null);
        return;
      }
      if (name === "progress") {
        stage.run.batch = { epoch: data.epoch, batch: data.batch, of: data.batches };
        stage.run.epochs = data.epochs;
        stage.run.eta_s = data.eta_s;
      } else {
        stage.run.epoch = data.epoch;
        stage.run.val_rmse_px = data.val_rmse;
        stage.run.images_per_s = data.images_per_s;
      }
      fillRun(cell, stage.run);
    },
  };
}

function findStage(overview, pipeline, stage) {
  const p = overview.pipelines.find((q) => q.name === pipeline);
  return p && p.stages.find((s) => s.stage === stage);
}

// ---------- one pipeline ----------

function curveData(points) {
  const xs = points.map((p) => p.epoch);
  return {
    loss: [xs, points.map((p) => p.train_loss), points.map((p) => p.val_loss)],
    rmse: [xs, points.map((p) => p.val_rmse_px), points.map((p) => p.val_mae_px)],
    lr: [xs, points.map((p) => p.lr)],
    speed: [xs, points.map((p) => p.images_per_s)],
  };
}

async function renderPipeline(name) {
  let overview, curves, files;
  try {
    [overview, curves, files] = await Promise.all([
      api("/api/overview"),
      api("/api/curves", { pipeline: name }),
      api("/api/reports", { pipeline: name }),
    ]);
  } catch (error) {
    setMain(errorCard(error));
    return;
  }
  state.overview = overview;
  state.generation = overview.generation;
  const p = overview.pipelines.find((q) => q.name === name);
  if (!p) {
    setMain(errorCard(new Error("no pipeline `" + name + "`")));
    return;
  }
  const charts = {};
  const runs = curves.runs.map((run) => {
    const data = curveData(run.points);
    const set = {
      loss: lineChart("Loss (normalised targets)", ["train", "validation"], data.loss, { log: true }),
      rmse: lineChart("Validation error (pixels, labelled points)", ["RMSE px", "MAE px"], data.rmse, { digits: 3 }),
      lr: lineChart("Learning rate", ["lr"], data.lr, { digits: 6 }),
      speed: lineChart("Training speed", ["images/s"], data.speed, { digits: 1 }),
    };
    set.rmse.id = "curve-rmse" + (run.stage === "train" ? "" : "-" + run.stage.replace(/[^a-z0-9-]/gi, "-"));
    charts[run.stage] = { run, set };
    const stage = p.stages.find((s) => s.stage === run.stage);
    const status = el("div", { class: "run", "data-run": run.key || "" });
    if (stage && stage.run) fillRun(status, stage.run);
    else status.append(badge(run.state, run.state), " " + run.points.length + " epochs");
    return el("section", {}, el("h2", { text: "Training: " + run.stage }), status, el("div", { class: "charts" }, Object.values(set)));
  });
  const stageRows = p.stages.map((s) =>
    el(
      "tr",
      {},
      el("td", { text: s.stage }),
      el("td", {}, badge(s.state, s.state)),
      el("td", { text: s.reason || "" }),
      el("td", { class: "quiet", text: s.key ? s.key.slice(0, 12) : "" }),
    ),
  );
  const pictures = files.filter((f) => f.endsWith(".png"));
  const tables = files.filter((f) => f.endsWith(".md"));
  const pages = files.filter((f) => f.endsWith(".html"));
  setMain(
    el("h1", { text: p.name }),
    el("p", { class: "quiet", text: (p.description ? p.description + " · " : "") + p.file }),
    el(
      "p",
      {},
      p.evaluated ? link("#/faces?a=" + encodeURIComponent(p.name), "faces") : null,
      p.evaluated ? " · " : null,
      p.evaluated ? link("#/compare?pipelines=" + encodeURIComponent(p.name), "scores") : null,
      p.reports.length ? " · in reports: " : null,
      p.reports.map((r, i) => [i ? ", " : "", link("#/pipeline/" + encodeURIComponent(r), r)]),
    ),
    el("table", { id: "stages" }, el("tbody", {}, stageRows)),
    runs,
    el(
      "section",
      { class: "files" },
      el("h2", { text: "Reports" }),
      files.length ? null : el("p", { class: "quiet", text: "Nothing in reports/ yet: run the pipeline." }),
      pages.map((f) => el("p", {}, el("a", { href: "/reports/" + f, target: "_blank", rel: "noopener" }, f))),
      tables.map((f) => {
        const box = el("details", {}, el("summary", { text: f }));
        box.addEventListener("toggle", async () => {
          if (!box.open || box.dataset.loaded) return;
          box.dataset.loaded = "1";
          const text = await fetch("/reports/" + f).then((r) => r.text());
          box.append(el("pre", { class: "md", text }));
        });
        return box;
      }),
      pictures.map((f) => el("figure", {}, el("figcaption", { class: "quiet", text: f }), el("img", { src: "/reports/" + f, alt: f, loading: "lazy" }))),
    ),
  );
  state.view.onEvent = (event, data) => {
    if (!data || data.pipeline !== name) return;
    const entry = charts[data.stage];
    if (event === "epoch" && entry) {
      const points = entry.run.points.filter((q) => q.epoch < data.epoch);
      points.push(data);
      entry.run.points = points;
      const next = curveData(points);
      for (const key of Object.keys(entry.set)) entry.set[key].update(next[key]);
    }
    const stage = findStage(state.overview, data.pipeline, data.stage);
    const cell = document.querySelector('div[data-run="' + CSS.escape(data.key || "") + '"]');
    if (stage && stage.run && cell) {
      if (event === "progress") {
        stage.run.batch = { epoch: data.epoch, batch: data.batch, of: data.batches };
        stage.run.epochs = data.epochs;
        stage.run.eta_s = data.eta_s;
      } else if (event === "epoch") {
        stage.run.epoch = data.epoch;
        stage.run.val_rmse_px = data.val_rmse;
        stage.run.images_per_s = data.images_per_s;
      }
      fillRun(cell, stage.run);
    } else if (event === "progress" || event === "epoch") {
      onEvent("status", null);
    }
  };
}

// ---------- comparison ----------

const COLUMNS = [
  { key: "rank", label: "#", num: true, digits: 0 },
  { key: "pipeline", label: "pipeline" },
  { key: "arch", label: "network" },
  { key: "missing", label: "missing" },
  { key: "epochs_run", label: "epochs", num: true, digits: 0 },
  { key: "rmse_px", label: "RMSE px", num: true },
  { key: "delta", label: "Δ RMSE px", num: true },
  { key: "mae_px", label: "MAE px", num: true },
  { key: "pck_5", label: "PCK@5%", num: true, digits: 1 },
  { key: "pck_10", label: "PCK@10%", num: true, digits: 1 },
  { key: "rmse_without_tta_px", label: "RMSE no TTA", num: true },
  { key: "train_seconds", label: "train time", num: true, time: true },
  { key: "images_per_s", label: "img/s", num: true, digits: 1 },
];

function cellValue(row, key, baselineRow) {
  if (key === "delta") return baselineRow && row.rmse_px !== null ? row.rmse_px - baselineRow.rmse_px : null;
  if (key === "train_seconds" || key === "images_per_s") return row.timing ? row.timing[key] : null;
  return row[key];
}

async function renderCompare() {
  const params = hashParams();
  let overview, result;
  const query = {};
  if (params.get("pipelines")) query.pipelines = params.get("pipelines");
  try {
    [overview, result] = await Promise.all([api("/api/overview"), api("/api/compare", query)]);
  } catch (error) {
    setMain(el("h1", { text: "Compare" }), errorCard(error));
    return;
  }
  state.overview = overview;
  state.generation = overview.generation;
  const evaluated = overview.pipelines.filter((p) => p.evaluated);
  const chosen = new Set(params.get("pipelines") ? params.get("pipelines").split(",") : evaluated.map((p) => p.name));
  const selection = params.get("pipelines") || "";
  if (!state.compare || state.compare.selection !== selection) {
    state.compare = {
      selection,
      sortKey: params.get("sort") || "rank",
      ascending: params.get("order") !== "desc",
      baseline: params.get("baseline") || result.baseline || "",
      filter: params.get("filter") || "",
    };
  }
  const ui = state.compare;

  const tableBody = el("tbody");
  const head = el("tr");
  const table = el("table", { id: "compare-table" }, el("thead", {}, head), tableBody);
  const drawTable = () => {
    const { sortKey, ascending, baseline } = ui;
    const baselineRow = result.rows.find((r) => r.pipeline === baseline);
    const needle = ui.filter.toLowerCase();
    const rows = result.rows
      .filter((r) => !needle || [r.pipeline, r.description, r.arch, r.missing].join(" ").toLowerCase().includes(needle))
      .sort((a, b) => {
        const x = cellValue(a, sortKey, baselineRow);
        const y = cellValue(b, sortKey, baselineRow);
        if (x === y) return a.rank - b.rank;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const order = typeof x === "string" ? x.localeCompare(y) : x - y;
        return ascending ? order : -order;
      });
    head.replaceChildren(
      ...COLUMNS.map((c) =>
        el("th", {
          class: "sortable" + (c.key === sortKey ? (ascending ? " sorted-asc" : " sorted-desc") : ""),
          "data-key": c.key,
          text: c.label,
          onclick: () => {
            ui.ascending = c.key === sortKey ? !ascending : true;
            ui.sortKey = c.key;
            drawTable();
          },
        }),
      ),
    );
    tableBody.replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { "data-pipeline": r.pipeline, class: r.pipeline === baseline ? "baseline" : "" },
          COLUMNS.map((c) => {
            const value = cellValue(r, c.key, baselineRow);
            if (c.key === "pipeline") return el("td", { title: r.description || "" }, link("#/pipeline/" + encodeURIComponent(r.pipeline), r.pipeline));
            if (!c.num) return el("td", { text: value ?? "" });
            const text = c.time ? duration(value) : (c.key === "delta" && value > 0 ? "+" : "") + fmt(value, c.digits ?? 3);
            return el("td", { class: "num", text });
          }),
        ),
      ),
    );
  };

  const picker = el(
    "details",
    {},
    el("summary", { text: "Pipelines (" + chosen.size + " of " + evaluated.length + ")" }),
    el(
      "div",
      { class: "controls" },
      evaluated.map((p) =>
        el(
          "label",
          {},
          el("input", {
            type: "checkbox",
            checked: chosen.has(p.name),
            onchange: (e) => (e.target.checked ? chosen.add(p.name) : chosen.delete(p.name)),
          }),
          " " + p.name,
        ),
      ),
    ),
    el("button", {
      text: "Compare these",
      onclick: () => (location.hash = "#/compare?pipelines=" + encodeURIComponent([...chosen].join(","))),
    }),
  );
  const reports = overview.pipelines.filter((p) => p.members.length);
  const baselineSelect = el(
    "select",
    {
      id: "baseline",
      onchange: (e) => {
        ui.baseline = e.target.value;
        drawTable();
      },
    },
    el("option", { value: "", text: "no baseline" }),
    result.rows.map((r) => el("option", { value: r.pipeline, text: r.pipeline, selected: r.pipeline === ui.baseline })),
  );
  const filterBox = el("input", {
    type: "search",
    id: "filter",
    placeholder: "filter rows",
    value: ui.filter,
    oninput: (e) => {
      ui.filter = e.target.value;
      drawTable();
    },
  });
  drawTable();

  const named = result.rows.map((r) => r.pipeline);
  const longest = Math.max(0, ...result.rows.map((r) => (r.history || []).length));
  const epochs = Array.from({ length: longest }, (_, i) => i + 1);
  const curveOf = (field) => [epochs].concat(result.rows.map((r) => epochs.map((e) => ((r.history || []).find((h) => h.epoch === e) || {})[field] ?? null)));
  const keypointTable = el(
    "table",
    { id: "keypoint-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "keypoint (RMSE px)" }), named.map((n) => el("th", { text: n })))),
    el(
      "tbody",
      {},
      result.keypoints.map((k, i) => {
        const values = result.rows.map((r) => (r.keypoint_rmse_px || [])[i]);
        const best = Math.min(...values.filter((v) => v !== null && v !== undefined));
        return el(
          "tr",
          {},
          el("td", { text: k }),
          values.map((v) => el("td", { class: "num", text: fmt(v), style: v === best && values.length > 1 ? "font-weight:700" : undefined })),
        );
      }),
    ),
  );
  const groups = result.seed_groups.length
    ? el(
        "section",
        {},
        el("h2", { text: "Over seeds (mean ± std)" }),
        el(
          "table",
          { id: "seed-groups" },
          el("thead", {}, el("tr", {}, ["group", "runs", "RMSE px", "MAE px", "PCK@10%"].map((h) => el("th", { text: h })))),
          el(
            "tbody",
            {},
            result.seed_groups.map((g) =>
              el(
                "tr",
                {},
                el("td", { text: g.name }),
                el("td", { class: "num", text: g.pipelines.length }),
                [g.rmse_px, g.mae_px, g.pck_10].map((s) => el("td", { class: "num", text: s ? fmt(s.mean) + " ± " + fmt(s.std) : "–" })),
              ),
            ),
          ),
        ),
      )
    : null;
  const waiting = result.not_compared.length
    ? el(
        "div",
        { class: "card" },
        el("strong", { text: "Not compared (not fully cached):" }),
        el("ul", {}, result.not_compared.map((n) => el("li", {}, badge(n.state, n.state), " " + n.pipeline + " — " + n.reason))),
      )
    : null;
  setMain(
    el("h1", { text: "Compare" }),
    el("div", { class: "controls" }, picker),
    reports.length
      ? el("p", {}, "Reports: ", reports.map((r, i) => [i ? " · " : "", link("#/compare?pipelines=" + encodeURIComponent(r.members.join(",")), r.name)]))
      : null,
    el("div", { class: "controls" }, el("label", { text: "Baseline " }, baselineSelect), filterBox),
    result.notes && result.notes.length ? el("p", { class: "quiet", text: result.notes.join(" ") }) : null,
    table,
    waiting,
    groups,
    result.rows.length
      ? el(
          "div",
          { class: "charts" },
          lineChart("Validation RMSE per epoch (px)", named, curveOf("val_rmse_px"), { digits: 3 }),
          lineChart("Training loss per epoch", named, curveOf("train_loss"), { log: true }),
        )
      : null,
    result.rows.length ? el("section", {}, el("h2", { text: "Per keypoint" }), keypointTable) : null,
  );
}

// ---------- faces ----------

const FACES_PER_PAGE = 48;

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("cannot load " + src));
    image.src = src;
  });
}

// Draws a face with its true keypoints (green dots) and predicted ones
// (crosses); `only` limits them to one keypoint.
function drawFace(canvas, image, face, keypoints, only, colour, scale) {
  const side = image.width;
  canvas.width = side * scale;
  canvas.height = side * scale;
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.drawImage(image, 0, 0, side * scale, side * scale);
  let drawn = 0;
  keypoints.forEach((_, k) => {
    if (only !== null && only !== k) return;
    const [tx, ty, px, py] = [face.truth[2 * k], face.truth[2 * k + 1], face.predicted[2 * k], face.predicted[2 * k + 1]];
    if (tx !== null && ty !== null) {
      g.fillStyle = "#12b76a";
      g.beginPath();
      g.arc(tx * scale, ty * scale, Math.max(2, scale), 0, 2 * Math.PI);
      g.fill();
    }
    if (px !== null && py !== null) {
      g.strokeStyle = colour;
      g.lineWidth = Math.max(1, scale / 2);
      const r = Math.max(2, scale * 1.2);
      g.beginPath();
      g.moveTo(px * scale - r, py * scale - r);
      g.lineTo(px * scale + r, py * scale + r);
      g.moveTo(px * scale + r, py * scale - r);
      g.lineTo(px * scale - r, py * scale + r);
      g.stroke();
      drawn += 1;
    }
  });
  canvas.dataset.keypoints = String(drawn);
}

function faceError(face, only) {
  if (only === null) return face.rmse_px;
  const [tx, ty, px, py] = [face.truth[2 * only], face.truth[2 * only + 1], face.predicted[2 * only], face.predicted[2 * only + 1]];
  if ([tx, ty, px, py].some((v) => v === null)) return null;
  return Math.hypot(tx - px, ty - py);
}

async function renderFaces() {
  const params = hashParams();
  const overview = await loadOverview();
  if (!overview) return;
  const evaluated = overview.pipelines.filter((p) => p.evaluated);
  const a = params.get("a") || (evaluated[0] && evaluated[0].name);
  const b = params.get("b") || "";
  if (!a) {
    setMain(el("h1", { text: "Faces" }), el("p", { class: "quiet", text: "No pipeline with [evaluate]." }));
    return;
  }
  let facesA, facesB;
  try {
    facesA = await api("/api/faces", { pipeline: a });
    facesB = b ? await api("/api/faces", { pipeline: b }) : null;
  } catch (error) {
    setMain(el("h1", { text: "Faces" }), errorCard(error));
    return;
  }
  const only = params.get("keypoint") === null || params.get("keypoint") === "" ? null : Number(params.get("keypoint"));
  const sort = params.get("sort") || "worst";
  let shown = Number(params.get("shown")) || FACES_PER_PAGE;
  const go = (change) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(change)) next.set(k, v);
    location.hash = "#/faces?" + next.toString();
  };
  const selectOf = (id, value, options, onchange) =>
    el("select", { id, onchange: (e) => onchange(e.target.value) }, options.map(([v, t]) => el("option", { value: v, text: t, selected: String(v) === String(value) })));
  const names = evaluated.map((p) => [p.name, p.name]);
  const sorted = facesA.faces
    .map((face) => ({ face, error: faceError(face, only) }))
    .filter((f) => only === null || f.error !== null)
    .sort((x, y) => {
      if (sort === "row") return x.face.row - y.face.row;
      if (x.error === null) return 1;
      if (y.error === null) return -1;
      return sort === "best" ? x.error - y.error : y.error - x.error;
    });
  const bySource = new Map((facesB ? facesB.faces : []).map((f) => [f.source_row, f]));
  const detail = el("div", { id: "face-detail" });
  const grid = el("div", { class: "faces", id: "faces" });
  const more = el("button", { text: "More faces", onclick: () => fill(shown + FACES_PER_PAGE) });
  const open = async (face) => {
    const other = bySource.get(face.source_row);
    const side = async (pipeline, f, colour) => {
      const canvas = el("canvas", { class: "face-large" });
      const image = await loadImage("/api/face.png?" + new URLSearchParams({ pipeline, row: f.row }));
      drawFace(canvas, image, f, facesA.keypoints, only, colour, 4);
      return el("figure", {}, canvas, el("figcaption", { text: pipeline + " · face " + f.source_row + " · RMSE " + fmt(f.rmse_px, 2) + " px" }));
    };
    const figures = [await side(a, face, "#f04438")];
    if (b && other) figures.push(await side(b, other, "#2e90fa"));
    else if (b) figures.push(el("p", { class: "quiet", text: b + " has no prediction for this face (another validation split)." }));
    detail.replaceChildren(
      el("h2", { text: "Face " + face.source_row }),
      el("p", { class: "legend" }, el("span", { class: "dot-truth", text: "● true" }), "   ", el("span", { class: "dot-pred", text: "✕ " + a }), b ? el("span", { class: "dot-pred2", text: "   ✕ " + b }) : null),
      el("div", { class: "pair" }, figures),
    );
    detail.scrollIntoView({ behavior: "smooth" });
  };
  const fill = (count) => {
    shown = count;
    for (const { face, error } of sorted.slice(grid.children.length, count)) {
      const canvas = el("canvas", { width: 192, height: 192 });
      const card = el("div", { class: "face", "data-row": face.row, onclick: () => open(face) }, canvas, el("div", { text: "face " + face.source_row + " · " + fmt(error, 2) + " px" }));
      grid.append(card);
      loadImage("/api/face.png?" + new URLSearchParams({ pipeline: a, row: face.row }))
        .then((image) => drawFace(canvas, image, face, facesA.keypoints, only, "#f04438", 2))
        .catch(() => card.append(el("div", { class: "quiet", text: "no picture" })));
    }
    more.hidden = grid.children.length >= sorted.length;
  };
  setMain(
    el("h1", { text: "Validation faces" }),
    el(
      "div",
      { class: "controls" },
      el("label", { text: "Pipeline " }, selectOf("face-a", a, names, (v) => go({ a: v }))),
      el("label", { text: "beside " }, selectOf("face-b", b, [["", "none"]].concat(names), (v) => go({ b: v }))),
      el("label", { text: "Sort " }, selectOf("face-sort", sort, [["worst", "worst first"], ["best", "best first"], ["row", "by face"]], (v) => go({ sort: v }))),
      el("label", { text: "Keypoint " }, selectOf("face-keypoint", only === null ? "" : only, [["", "all"]].concat(facesA.keypoints.map((k, i) => [i, k])), (v) => go({ keypoint: v }))),
    ),
    el("p", { class: "quiet", text: sorted.length + " faces · error is RMSE over the face's labelled points (or the keypoint's distance), pixels" }),
    detail,
    grid,
    more,
  );
  fill(shown);
}

// ---------- routing ----------

function route() {
  const [path] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  let render;
  if (parts[0] === "pipeline" && parts[1]) {
    const name = decodeURIComponent(parts[1]);
    render = () => renderPipeline(name);
  } else if (parts[0] === "compare") render = renderCompare;
  else if (parts[0] === "faces") render = renderFaces;
  else render = renderOverview;
  state.view = parts[0] === undefined || !["pipeline", "compare", "faces"].includes(parts[0]) ? overviewView() : { refresh: render };
  state.view.refresh = render;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("current", a.getAttribute("href") === "#/" + (parts[0] || ""));
  render();
}

window.addEventListener("hashchange", route);
connect();
route();
