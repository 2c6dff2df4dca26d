// The decoding explorer's front end: one script for both of its homes.
//
// - In a notebook, minigpt.explore(model, prompt) is an anywidget whose module is this file (`render` below).
//   Python computes every probability with minigpt.logits.process_logits and sends them as the `view`
//   trait; this script only draws them and sends the sliders' values and the buttons back.
// - `minigpt explore PROMPT --out page.html` inlines this file into a self-contained page (`mountPage`).
//   No Python runs there, so `processStep` applies the same transforms, in the same order, to each step's
//   stored raw logits: repetition penalty -> temperature -> top-k -> top-p -> min-p (transformers' order).

const ROWS = 20; // tokens drawn as bars, as minigpt.explore.ROWS
const HOVER_ROWS = 8; // tokens listed when hovering a generated token

// In pipeline order. `off` is the value that switches a transform off, as in process_logits.
const CONTROLS = [
  { name: "repetition_penalty", label: "repetition penalty", min: 0.5, max: 3, step: 0.01, off: 1,
    hint: "> 1 makes tokens already in the text less likely; 1 = off" },
  { name: "temperature", label: "temperature", min: 0.05, max: 2, step: 0.01, off: null,
    hint: "divides the logits: < 1 sharpens, > 1 flattens" },
  { name: "top_k", label: "top-k", min: 0, max: 200, step: 1, off: 0,
    hint: "keep the k most likely tokens; 0 = off" },
  { name: "top_p", label: "top-p", min: 0.01, max: 1, step: 0.01, off: 1,
    hint: "keep the most likely tokens until their mass reaches p; 1 = off" },
  { name: "min_p", label: "min-p", min: 0, max: 1, step: 0.01, off: 0,
    hint: "drop tokens below min-p \u00d7 the top probability; 0 = off" },
];

const STYLE = `
.mgx { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fff;
  max-width: 920px; padding: 12px 14px; border: 1px solid #ddd; border-radius: 6px; box-sizing: border-box; }
.mgx h2 { font-size: 16px; margin: 0 0 4px; }
.mgx .mgx-sub { color: #555; font-size: 12px; margin-bottom: 8px; }
.mgx .mgx-text { font: 14px/1.7 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-word;
  background: #fafafa; border: 1px solid #eee; border-radius: 4px; padding: 6px 8px; margin-bottom: 8px; }
.mgx .mgx-prompt { font-weight: 600; }
.mgx .mgx-tok { border-radius: 3px; cursor: default; }
.mgx .mgx-future { opacity: 0.35; }
.mgx .mgx-current { outline: 2px solid #d62728; outline-offset: 1px; }
.mgx .mgx-nav { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 8px; }
.mgx button { font: inherit; padding: 3px 10px; border: 1px solid #999; border-radius: 4px; background: #f4f4f4; cursor: pointer; }
.mgx button:hover:not(:disabled) { background: #e6eef7; }
.mgx button:disabled { opacity: 0.5; cursor: default; }
.mgx .mgx-controls { display: grid; grid-template-columns: 11em 1fr 5.5em; gap: 2px 8px; align-items: center; margin-bottom: 6px; }
.mgx .mgx-controls label { white-space: nowrap; }
.mgx .mgx-controls input[type=number] { width: 5em; font: inherit; }
.mgx .mgx-controls input[type=range] { width: 100%; }
.mgx .mgx-hint { grid-column: 2 / 4; color: #666; font-size: 11px; margin: -3px 0 3px; }
.mgx .mgx-error { color: #b00020; background: #fdecee; border-radius: 4px; padding: 4px 8px; margin: 4px 0; }
.mgx .mgx-error:empty { display: none; }
.mgx .mgx-stale { opacity: 0.4; }
.mgx .mgx-stats { margin: 6px 0; }
.mgx .mgx-bars { display: grid; grid-template-columns: minmax(7em, max-content) 1fr 1fr; gap: 2px 10px; align-items: center; }
.mgx .mgx-colhead { font-size: 12px; color: #555; font-weight: 600; }
.mgx .mgx-label { font: 13px ui-monospace, Menlo, Consolas, monospace; white-space: pre; text-align: right; }
.mgx .mgx-row { display: contents; }
.mgx .mgx-row.mgx-click .mgx-label, .mgx .mgx-row.mgx-click .mgx-cell { cursor: pointer; }
.mgx .mgx-row.mgx-click:hover .mgx-label { text-decoration: underline; }
.mgx .mgx-cell { display: flex; align-items: center; height: 18px; }
.mgx .mgx-bar { height: 100%; min-width: 1px; border-radius: 2px; }
.mgx .mgx-num { margin-left: 4px; font-size: 12px; color: #111; font-variant-numeric: tabular-nums; }
.mgx .mgx-raw .mgx-bar { background: #9ecae1; }
.mgx .mgx-kept .mgx-bar { background: #1f77b4; }
.mgx .mgx-removed .mgx-bar { background: #c7c7c7; }
.mgx .mgx-removed .mgx-num { color: #777; }
.mgx .mgx-restrow .mgx-label { font-style: italic; font-family: inherit; }
.mgx .mgx-chosen .mgx-label { color: #d62728; font-weight: 700; }
.mgx .mgx-legend { font-size: 12px; color: #444; margin-top: 8px; }
.mgx .mgx-key { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -2px; margin: 0 4px 0 10px; }
.mgx .mgx-note { font-size: 11px; color: #666; margin-top: 8px; }
`;

