"""The bench's report: plain-text tables on screen, the JSON file, and the plot of the decode suite."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogFormatter, NullLocator

from minigpt.bench.suites import (
    METHODS,
    QUALITY_NEW_TOKENS,
    QUALITY_WINDOWS,
    SPECULATIVE_PROMPTS,
    bound_format,
    weights_and_activations,
)

YES_NO = {True: "yes", False: "NO", None: "-"}
COLOURS = {m: f"C{i}" for i, m in enumerate(METHODS)}  # a colour per method
LINE_STYLES = {"fp32": "-", "bf16": "--", "int8": ":", "fp16": "-.", "q8_0": (0, (5, 1)), "q4_0": (0, (1, 3)),
               "q8_0-a8": (0, (5, 1, 1, 1)), "q4_0-a8": (0, (1, 1, 3, 1))}  # one per dtype, and per bound
HATCHES = {"fp32": "", "bf16": "//", "int8": "..", "fp16": "\\\\", "q8_0": "xx", "q4_0": "oo", "q8_0-a8": "++",
           "q4_0-a8": "**"}  # one per dtype


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented JSON to ``path`` (its folder made if needed); return the path.

    >>> import tempfile
    >>> write_json({"a": 1}, Path(tempfile.mkdtemp()) / "out" / "r.json").read_text()
    '{\\n  "a": 1\\n}\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def format_table(report: dict) -> str:
    """The results as plain-text tables (decode per model, then quality, speculative and beam when measured),
    the bandwidth, the notes.

    >>> row = dict(model="random", method="cache", dtype="fp32", batch_size=1, ttft_ms=12.0,
    ...            decode_tokens_per_s=20.0, decode_median_tokens_per_s=19.5, decode_runs=[19.0, 19.5, 20.0],
    ...            bound_fraction=0.4, vs_llamacpp=1.25, peak_memory_mb=3.5, same_tokens_as_cache=True,
    ...            same_tokens_as_llamacpp=False)
    >>> table = format_table(dict(results=[row], bandwidth_gb_s=24.0, notes=[], config=dict(preset="gpt2")))
    >>> print(table)  # doctest: +NORMALIZE_WHITESPACE
    decode on random (gpt2 shape, random weights): tokens/s of the fastest run, the median and range of all
    method        dtype  batch  first token ms  decode tok/s   median    min-max  of bound  vs llama.cpp  peak MB
        same tokens  as llama.cpp
    cache         fp32       1            12.0          20.0     19.5  19.0-20.0       40%         1.25x      3.5
        yes          NO
    memory read bandwidth: 24.0 GB/s
    """
    lines = []
    for model in dict.fromkeys(r["model"] for r in report["results"]):
        lines += _decode_table([r for r in report["results"] if r["model"] == model], model, report["config"])
    if report.get("int8_quality"):
        lines += _quality_table(report["int8_quality"], report["config"])
    if report.get("quality"):
        lines += _precision_table(report["quality"], report["config"])
    if report.get("speculative"):
        lines += _speculative_table(report["speculative"], report["config"])
    if report.get("beam"):
        lines += _beam_table(report["beam"])
    lines.append(f"memory read bandwidth: {report['bandwidth_gb_s']:.1f} GB/s")
    return "\n".join(lines + [f"note: {n}" for n in report["notes"]])


def _decode_table(results: list[dict], model: str, config: dict) -> list[str]:
    """One model's decode rows, under a heading that names it."""
    what = f"{config['preset']} shape, random weights" if model == "random" else "trained"
    ranges = [f"{min(r['decode_runs']):.1f}-{max(r['decode_runs']):.1f}" for r in results]
    # columns as wide as their widest entry: dtype 7 with a "-a8" dtype, min-max 13 at 1000 tokens/s and more
    width, runs_width = max(5, *(len(r["dtype"]) for r in results)), max(10, *(len(runs) for runs in ranges))
    lines = [f"decode on {model} ({what}): tokens/s of the fastest run, the median and range of all",
             f"{'method':<13} {'dtype':<{width}} {'batch':>6} {'first token ms':>15} {'decode tok/s':>13} "
             f"{'median':>8} {'min-max':>{runs_width}} {'of bound':>9} {'vs llama.cpp':>13} {'peak MB':>8}  "
             "same tokens  as llama.cpp"]
    for r, runs in zip(results, ranges):
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"
        vs = "-" if r["vs_llamacpp"] is None else f"{r['vs_llamacpp']:.2f}x"
        lines.append(f"{r['method']:<13} {r['dtype']:<{width}} {r['batch_size']:>6} {r['ttft_ms']:>15.1f} "
                     f"{r['decode_tokens_per_s']:>13.1f} {r['decode_median_tokens_per_s']:>8.1f} {runs:>{runs_width}} "
                     f"{r['bound_fraction']:>9.0%} {vs:>13} {peak:>8}  {YES_NO[r['same_tokens_as_cache']]:<11}  "
                     f"{YES_NO[r['same_tokens_as_llamacpp']]}")
    return lines


