// The decoding explorer's front end: one script for both of its homes.
//
// - In a notebook, minigpt.explore(model, prompt) is an anywidget whose module is this file (`render` below).
//   Python computes every probability with minigpt.logits.process_logits and sends them as the `view`
//   trait; this script only draws them and sends the sliders' values and the buttons back.
// - `minigpt explore PROMPT --out page.html` inlines this file into a self-contained page (`mountPage`).
//   No Python runs there, so `processStep` applies the same transforms, in the same order, to each step's
//   stored raw logits: repetition penalty -> temperature -> top-k -> top-p -> min-p (transformers' order).
// - With a watermark (minigpt.logits.WatermarkSettings) the chain ends with it, as in minigpt.logits: delta is added
//   to the green tokens' logits after the cuts (in greedy decoding too). Green tokens are tinted, text and bars.

const ROWS = 20; // tokens drawn as bars, as minigpt.explore.ROWS
const HOVER_ROWS = 8; // tokens listed in the details of a generated token
const MIN_TEMPERATURE = 1e-4; // minigpt.logits.MIN_TEMPERATURE: the smallest temperature above 0

// In pipeline order. `off` is the value that switches a transform off, as in process_logits. `allowed` is
// what a value must be, in minigpt.explore.ALLOWED's words (temperature: minigpt.logits'): the hint shows it and
// a bad value's message says it, so the two never disagree. `ok` tests a number against it.
const CONTROLS = [
  { name: "repetition_penalty", label: "repetition penalty", min: 0.5, max: 3, step: 0.01, off: 1,
    what: "> 1 makes tokens already in the text less likely, < 1 more likely", allowed: "> 0 (1 = off)",
    ok: (v) => v > 0 },
  { name: "temperature", label: "temperature", min: 0, max: 2, step: 0.01, off: null,
    what: "divides the logits: < 1 sharpens, > 1 flattens, 0 = greedy (all on the most likely token)",
    allowed: "a finite number >= 0", ok: (v) => v >= 0 && v < Infinity },
  { name: "top_k", label: "top-k", min: 0, max: 200, step: 1, off: 0,
    what: "keep the k most likely tokens", allowed: "0 (off) or an integer >= 1", ok: (v) => Number.isInteger(v) && v >= 0 },
  { name: "top_p", label: "top-p", min: 0.01, max: 1, step: 0.01, off: 1,
    what: "keep the most likely tokens until their mass reaches p", allowed: "in (0, 1] (1 = off)", ok: (v) => v > 0 && v <= 1 },
  { name: "min_p", label: "min-p", min: 0, max: 1, step: 0.01, off: 0,
    what: "drop tokens below min-p \u00d7 the top probability", allowed: "in [0, 1] (0 = off)", ok: (v) => v >= 0 && v <= 1 },
];
// Okabe-Ito colours (minigpt.viz.OKABE_ITO), the grey of minigpt.viz.DROPPED; each also differs by position or text
const COLOURS = { raw: "#56B4E9", kept: "#0072B2", removed: "#C8C8C8", mark: "#D55E00", shade: "0, 114, 178",
  green: "#009E73", greenShade: "0, 158, 115" };

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
.mgx .mgx-tok:focus-visible, .mgx .mgx-label:focus-visible { outline: 2px dashed #000; outline-offset: 1px; }
.mgx .mgx-current { outline: 2px solid ${COLOURS.mark}; outline-offset: 1px; }
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
.mgx .mgx-start, .mgx .mgx-scale { color: #444; font-size: 12px; margin: 2px 0; }
.mgx .mgx-details { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; background: #f6f6f6;
  border: 1px solid #e4e4e4; border-radius: 4px; padding: 4px 8px; margin: 6px 0; min-height: 2.8em; }
.mgx .mgx-bars { display: grid; grid-template-columns: minmax(7em, max-content) 1fr 1fr; gap: 2px 10px; align-items: center; }
.mgx .mgx-colhead { font-size: 12px; color: #555; font-weight: 600; }
.mgx .mgx-label { font: 13px ui-monospace, Menlo, Consolas, monospace; white-space: pre; text-align: right; }
.mgx .mgx-row { display: contents; }
.mgx .mgx-row.mgx-click .mgx-label, .mgx .mgx-row.mgx-click .mgx-cell { cursor: pointer; }
.mgx .mgx-row.mgx-click:hover .mgx-label { text-decoration: underline; }
.mgx .mgx-cell { display: flex; align-items: center; height: 18px; }
.mgx .mgx-bar { height: 100%; min-width: 1px; border-radius: 2px; }
.mgx .mgx-num { margin-left: 4px; font-size: 12px; color: #111; font-variant-numeric: tabular-nums; }
.mgx .mgx-raw .mgx-bar { background: ${COLOURS.raw}; }
.mgx .mgx-kept .mgx-bar { background: ${COLOURS.kept}; }
.mgx .mgx-removed .mgx-bar { background: ${COLOURS.removed}; }
.mgx .mgx-removed .mgx-num { color: #777; }
.mgx .mgx-restrow .mgx-label { font-style: italic; font-family: inherit; }
.mgx .mgx-chosen .mgx-label { color: ${COLOURS.mark}; font-weight: 700; }
.mgx .mgx-legend { font-size: 12px; color: #444; margin-top: 8px; }
.mgx .mgx-legend div { margin-top: 2px; }
.mgx .mgx-key { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -2px; margin: 0 4px 0 10px; }
.mgx .mgx-note { font-size: 11px; color: #666; margin-top: 8px; }
.mgx .mgx-tok.mgx-green { box-shadow: inset 0 -3px 0 ${COLOURS.green}; }
.mgx .mgx-row.mgx-green .mgx-label { background: rgba(${COLOURS.greenShade}, 0.22); box-shadow: inset -3px 0 0 ${COLOURS.green};
  padding-right: 5px; }
.mgx .mgx-watermark:empty { display: none; }
`;

/**
 * A token as a label that shows what it is, as minigpt.viz.token_label: spaces as ␣, tabs and control characters
 * escaped; but a newline as ↵, as in the text above the bars, so one legend line explains both.
 */
function tokenLabel(text) {
  return text
    .replace(/\\/g, "\\\\")
    .replace(/ /g, "\u2423")
    .replace(/\n/g, "\u21b5")
    .replace(/\t/g, "\\t")
    .replace(/\r/g, "\\r")
    .replace(/[\u0000-\u001f\u007f]/g, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}

/** `text` into `node`, its `quoted` parts as code. */
function withCode(node, text) {
  node.replaceChildren(...text.split("`").map((part, i) => (i % 2 ? el("code", "", part) : part)));
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
  // a value as Python's repr shows it once it crossed JSON (a whole number arrives as an int): 5e-05, not 0.00005
  if (typeof value !== "number") return `'${value}'`;
  if (Number.isInteger(value)) return BigInt(value).toString();
  if (Math.abs(value) < 1e-4) return value.toExponential().replace(/e([+-])(\d)$/, "e$10$2");
  return String(value);
}

/** The page's copy of minigpt.explore.decoding_settings: "" when fine, else its message, in the same words. */
function checkSettings(s) {
  for (const c of CONTROLS) { // in pipeline order, as decoding_settings checks them
    const v = s[c.name];
    if (v === null && c.off !== null) continue; // None: off
    if (!(typeof v === "number" && !Number.isNaN(v) && c.ok(v))) return `${c.name} must be ${c.allowed}, got ${shown(v)}`;
    if (c.name === "temperature" && v > 0 && v < MIN_TEMPERATURE) {
      return `temperature must be 0 (greedy decoding) or at least ${MIN_TEMPERATURE} (below it, logits / temperature ` +
        `can overflow float32, and sampling is greedy decoding anyway), got ${shown(v)}`;
    }
  }
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
    // with a watermark: 1 for a green stored token, then for a green bin (green and other tokens are binned apart)
    green: step.green ? typedArray(step.green, Uint8Array) : null,
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
 * The cuts, top-k -> top-p -> min-p, on the tempered logits `z` of items that stand for `count` tokens each (the
 * first `H` one token each): lowers `keep`, how many tokens of each item stay in.
 */
function cut(z, count, keep, H, s) {
  const desc = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
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
    for (let i = 0; i < z.length; i++) if (i !== top && keep[i] > 0 && Math.exp(z[i] - z[top]) < s.min_p) keep[i] = 0;
  }
}

/**
 * The page's process_logits: the view of one step under settings `s` (which checkSettings accepted).
 * Items are the exactly stored tokens and the tail's bins (all tokens of a bin share its logit); each
 * transform keeps a number of tokens per item. `context` is the text's ids before this step. With a watermark
 * (`step.green`), `bias` (delta) is added to the green items last, after the cuts, as minigpt.logits does.
 */
function processStep(step, context, s, nRows = ROWS, bias = 0) {
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
  const keep = Float64Array.from(count); // how many tokens of each item are still in
  const delta = (i) => (step.green && step.green[i] ? bias : 0); // the watermark's delta: green items only
  let before; // what the cuts start from
  if (s.temperature === 0) {
    // greedy, as generate: the argmax of the penalised logits (+ delta on green ones), the lowest id on a tie
    // (ids are stored in ascending order). It is a stored token: the bins hold only tokens below the stored head
    // (with a watermark, below the head after delta too), which the penalty never touches.
    let top = 0;
    for (let i = 1; i < H; i++) if (z[i] + delta(i) > z[top] + delta(top)) top = i;
    keep.fill(0);
    keep[top] = 1;
    before = softmaxTokens(z, keep); // the limit of ever lower temperatures: all on the greedy token
  } else {
    // 2. temperature
    for (let i = 0; i < n; i++) z[i] /= s.temperature;
    before = softmaxTokens(z, count);
    cut(z, count, keep, H, s);
    for (let i = 0; i < n; i++) z[i] += delta(i); // 6. the watermark, last (transformers' order)
  }

  const p = softmaxTokens(z, keep);
  const head = Array.from({ length: H }, (_, i) => i).sort((a, b) => penalised[b] - penalised[a] || a - b);
  const inRows = new Set(head.slice(0, nRows));
  const rest = { raw: 0, p: 0, count: 0 };
  let entropy = 0, kept = 0, binsIn = 0, binsCut = 0;
  for (let i = 0; i < n; i++) {
    if (keep[i] > 0) kept += keep[i];
    if (keep[i] > 0 && p[i] > 0) entropy -= keep[i] * p[i] * Math.log(p[i]); // p underflows to 0 at low temperatures
    if (i >= H) { binsIn += keep[i] > 0; binsCut += keep[i] < count[i]; }
    if (!inRows.has(i)) { rest.raw += count[i] * raw[i]; rest.p += keep[i] * p[i]; rest.count += count[i]; }
  }
  return {
    rows: head.slice(0, nRows).map((i) => ({ id: step.ids[i], raw: raw[i], before: before[i], p: keep[i] > 0 ? p[i] : 0,
      kept: keep[i] > 0, ...(step.green ? { green: step.green[i] === 1 } : {}) })),
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
    grid.append(label, range, number, el("div", "mgx-hint", `${c.what}; ${c.allowed}`));
    inputs[c.name] = { range, number };
  });
  root.append(grid);
  return inputs;
}

/** The settings that do something, in words: "temperature 0.8, top-k 50". */
function describe(settings) {
  return CONTROLS.filter((c) => !isOff(c.name, settings[c.name])).map((c) => `${c.label} ${settings[c.name]}`).join(", ");
}

/** Where the sliders started, and whether that is where `minigpt generate` samples (`defaults`). */
function startLine(started, defaults) {
  const same = CONTROLS.every((c) => started[c.name] === defaults[c.name]);
  const rest = CONTROLS.some((c) => isOff(c.name, started[c.name])) ? " (the others off)" : "";
  return `The sliders started at ${describe(started)}${rest}` +
    (same ? ", as `minigpt generate` samples." : `; \`minigpt generate\` samples at ${describe(defaults)}.`);
}

/** A row's details: its probability at each stage of the pipeline. */
function rowDetails(r, view) {
  const processed = r.kept ? fmt(r.p)
    : view.greedyMode ? "0 (temperature 0 is greedy: only the most likely token stays)"
      : "0 (removed by top-k, top-p or min-p)";
  const green = r.green === undefined ? "" : r.green ? "; green: the watermark added \u03b4 last" : "; not green";
  return `${tokenLabel(r.text)} (token ${r.id}): raw ${fmt(r.raw)} \u2192 after the penalty and temperature ` +
    `${fmt(r.before)} \u2192 processed ${processed}${green}`;
}

/** A generated token's details: its probability when chosen and the distribution it was chosen from. */
function tokenDetails(t, i) {
  const drawn = t.dist.map(([s, q]) => `${tokenLabel(s)} ${fmt(q)}`).join(" \u00b7 ");
  const green = t.green === undefined ? "" : t.green === null ? ", not scored" : t.green ? ", green" : ", not green";
  return `${tokenLabel(t.text)} (new token ${i + 1}): p = ${fmt(t.p)} when chosen (${t.how}${green})\ndrawn from: ${drawn}`;
}

/** The legend's watermark line: its settings, the swatch, and minigpt.watermark.detect's numbers for the text. */
function watermarkLegend(w) {
  const swatch = el("span", "mgx-key");
  swatch.style.background = COLOURS.green;
  swatch.style.marginLeft = "0";
  const found = w.num_scored === 0 ? "no generated token scored yet"
    : `${w.num_green} of ${w.num_scored} generated tokens green (${Number((w.greenlist_ratio * w.num_scored).toFixed(2))} ` +
      "expected by chance), " +
      `z-score ${fmt(w.z_score)}, p-value ${w.p_value.toPrecision(3)}`;
  const words = el("span", "", `watermark (\u03b4 = ${w.bias} added last, \u03b3 = ${w.greenlist_ratio}, ` +
    `${w.seeding_scheme}): a token underlined or tinted green is on its step's green list. Text: ${found}.`);
  return [swatch, words];
}

/** Build the explorer's DOM in `root`; `ctrl` is the widget's or the page's side. Returns `update`. */
function buildUI(root, ctrl) {
  const widget = ctrl.mode === "widget";
  const box = el("div", "mgx");
  box.append(el("style", "", STYLE));
  box.append(el("h2", "", "Next-token distribution: raw and after the decoding transforms"));
  const sub = el("div", "mgx-sub", ctrl.subtitle);
  const text = el("div", "mgx-text");
  const nav = el("div", "mgx-nav");
  box.append(sub, text, nav);
  const inputs = controlsFor(box, ctrl);
  const start = el("div", "mgx-start");
  const error = el("div", "mgx-error");
  error.setAttribute("role", "alert");
  const stats = el("div", "mgx-stats");
  const details = el("div", "mgx-details");
  details.setAttribute("aria-live", "polite");
  const intro = "Details: hover over, tap or Tab to a token of the text or a bar to see its numbers here." +
    (widget ? " A click on a bar (or Enter) appends that token." : "");
  const scaleNote = el("div", "mgx-scale");
  const bars = el("div", "mgx-bars");
  const legend = el("div", "mgx-legend");
  const keys = el("div");
  const key = (colour, words, first) => {
    const swatch = el("span", "mgx-key");
    swatch.style.background = colour;
    if (first) swatch.style.marginLeft = "0";
    keys.append(swatch, words);
  };
  key(COLOURS.raw, "raw: the model's probabilities (middle column)", true);
  key(COLOURS.kept, "processed, kept (right column)");
  key(COLOURS.removed, "removed: probability 0, the bar shows what it had before the cut");
  key(`rgba(${COLOURS.shade}, 0.6)`, "text: the darker, the likelier the token was when chosen");
  legend.append(keys);
  const watermarkLine = el("div", "mgx-watermark");
  legend.append(watermarkLine);
  if (!widget) legend.append(el("div", "", "\u25b6 marks the token the replay drew at this step; the outlined token of the text is the one this step chose."));
  legend.append(el("div", "mgx-symbols",
    "\u2423 is a space and \u21b5 a newline (GPT-2's tokens carry their leading space). Entropy is in nats " +
    "(natural-log units; ln 2 \u2248 0.69 nats = 1 bit): 0 when one token has all the probability, higher the more it is spread."));
  box.append(start, error, stats, details, scaleNote, bars, legend);
  if (ctrl.note) box.append(el("div", "mgx-note", ctrl.note));
  root.append(box);

  const buttons = {};
  if (widget) {
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
    prev.setAttribute("aria-label", "previous step");
    next.setAttribute("aria-label", "next step");
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

  // Details follow the pointer, a tap and keyboard focus alike: each token of the text and each bar's label has a
  // data-key; the details line shows the last one pointed at, tapped or focused, redrawn with every view.
  let view = null, detailKey = null, restoring = false;
  const detailsFor = (k) => {
    if (k === null || view === null) return null;
    if (k.startsWith("tok-")) {
      const i = Number(k.slice(4));
      return i < view.tokens.length ? tokenDetails(view.tokens[i], i) : null;
    }
    if (k === "rest") {
      return `the other ${view.rest.count.toLocaleString("en-US")} tokens together: raw ${fmt(view.rest.raw)}, ` +
        `processed ${fmt(view.rest.p)}`;
    }
    const r = view.rows.find((row) => `row-${row.id}` === k);
    return r ? rowDetails(r, view) : null;
  };
  const show = (k) => {
    detailKey = k;
    details.textContent = detailsFor(k) ?? intro;
  };
  const activate = (k) => { // a click, a tap, Enter or Space on a token or a bar
    if (k.startsWith("tok-") && !widget) {
      show(k);
      ctrl.setStep(Number(k.slice(4)));
    } else if (k.startsWith("row-") && widget) {
      show(`tok-${view.tokens.length}`); // the token about to be appended, once Python has appended it
      ctrl.act("choose", Number(k.slice(4)));
    } else {
      show(k);
    }
  };
  const keyOf = (event) => event.target.closest && event.target.closest("[data-key]")?.dataset.key;
  for (const area of [text, bars]) {
    area.addEventListener("mouseover", (event) => { const k = keyOf(event); if (k) show(k); });
    area.addEventListener("focusin", (event) => { const k = keyOf(event); if (k && !restoring) show(k); });
    area.addEventListener("click", (event) => { const k = keyOf(event); if (k) activate(k); });
    area.addEventListener("keydown", (event) => {
      const k = keyOf(event);
      if (k && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault(); // Space would scroll the page
        activate(k);
      }
    });
  }
  const focusable = (node, k, label, acts) => {
    node.tabIndex = 0;
    node.dataset.key = k;
    node.setAttribute("role", acts ? "button" : "note");
    node.setAttribute("aria-label", label);
  };

  function drawText() {
    text.replaceChildren(el("span", "mgx-prompt", view.prompt));
    view.tokens.forEach((t, i) => {
      const span = el("span", "mgx-tok", t.text.replace(/\n/g, "\u21b5\n"));
      const alpha = Math.max(0.06, t.p);
      span.style.background = `rgba(${t.green ? COLOURS.greenShade : COLOURS.shade}, ${alpha.toFixed(3)})`;
      if (alpha > 0.55) span.style.color = "#fff";
      span.dataset.p = String(t.p);
      if (t.green !== undefined) {
        span.dataset.green = String(t.green);
        span.classList.toggle("mgx-green", t.green === true);
      }
      focusable(span, `tok-${i}`, tokenDetails(t, i).split("\n")[0] + (widget ? "" : "; press Enter to go to this step"), !widget);
      if (!widget) {
        span.style.cursor = "pointer";
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
    fill.dataset.value = String(value);
    cell.append(fill, el("span", "mgx-num", label));
    return cell;
  }

  function drawBars() {
    // one scale for every bar, the rest of the vocabulary's too, so any two bars compare by their lengths
    const scale = Math.max(1e-12, view.rest.raw, view.rest.p, ...view.rows.map((r) => Math.max(r.raw, r.p, r.before)));
    scaleNote.textContent = `Every bar is drawn on one scale: a full-width bar is ${fmt(scale)}, the largest probability shown.`;
    scaleNote.dataset.scale = String(scale);
    const children = [el("div", "mgx-colhead", "token"), el("div", "mgx-colhead", "raw probability"),
      el("div", "mgx-colhead", "processed probability")];
    for (const r of view.rows) {
      const row = el("div", "mgx-row mgx-token" + (widget ? " mgx-click" : ""));
      Object.assign(row.dataset, { id: r.id, raw: String(r.raw), before: String(r.before), p: String(r.p), kept: String(r.kept) });
      if (r.green !== undefined) {
        row.dataset.green = String(r.green);
        row.classList.toggle("mgx-green", r.green);
      }
      const label = el("div", "mgx-label", tokenLabel(r.text));
      if (r.id === view.chosen) {
        row.classList.add("mgx-chosen");
        label.textContent = "\u25b6 " + label.textContent;
      }
      focusable(label, `row-${r.id}`, rowDetails(r, view) + (widget ? "; press Enter to append it" : ""), widget);
      // a removed token's grey bar shows what it had before the cuts (top-k, top-p, min-p) took it out
      const processed = r.kept ? bar("mgx-kept", r.p, scale) : bar("mgx-removed", r.before, scale, `0 (was ${fmt(r.before)})`);
      row.append(label, bar("mgx-raw", r.raw, scale), processed);
      children.push(row);
    }
    const rest = el("div", "mgx-row mgx-restrow");
    Object.assign(rest.dataset, { raw: String(view.rest.raw), p: String(view.rest.p) });
    const label = el("div", "mgx-label", `rest of the vocabulary (${view.rest.count.toLocaleString("en-US")} tokens)`);
    focusable(label, "rest", detailsFor("rest"), false);
    rest.append(label, bar("mgx-raw", view.rest.raw, scale), bar("mgx-kept", view.rest.p, scale));
    children.push(rest);
    bars.replaceChildren(...children);
  }

  function update(next, message) {
    view = { ...next, greedyMode: ctrl.get("temperature") === 0 && !message };
    for (const [name, { range, number }] of Object.entries(inputs)) {
      const value = ctrl.get(name);
      if (document.activeElement !== number) number.value = value === null ? "" : String(value);
      if (range && typeof value === "number" && Number.isFinite(value)) range.value = String(value);
    }
    error.textContent = message;
    bars.classList.toggle("mgx-stale", Boolean(message));
    stats.classList.toggle("mgx-stale", Boolean(message));
    withCode(start, startLine(view.started, view.defaults));
    if (widget) {
      const first = view.rows.find((r) => r.id === view.greedy);
      buttons.greedy.textContent = `Greedy${first ? ": " + tokenLabel(first.text) : ""}`;
      buttons.sample.textContent = view.greedyMode ? "Sample (temperature 0: greedy)" : `Sample (draw ${view.draws + 1})`;
      buttons.back.textContent = "Back";
      buttons.back.disabled = view.tokens.length === 0;
    } else {
      const i = ctrl.step();
      buttons.slider.value = String(i);
      buttons.prev.disabled = i === 0;
      buttons.next.disabled = i === ctrl.steps - 1;
      buttons.where.textContent = `step ${i + 1} of ${ctrl.steps}: the distribution the outlined token was drawn from`;
    }
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
    drawText();
    drawBars();
    if (focused) { // the redrawn token or bar takes the focus back, so Tab and the arrow keys go on from there
      restoring = true;
      box.querySelector(`[data-key="${focused}"]`)?.focus();
      restoring = false;
    }
    show(detailKey);
    watermarkLine.replaceChildren(...(view.watermark ? watermarkLegend(view.watermark) : []));
    stats.replaceChildren();
    const kept = Math.round(view.kept).toLocaleString("en-US");
    const entropy = el("span", "mgx-entropy", `entropy ${fmt(view.entropy)} nats`);
    entropy.dataset.value = String(view.entropy);
    const count = el("span", "mgx-kept-count", `${view.approx ? "\u2248 " : ""}${kept} of ${view.vocab.toLocaleString("en-US")} tokens kept`);
    count.dataset.value = String(view.kept);
    stats.append(entropy, " \u00b7 ", count);
    if (view.greedyMode) stats.append(" \u00b7 temperature 0 is greedy decoding: all the probability on the most likely token");
  }
  return update;
}

/** anywidget's entry point: draw the `view` trait, send the controls and buttons back to Python. */
function render({ model, el: root }) {
  const ctrl = {
    mode: "widget",
    subtitle: "Move a slider to change a transform; click a bar (or Tab to it and press Enter) to append that token.",
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
  const greedy = generation.temperature === 0; // the replay took the greedy tokens: nothing was drawn
  const bias = data.watermark ? data.watermark.bias : 0;
  let current = 0;
  const contextAt = (i) => data.prompt_ids.concat(data.tokens.slice(0, i).map((t) => t.id));
  const withTexts = (view) => ({ ...view, rows: view.rows.map((r) => ({ ...r, text: data.texts[r.id] })) });
  const tokens = data.tokens.map((t, i) => ({
    text: data.texts[t.id],
    p: t.p,
    how: greedy ? "greedy, temperature 0" : `sampled, seed ${data.seed}, draw ${i + 1}`,
    ...("green" in t ? { green: t.green } : {}),
    dist: withTexts(processStep(steps[i], contextAt(i), generation, HOVER_ROWS, bias)).rows
      .filter((r) => r.p > 0).map((r) => [r.text, r.p]),
  }));
  const binned = data.vocab - steps[0].ids.length;
  let update = null, last = null;
  const redraw = () => {
    const message = checkSettings(settings);
    if (!message) {
      last = { ...withTexts(processStep(steps[current], contextAt(current), settings, ROWS, bias)), prompt: data.prompt,
        tokens, current, chosen: data.tokens[current].id, started: generation, defaults: data.defaults,
        watermark: data.watermark };
    }
    update(last, message);
  };
  const ctrl = {
    mode: "page",
    subtitle: `${data.model ? `Model ${data.model}: a` : "A"} replay of ${steps.length} tokens ` +
      (greedy ? "taken greedily (temperature 0)" : `sampled with ${describe(generation)}, seed ${data.seed}`) +
      (data.watermark ? `, watermarked (\u03b4 = ${data.watermark.bias} on a green list, ${data.watermark.seeding_scheme})` : "") +
      ". Go through the steps with the step slider, \u25c0 \u25b6, the \u2190 \u2192 keys or a click on a token, and " +
      "move the sliders: this page recomputes each distribution from the step's stored logits.",
    note: `What is approximate here: to keep the file small, the page stores for each step the exact scores (logits) ` +
      `of the ${data.head.toLocaleString("en-US")} most likely tokens${data.watermark ? " (with and without \u03b4)" : ""} ` +
      "and of every token of the text; the other " +
      `~${binned.toLocaleString("en-US")} tokens are grouped by score${data.watermark ? " (green and other tokens apart)" : ""}, ` +
      "each group stored as its size and one shared " +
      `score. So a probability shown here is within ${data.max_error.probability} of the exact one and the ` +
      `entropy within ${data.max_error.entropy} nats (the raw probabilities are exact). When top-k, top-p or ` +
      "min-p cuts through a group, the number of kept tokens is approximate, and shown with \u2248.",
    steps: steps.length,
    get: (name) => settings[name],
    set: (name, value) => { settings[name] = value; redraw(); },
    step: () => current,
    setStep: (i) => { current = Math.max(0, Math.min(steps.length - 1, i)); redraw(); },
    reset: () => { Object.assign(settings, generation); redraw(); },
  };
  update = buildUI(root, ctrl);
  // the arrow keys move through the steps from anywhere on the page, but not inside a field or on a slider,
  // where they move the caret or that slider (the step slider moves the steps itself)
  document.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    event.preventDefault();
    ctrl.setStep(current + (event.key === "ArrowRight" ? 1 : -1));
  });
  redraw();
}