/** A token as a label that shows what it is, as minigpt.viz.token_label: spaces as ␣, newlines escaped. */
function tokenLabel(text) {
  return text
    .replace(/\\/g, "\\\\")
    .replace(/ /g, "\u2423")
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t")
    .replace(/\r/g, "\\r")
    .replace(/[\u0000-\u001f\u007f]/g, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function isOff(name, value) {
  const control = CONTROLS.find((c) => c.name === name);
  return value === null || (control.off !== null && value === control.off);
}

function shown(value) {
  // a value as Python's messages show it: numbers plain, anything else quoted
  return typeof value === "number" ? String(value) : `'${value}'`;
}

/** The page's copy of minigpt.explore.decoding_settings: "" when fine, else the library's message. */
function checkSettings(s) {
  const real = (v) => typeof v === "number" && !Number.isNaN(v);
  const t = s.temperature;
  if (!(real(t) && t > 0 && t < Infinity)) return `temperature must be a finite number > 0, got ${shown(t)}`;
  const k = s.top_k;
  if (!isOff("top_k", k) && !(Number.isInteger(k) && k >= 1)) return `top_k must be an integer >= 1, got ${shown(k)}`;
  for (const name of ["top_p", "min_p"]) {
    const v = s[name];
    if (!isOff(name, v) && !(real(v) && v > 0 && v <= 1)) return `${name} must be in (0, 1], got ${shown(v)}`;
  }
  const r = s.repetition_penalty;
  if (!isOff("repetition_penalty", r) && !(real(r) && r > 0)) return `repetition_penalty must be > 0, got ${shown(r)}`;
  return "";
}

function typedArray(b64, Type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer); // little-endian, as minigpt.explore wrote it (every browser's byte order)
}

/** One step of the page's data, its base64 arrays decoded. */
function decodeStep(step) {
  return {
    ids: typedArray(step.ids, Int32Array), // tokens stored exactly ...
    logits: typedArray(step.logits, Float32Array), // ... with their raw logits
    values: typedArray(step.values, Float32Array), // the other tokens as bins: log-mean-exp of each bin
    counts: typedArray(step.counts, Int32Array), // and how many tokens it holds
  };
}

/** Per-token probabilities softmax(z) when item i stands for `count[i]` tokens of logit z[i]. */
function softmaxTokens(z, count) {
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) if (count[i] > 0 && z[i] > max) max = z[i];
  const p = new Float64Array(z.length);
  let total = 0;
  for (let i = 0; i < z.length; i++) {
    if (count[i] > 0) {
      p[i] = Math.exp(z[i] - max);
      total += count[i] * p[i];
    }
  }
  for (let i = 0; i < z.length; i++) p[i] /= total;
  return p;
}

/**
 * The page's process_logits: the view of one step under settings `s` (which checkSettings accepted).
 * Items are the exactly stored tokens and the tail's bins (all tokens of a bin share its logit); each
 * transform keeps a number of tokens per item. `context` is the text's ids before this step.
 */