def _quality_table(rows: list[dict], config: dict) -> list[str]:
    """Rows of ``int8_quality``: each int8 method's held-out loss against fp32's and its greedy agreement."""
    lines = ["", f"int8 quality on {config['target']}: held-out loss (nats/token, {QUALITY_WINDOWS} windows); greedy "
                 f"tokens equal to fp32's ({len(SPECULATIVE_PROMPTS)} prompts, {QUALITY_NEW_TOKENS} tokens each), run "
                 "free and given fp32's tokens so far",
             f"{'method':<13} {'int8 scheme':<17} {'fp32 loss':>9} {'int8 loss':>9} {'change':>7} {'greedy match':>13} "
             f"{'same context':>13}"]
    for r in rows:
        lines.append(f"{r['method']:<13} {r['scheme']:<17} {r['heldout_loss_fp32']:>9.3f} "
                     f"{r['heldout_loss_int8']:>9.3f} {r['loss_change']:>+7.3f} {r['greedy_match']:>13.1%} "
                     f"{r['same_context_match']:>13.1%}")
    return lines


def _precision_table(rows: list[dict], config: dict) -> list[str]:
    """Rows of ``quality``: each precision's held-out loss and how often its greedy tokens equal fp32's."""
    lines = ["", f"precision against loss on {config['target']}: held-out loss (nats/token, {QUALITY_WINDOWS} "
                 f"windows); greedy tokens equal to fp32's ({len(SPECULATIVE_PROMPTS)} prompts, "
                 f"{QUALITY_NEW_TOKENS} tokens each, run free)",
             f"{'precision':<9} {'bytes/weight':>12} {'held-out loss':>13} {'change':>7} {'greedy match':>13}"]
    for r in rows:
        lines.append(f"{r['precision']:<9} {r['bytes_per_weight']:>12.4g} {r['heldout_loss']:>13.3f} "
                     f"{r['loss_change']:>+7.3f} {r['greedy_match']:>13.1%}")
    return lines


def _speculative_table(rows: list[dict], config: dict) -> list[str]:
    """Rows of the speculative suite, under a heading that names both models."""
    lines = ["", f"speculative decoding: target {config['target']}, draft {config['draft']}, "
                 f"{rows[0]['new_tokens']} new tokens for each of {len(SPECULATIVE_PROMPTS)} prompts",
             f"{'method':<21} {'mode':<6} {'k':>3} {'tokens/s':>9} {'speed-up':>9} {'accepted':>9} "
             f"{'target passes/token':>20}  same tokens"]
    for r in rows:
        k = "-" if r["k"] is None else r["k"]
        accepted = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.1%}"
        passes = "-" if r["target_passes_per_token"] is None else f"{r['target_passes_per_token']:.2f}"
        lines.append(f"{r['method']:<21} {r['mode']:<6} {k:>3} {r['tokens_per_s']:>9.1f} {r['speedup']:>8.2f}x "
                     f"{accepted:>9} {passes:>20}  {YES_NO[r['same_tokens_as_target']]}")
    return lines


def _beam_table(rows: list[dict]) -> list[str]:
    """Rows of the beam suite: greedy first, then each beam width."""
    lines = ["", f"beam search: batch 1, fp32, {rows[0]['new_tokens']} new tokens, EOS off",
             f"{'method':<7} {'beams':>5} {'tokens/s':>9} {'vs greedy':>10} {'cost per beam':>14} "
             f"{'transformers tok/s':>19} {'vs transformers':>16}  same tokens"]
    for r in rows:
        hf = r["transformers_tokens_per_s"]
        hf_speed, ratio = ("-", "-") if hf is None else (f"{hf:.1f}", f"{r['tokens_per_s'] / hf:.2f}x")
        lines.append(f"{r['method']:<7} {r['num_beams']:>5} {r['tokens_per_s']:>9.1f} "
                     f"{r['relative_to_greedy']:>9.2f}x {r['cost_per_beam']:>13.2f}x {hf_speed:>19} {ratio:>16}  "
                     f"{YES_NO[r['same_tokens_as_transformers']]}")
    return lines