function processStep(step, context, s, nRows = ROWS) {
  const H = step.ids.length, n = H + step.values.length;
  const z = new Float64Array(n), count = new Float64Array(n);
  for (let i = 0; i < H; i++) { z[i] = step.logits[i]; count[i] = 1; }
  for (let j = 0; j < step.values.length; j++) { z[H + j] = step.values[j]; count[H + j] = step.counts[j]; }
  const raw = softmaxTokens(z, count);

  // 1. repetition penalty: positive logits divided, negative multiplied (every token of the text is stored exactly)
  if (!isOff("repetition_penalty", s.repetition_penalty)) {
    const r = s.repetition_penalty, seen = new Set(context);
    for (let i = 0; i < H; i++) if (seen.has(step.ids[i])) z[i] = z[i] < 0 ? z[i] * r : z[i] / r;
  }
  const penalised = Float64Array.from(z);
  // 2. temperature
  for (let i = 0; i < n; i++) z[i] /= s.temperature;
  const before = softmaxTokens(z, count); // what the cuts below start from
  const desc = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
  const keep = Float64Array.from(count); // how many tokens of each item are still in

  // 3. top-k: the k largest logits, every token tied with the k-th included
  if (!isOff("top_k", s.top_k)) {
    let before = 0, kth = -Infinity;
    for (const i of desc) {
      if (before + count[i] >= s.top_k) { kth = z[i]; break; }
      before += count[i];
    }
    let above = 0;
    for (const i of desc) {
      if (z[i] < kth) keep[i] = 0;
      else if (i >= H && z[i] === kth) keep[i] = Math.min(count[i], Math.max(1, s.top_k - above)); // a bin cut inside
      above += count[i];
    }
  }
  // 4. top-p: from the least likely up, drop tokens while their running mass stays <= 1 - p
  if (!isOff("top_p", s.top_p)) {
    const q = softmaxTokens(z, keep), limit = 1 - s.top_p, top = desc[0];
    let mass = 0;
    for (let a = desc.length - 1; a >= 0; a--) {
      const i = desc[a];
      if (keep[i] === 0) continue;
      // tokens j = 1, 2, ... of this item whose running mass mass + j * q stays <= 1 - p
      const fit = q[i] > 0 ? Math.floor((limit - mass) / q[i]) : mass <= limit ? keep[i] : 0;
      let drop = Math.min(keep[i], Math.max(0, fit));
      if (i === top) drop = Math.min(drop, keep[i] - 1); // the most likely token is always kept
      mass += keep[i] * q[i];
      keep[i] -= drop;
      if (keep[i] > 0) break; // the running mass only grows: every token after this one stays
    }
  }
  // 5. min-p: drop tokens less likely than min_p times the most likely one
  if (!isOff("min_p", s.min_p)) {
    const top = desc[0];
    for (let i = 0; i < n; i++) if (i !== top && keep[i] > 0 && Math.exp(z[i] - z[top]) < s.min_p) keep[i] = 0;
  }

  const p = softmaxTokens(z, keep);
  const head = Array.from({ length: H }, (_, i) => i).sort((a, b) => penalised[b] - penalised[a] || a - b);
  const inRows = new Set(head.slice(0, nRows));
  const rest = { raw: 0, p: 0, count: 0 };
  let entropy = 0, kept = 0, binsIn = 0, binsCut = 0;
  for (let i = 0; i < n; i++) {
    if (keep[i] > 0) { entropy -= keep[i] * p[i] * Math.log(p[i]); kept += keep[i]; }
    if (i >= H) { binsIn += keep[i] > 0; binsCut += keep[i] < count[i]; }
    if (!inRows.has(i)) { rest.raw += count[i] * raw[i]; rest.p += keep[i] * p[i]; rest.count += count[i]; }
  }
  return {
    rows: head.slice(0, nRows).map((i) =>
      ({ id: step.ids[i], raw: raw[i], before: before[i], p: keep[i] > 0 ? p[i] : 0, kept: keep[i] > 0 })),
    rest,
    entropy,
    kept,
    vocab: count.reduce((a, b) => a + b, 0),
    approx: binsIn > 0 && binsCut > 0, // a cut fell among the binned tokens: placed to within a bin
  };
}

function fmt(x) {
  return x.toFixed(3);
}

function controlsFor(root, ctrl) {
  const grid = el("div", "mgx-controls");
  const inputs = {};
  CONTROLS.forEach((c, index) => {
    const label = el("label", "", `${index + 1}. ${c.label}`);
    const range = el("input");
    Object.assign(range, { type: "range", min: c.min, max: c.max, step: c.step, name: c.name });
    range.setAttribute("aria-label", c.label);
    const number = el("input");
    Object.assign(number, { type: "number", step: "any", name: c.name });
    number.setAttribute("aria-label", `${c.label} value`);
    range.addEventListener("input", () => {
      number.value = range.value;
      ctrl.set(c.name, Number(range.value));
    });
    number.addEventListener("change", () => {
      const text = number.value.trim(), value = Number(text);
      // a number goes as a number; anything else as typed, so the check can name it
      ctrl.set(c.name, text !== "" && Number.isFinite(value) ? value : text);
    });
    grid.append(label, range, number, el("div", "mgx-hint", c.hint));
    inputs[c.name] = { range, number };
  });
  root.append(grid);
  return inputs;
}

/** Build the explorer's DOM in `root`; `ctrl` is the widget's or the page's side. Returns `update`. */
function buildUI(root, ctrl) {
  const box = el("div", "mgx");
  box.append(el("style", "", STYLE));
  box.append(el("h2", "", "Next-token distribution: raw and after the decoding transforms"));
  const sub = el("div", "mgx-sub", ctrl.subtitle);
  const text = el("div", "mgx-text");
  const nav = el("div", "mgx-nav");
  box.append(sub, text, nav);
  const inputs = controlsFor(box, ctrl);
  const error = el("div", "mgx-error");
  error.setAttribute("role", "alert");
  const stats = el("div", "mgx-stats");
  const bars = el("div", "mgx-bars");
  const legend = el("div", "mgx-legend");
  legend.innerHTML =
    '<span class="mgx-key" style="background:#9ecae1;margin-left:0"></span>raw: the model\'s probabilities' +
    '<span class="mgx-key" style="background:#1f77b4"></span>processed, kept' +
    '<span class="mgx-key" style="background:#c7c7c7"></span>removed (probability 0; the bar shows what it had before the cut)' +
    '<span class="mgx-key" style="background:rgba(31,119,180,0.6)"></span>text: shaded by the probability each token had when chosen';
  box.append(error, stats, bars, legend);
  if (ctrl.note) box.append(el("div", "mgx-note", ctrl.note));
  root.append(box);

  const buttons = {};
  if (ctrl.mode === "widget") {
    for (const [action, title] of [["greedy", "take the most likely token"], ["sample", "draw a token with the seeded generator"], ["back", "remove the last token"]]) {
      const b = el("button", `mgx-${action}`);
      b.title = title;
      b.addEventListener("click", () => ctrl.act(action));
      buttons[action] = b;
    }
    const seed = el("input");
    Object.assign(seed, { type: "number", step: 1, min: 0, name: "seed", style: "width: 5em" });
    seed.setAttribute("aria-label", "seed");
    seed.addEventListener("change", () => {
      const value = Number(seed.value);
      ctrl.set("seed", seed.value.trim() !== "" && Number.isFinite(value) ? value : seed.value);
    });
    inputs.seed = { number: seed };
    nav.append(buttons.greedy, buttons.sample, el("span", "", "seed"), seed, buttons.back);
  } else {
    const slider = el("input");
    Object.assign(slider, { type: "range", min: 0, max: ctrl.steps - 1, step: 1, name: "step", value: 0 });
    slider.setAttribute("aria-label", "step");
    const prev = el("button", "mgx-prev", "\u25c0"), next = el("button", "mgx-next", "\u25b6");
    const where = el("span", "mgx-where");
    slider.addEventListener("input", () => ctrl.setStep(Number(slider.value)));
    prev.addEventListener("click", () => ctrl.setStep(ctrl.step() - 1));
    next.addEventListener("click", () => ctrl.setStep(ctrl.step() + 1));
    const reset = el("button", "mgx-reset", "reset the sliders");
    reset.title = "put every slider back where the replay was sampled";
    reset.addEventListener("click", () => ctrl.reset());
    nav.append(prev, slider, next, where, reset);
    Object.assign(buttons, { slider, prev, next, where });
  }

  function drawText(view) {
    text.replaceChildren(el("span", "mgx-prompt", view.prompt));
    view.tokens.forEach((t, i) => {
      const span = el("span", "mgx-tok", t.text.replace(/\n/g, "\u21b5\n"));
      const alpha = Math.max(0.06, t.p);
      span.style.background = `rgba(31, 119, 180, ${alpha.toFixed(3)})`;
      if (alpha > 0.55) span.style.color = "#fff";
      const lines = t.dist.map(([s, q]) => `  ${tokenLabel(s).padEnd(12)} ${fmt(q)}`);
      span.title = `${tokenLabel(t.text)}: p = ${fmt(t.p)} when chosen (${t.how})\ndrawn from:\n${lines.join("\n")}`;
      span.dataset.p = String(t.p);
      if (ctrl.mode === "page") {
        span.style.cursor = "pointer";
        span.addEventListener("click", () => ctrl.setStep(i));
        if (i > view.current) span.classList.add("mgx-future");
        if (i === view.current) span.classList.add("mgx-current");
      }
      text.append(span);
    });
  }

  function bar(kind, value, scale, label = fmt(value)) {
    const cell = el("div", `mgx-cell ${kind}`);
    const fill = el("div", "mgx-bar");
    fill.style.width = `calc((100% - 7em) * ${Math.min(1, value / scale).toFixed(4)})`; // room for the number
    cell.append(fill, el("span", "mgx-num", label));
    return cell;
  }

  function drawBars(view) {
    // one scale for both columns, so raw and processed bars compare; the rest gets 0 to 1 (it can dwarf them)
    const scale = Math.max(1e-12, ...view.rows.map((r) => Math.max(r.raw, r.p, r.before)));
    const children = [el("div", "mgx-colhead", "token"), el("div", "mgx-colhead", "raw probability"),
      el("div", "mgx-colhead", "processed probability")];
    for (const r of view.rows) {
      const row = el("div", "mgx-row mgx-token" + (ctrl.mode === "widget" ? " mgx-click" : ""));
      Object.assign(row.dataset, { id: r.id, raw: String(r.raw), before: String(r.before), p: String(r.p), kept: String(r.kept) });
      const label = el("div", "mgx-label", tokenLabel(r.text));
      if (r.id === view.chosen) {
        row.classList.add("mgx-chosen");
        label.textContent = "\u25b6 " + label.textContent;
        label.title = "the token the replay drew at this step";
      }
      // a removed token's grey bar shows what it had before the cuts (top-k, top-p, min-p) took it out
      const processed = r.kept ? bar("mgx-kept", r.p, scale) : bar("mgx-removed", r.before, scale, `0 (was ${fmt(r.before)})`);
      processed.title = r.kept ? "" : `removed by top-k, top-p or min-p; before them it had ${fmt(r.before)}`;
      row.append(label, bar("mgx-raw", r.raw, scale), processed);
      if (ctrl.mode === "widget") {
        row.title = `click to append ${tokenLabel(r.text)}`;
        row.addEventListener("click", () => ctrl.act("choose", r.id));
      }
      children.push(row);
    }
    const rest = el("div", "mgx-row mgx-restrow");
    Object.assign(rest.dataset, { raw: String(view.rest.raw), p: String(view.rest.p) });
    rest.append(el("div", "mgx-label", `rest of the vocabulary (${view.rest.count.toLocaleString("en-US")} tokens)`),
      bar("mgx-raw", view.rest.raw, 1), bar("mgx-kept", view.rest.p, 1));
    children.push(rest);
    bars.replaceChildren(...children);
  }

  function update(view, message) {
    for (const [name, { range, number }] of Object.entries(inputs)) {
      const value = ctrl.get(name);
      if (document.activeElement !== number) number.value = value === null ? "" : String(value);
      if (range && typeof value === "number" && Number.isFinite(value)) range.value = String(value);
    }
    error.textContent = message;
    bars.classList.toggle("mgx-stale", Boolean(message));
    stats.classList.toggle("mgx-stale", Boolean(message));
    if (ctrl.mode === "widget") {
      const first = view.rows.find((r) => r.id === view.greedy);
      buttons.greedy.textContent = `Greedy${first ? ": " + tokenLabel(first.text) : ""}`;
      buttons.sample.textContent = `Sample (draw ${view.draws + 1})`;
      buttons.back.textContent = "Back";
      buttons.back.disabled = view.tokens.length === 0;
    } else {
      const i = ctrl.step();
      buttons.slider.value = String(i);
      buttons.prev.disabled = i === 0;
      buttons.next.disabled = i === ctrl.steps - 1;
      buttons.where.textContent = `step ${i + 1} of ${ctrl.steps}: the distribution the outlined token was drawn from`;
    }
    drawText(view);
    drawBars(view);
    stats.replaceChildren();
    const kept = Math.round(view.kept).toLocaleString("en-US");
    const entropy = el("span", "mgx-entropy", `entropy ${fmt(view.entropy)} nats`);
    entropy.dataset.value = String(view.entropy);
    const count = el("span", "mgx-kept-count", `${view.approx ? "\u2248 " : ""}${kept} of ${view.vocab.toLocaleString("en-US")} tokens kept`);
    count.dataset.value = String(view.kept);
    if (view.approx) count.title = "the cut falls among the tokens the page stores as a histogram: placed to within a bin";
    stats.append(entropy, " \u00b7 ", count);
  }
  return update;
}