def plot_results(report: dict, path: str | Path) -> Path:
    """Decode tokens/s and time to first token of every method and dtype, with the bandwidth bounds.

    One row of two panels per model. With several batch sizes: one line per method and dtype against batch
    size (log axes where the values span more than a factor of 10). With one: bars, and each dtype's bound
    as a horizontal line. Written as a PNG to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r["model"] for r in report["results"]))
    fig = Figure(figsize=(11, 4.5 * len(models)))  # a bare Figure renders with Agg and leaves pyplot's state alone
    c = report["config"]
    for (speed, first), model in zip(fig.subplots(len(models), 2, squeeze=False), models, strict=True):
        rows = [r for r in report["results"] if r["model"] == model]
        if len({r["batch_size"] for r in rows}) == 1:
            _plot_bars(speed, first, rows)
        else:
            _plot_lines(speed, first, rows)
        first.set_title(f"{c['preset']} shape, random weights" if model == "random" else model, fontsize=10)
    fig.suptitle(f"{report.get('machine', {}).get('name', c['device'])}: "
                 f"{c['prompt_len']}-token prompt, {c['new_tokens']} new tokens, greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _bounds(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Each weight format's bound by batch size, from the rows whose method reads their dtype's weight format
    (``bound_format``): a "-a8" dtype's bound is its base format's, one line for both."""
    bounds = {}
    for r in rows:
        weights = weights_and_activations(r["dtype"])[0]
        if bound_format(r["method"], r["dtype"]) == weights:
            bounds.setdefault(weights, {})[r["batch_size"]] = r["bound_tokens_per_s"]
    return bounds


def _plot_bars(speed, first, rows: list[dict]) -> None:
    """One batch size: a bar per method and dtype; each dtype's bound a dashed line across the speed panel."""
    labels = [f"{r['method']}\n{r['dtype']}" for r in rows]
    for ax, key, ylabel in ((speed, "decode_tokens_per_s", "decode tokens/s (all rows)"),
                            (first, "ttft_ms", "time to first token (ms)")):
        ax.bar(labels, [r[key] for r in rows], color=[COLOURS[r["method"]] for r in rows],
               hatch=[HATCHES[r["dtype"]] for r in rows], edgecolor="white")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    bounds = {dtype: by_batch[rows[0]["batch_size"]] for dtype, by_batch in _bounds(rows).items()}
    for dtype, bound in bounds.items():
        speed.axhline(bound, color="k", ls=LINE_STYLES[dtype], lw=1, alpha=0.6,
                      label=f"bandwidth bound {dtype}: {bound:.0f} tokens/s")
    speed.set_ylim(0, 1.1 * max([*bounds.values(), *(r["decode_tokens_per_s"] for r in rows)]))
    speed.legend(fontsize=8, loc="upper left")
    speed.set_title(f"batch size {rows[0]['batch_size']}", fontsize=10)


def _plot_lines(speed, first, rows: list[dict]) -> None:
    """Several batch sizes: a line per method and dtype against batch size; the bounds in thin black."""
    series, bounds = {}, _bounds(rows)
    for r in rows:
        series.setdefault((r["method"], r["dtype"]), []).append(r)
    for (method, dtype), group in series.items():
        batches = [r["batch_size"] for r in group]
        kw = dict(color=COLOURS[method], ls=LINE_STYLES[dtype], marker="o", label=f"{method} {dtype}")
        speed.plot(batches, [r["decode_tokens_per_s"] for r in group], **kw)
        first.plot(batches, [r["ttft_ms"] for r in group], **kw)
    for dtype, by_batch in bounds.items():
        batches = sorted(by_batch)
        speed.plot(batches, [by_batch[b] for b in batches], color="k", ls=LINE_STYLES[dtype], lw=1, alpha=0.5,
                   label=f"bandwidth bound {dtype}")
    for ax, key, ylabel in ((speed, "decode_tokens_per_s", "decode tokens/s (all rows)"),
                            (first, "ttft_ms", "time to first token (ms)")):
        values = [r[key] for r in rows] + ([b for d in bounds.values() for b in d.values()] if ax is speed else [])
        ax.set_xscale("log", base=2)
        if max(values) > 10 * min(values):  # a log axis only where the values span a decade or more
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # labels only when few decades
        else:
            ax.set_ylim(0, 1.1 * max(values))
        ax.set_xticks(sorted({r["batch_size"] for r in rows}))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2000, not 2 x 10^3
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    speed.legend(fontsize=8)