/** anywidget's entry point: draw the `view` trait, send the controls and buttons back to Python. */
function render({ model, el: root }) {
  const ctrl = {
    mode: "widget",
    subtitle: "Move a slider to change a transform; click a bar to append that token. Hover a token of the text to see the distribution it came from.",
    get: (name) => model.get(name),
    set: (name, value) => { model.set(name, value); model.save_changes(); },
    act: (action, id) => model.send(id === undefined ? { action } : { action, id }),
  };
  const update = buildUI(root, ctrl);
  const redraw = () => update(model.get("view"), model.get("error"));
  const events = ["view", "error", "seed", ...CONTROLS.map((c) => c.name)].map((name) => `change:${name}`);
  for (const event of events) model.on(event, redraw);
  redraw();
  return () => { for (const event of events) model.off(event, redraw); };
}

export default { render };

/** The exported page: replay the stored steps, recomputing every distribution here (processStep). */
function mountPage(root, data) {
  const steps = data.steps.map(decodeStep);
  const generation = { ...data.settings };
  const settings = { ...data.settings };
  let current = 0;
  const contextAt = (i) => data.prompt_ids.concat(data.tokens.slice(0, i).map((t) => t.id));
  const withTexts = (view) => ({ ...view, rows: view.rows.map((r) => ({ ...r, text: data.texts[r.id] })) });
  const tokens = data.tokens.map((t, i) => ({
    text: data.texts[t.id],
    p: t.p,
    how: `sampled, seed ${data.seed}, draw ${i + 1}`,
    dist: withTexts(processStep(steps[i], contextAt(i), generation, HOVER_ROWS)).rows
      .filter((r) => r.p > 0).map((r) => [r.text, r.p]),
  }));
  const described = CONTROLS.filter((c) => !isOff(c.name, generation[c.name]))
    .map((c) => `${c.label} ${generation[c.name]}`).join(", ");
  let update = null, last = null;
  const redraw = () => {
    const message = checkSettings(settings);
    if (!message) {
      last = { ...withTexts(processStep(steps[current], contextAt(current), settings)), prompt: data.prompt, tokens,
        current, chosen: data.tokens[current].id };
    }
    update(last, message);
  };
  const ctrl = {
    mode: "page",
    subtitle: `${data.model ? `Model ${data.model}: a` : "A"} replay of ${steps.length} tokens sampled with ${described}, ` +
      `seed ${data.seed}. Scrub through the steps (or click a token) and move the sliders: ` +
      "this page recomputes each distribution from the step's stored logits.",
    note: `How the page stores a step: the raw logits of its ${data.head} most likely tokens and of every token ` +
      `of the text exactly; the other tokens as a histogram (bins ${data.bin_width} wide, each with its count and ` +
      "the log-mean-exp of its logits). The rest-of-vocabulary mass is exact at temperature 1 and very nearly so " +
      "elsewhere; a cut that falls among the binned tokens is placed to within a bin, and the count of kept " +
      "tokens is then marked \u2248.",
    steps: steps.length,
    get: (name) => settings[name],
    set: (name, value) => { settings[name] = value; redraw(); },
    step: () => current,
    setStep: (i) => { current = Math.max(0, Math.min(steps.length - 1, i)); redraw(); },
    reset: () => { Object.assign(settings, generation); redraw(); },
  };
  update = buildUI(root, ctrl);
  redraw();
}
