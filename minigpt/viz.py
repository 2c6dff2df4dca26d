"""Plotting helpers the chapters share: next-token distributions as bars, and saving figures.

Every figure gets labelled axes and a title that says what it shows, so it reads without the text.

Chapters also run as plain scripts (``python notebooks/02_temperature.py``). There they must neither stop
at ``plt.show()`` waiting for a window to be closed, nor change the repository's files: importing this
module in a plain (non-interactive) Python process selects matplotlib's Agg backend, whose ``plt.show()``
returns at once, unless you chose a backend yourself (``MPLBACKEND``); and ``save_figure`` writes into
``figures/`` only when ``MINIGPT_WRITE_FIGURES=1`` is set (see `docs/contributing.md`).

>>> fig = plot_distribution(torch.tensor([0.7, 0.2, 0.1]), ["the", "a", "an"], title="Next token")
>>> fig.axes[0].get_ylabel()
'probability'
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from minigpt.checks import check_int

# One colour-blind-safe palette for every figure: Okabe & Ito's eight colours, which readers with any of
# the common colour-vision deficiencies can tell apart (about one man in twelve cannot tell red from green).
# Meaning is never carried by colour alone: a figure that contrasts two things also gives them different
# markers, line styles or labels.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "bluish green": "#009E73",
    "vermillion": "#D55E00",
    "sky blue": "#56B4E9",
    "reddish purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
KEPT, DROPPED = OKABE_ITO["blue"], "#C8C8C8"  # what a filter keeps, what it removes (light grey)
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]  # one per series, alongside its colour
LINESTYLES = ["-", "--", ":", "-."]
# every plot that does not choose its colours cycles through the palette, in this order (yellow last: it is
# faint on white)
matplotlib.rcParams["axes.prop_cycle"] = matplotlib.cycler(
    color=[OKABE_ITO[c] for c in ("blue", "orange", "bluish green", "vermillion", "sky blue", "reddish purple",
                                  "black", "yellow")])

FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"  # the repository's figures/ folder
WRITE_FIGURES = "MINIGPT_WRITE_FIGURES"  # set to 1 to (re)write figures/ when running the chapters
FIGURES_DIR_VARIABLE = "MINIGPT_FIGURES_DIR"  # where they go instead of figures/, when set


def _plain_script() -> bool:
    """True in ``python script.py``; False in Jupyter, IPython, a REPL or ``python -i``.

    IPython being imported is not enough to tell: widget libraries (anywidget, for ``minigpt.explore``) import
    it in plain scripts too, so ask it whether a shell is running.
    """
    ipython = sys.modules.get("IPython")
    in_ipython = ipython is not None and ipython.get_ipython() is not None
    return not in_ipython and not hasattr(sys, "ps1") and not sys.flags.interactive


if _plain_script() and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # no window: plt.show() returns at once instead of waiting for one to be closed


def plot_distribution(
    probs: torch.Tensor,
    labels: Sequence[str],
    *,
    title: str,
    highlight: Sequence[int] = (),
    ax: plt.Axes | None = None,
    xlabel: str | None = None,
    show_spaces: bool = False,
) -> Figure:
    """Bar chart of one probability distribution over ``labels``; bars in ``highlight`` are drawn darker.

    ``xlabel`` names the x axis; with ``show_spaces`` the labels are tokens, drawn by ``token_label`` so
    that their spaces show (``"␣the"``).

    >>> plot_distribution(torch.tensor([0.5, 0.5]), ["yes", "no"], title="coin").axes[0].get_title()
    'coin'
    >>> fig = plot_distribution(torch.tensor([0.5, 0.5]), [" the", "\\n"], title="t", show_spaces=True)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['␣the', '\\\\n']
    """
    probs = torch.as_tensor(probs, dtype=torch.float32).flatten()
    if len(labels) != probs.numel():
        raise ValueError(f"labels must have one entry per probability ({probs.numel()}), got {len(labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    colors = [KEPT if i in highlight else "tab:gray" for i in range(len(labels))] if highlight else None
    ax.bar(range(len(labels)), probs.tolist(), color=colors)
    shown = [token_label(s) if show_spaces else repr(s)[1:-1] for s in labels]
    ax.set_xticks(range(len(labels)), shown, rotation=45, ha="right")
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.set_ylim(0, max(1e-9, probs.max().item()) * 1.1)
    ax.figure.tight_layout()
    return ax.figure


def plot_distributions(
    rows: dict[str, torch.Tensor], labels: Sequence[str], *, title: str, xlabel: str | None = None
) -> Figure:
    """Several distributions over the same labels, one panel each, side by side (e.g. temperatures).

    >>> fig = plot_distributions({"T=1": torch.tensor([0.6, 0.4]), "T=2": torch.tensor([0.5, 0.5])},
    ...                          ["a", "b"], title="Temperature")
    >>> len(fig.axes)
    2
    """
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.5), sharey=True)
    for ax, (name, probs) in zip(axes if len(rows) > 1 else [axes], rows.items()):
        plot_distribution(probs, labels, title=name, ax=ax, xlabel=xlabel)
    tallest = max(torch.as_tensor(p).max().item() for p in rows.values())
    fig.axes[0].set_ylim(0, tallest * 1.1)  # shared y axis: room for the tallest bar of any panel
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def token_label(token: str) -> str:
    """A token as a tick label that shows what it is: spaces as ``␣``, newlines and tabs escaped.

    GPT-2's tokens carry their leading space (``" the"``), which a plain label hides.

    >>> token_label(" the"), token_label("\\n"), token_label("'d")
    ('␣the', '\\\\n', "'d")
    """
    return repr(token.replace(" ", "\N{OPEN BOX}"))[1:-1]


def plot_truncation(
    before: torch.Tensor,
    after: torch.Tensor,
    labels: Sequence[str],
    *,
    title: str,
    after_title: str,
    xlabel: str = "next token",
) -> Figure:
    """A truncation (top-k, top-p, ...) in two panels, each bar labelled with its probability.

    Left, the distribution ``before``: the tokens that survive (``after > 0``) in colour, the removed
    ones grey. Right, the renormalised distribution ``after``, the survivors' old heights as dashed
    outlines, so their growth shows. The left panel also says how much probability mass was removed.

    >>> fig = plot_truncation(torch.tensor([0.6, 0.3, 0.1]), torch.tensor([2 / 3, 1 / 3, 0.0]),
    ...                       ["a", "b", "c"], title="t", after_title="top-2")
    >>> [b.get_facecolor() == fig.axes[0].patches[0].get_facecolor() for b in fig.axes[0].patches]
    [True, True, False]
    """
    before = torch.as_tensor(before, dtype=torch.float32).flatten()
    after = torch.as_tensor(after, dtype=torch.float32).flatten()
    if not len(labels) == before.numel() == after.numel():
        raise ValueError("before, after and labels must have the same length")
    kept = (after > 0).tolist()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    x = range(len(labels))
    colors = [KEPT if k else DROPPED for k in kept]
    bars = left.bar(x, before.tolist(), color=colors)
    left.bar_label(bars, [f"{p:.3f}" for p in before.tolist()], fontsize=7)
    removed = sum(p for p, k in zip(before.tolist(), kept) if not k)
    left.text(0.02, 0.97, f"removed (grey): {removed:.3f} of the mass", transform=left.transAxes, va="top",
              fontsize=8)
    left.set_title("before: kept in colour, removed in grey")
    bars = right.bar(x, after.tolist(), color=colors)
    right.bar(x, [p if k else 0 for p, k in zip(before.tolist(), kept)], fill=False, ls="--",
              ec="black", lw=0.8, label="before renormalising")
    right.bar_label(bars, [f"{p:.3f}" if k else "0" for p, k in zip(after.tolist(), kept)], fontsize=7)
    right.set_title(after_title)
    right.legend(loc="upper left", fontsize=8)
    for ax in (left, right):
        ax.set_xticks(x, [token_label(s) for s in labels], rotation=45, ha="right")
        for tick, k in zip(ax.get_xticklabels(), kept):
            tick.set_color("black" if k else "gray")
        ax.set_xlabel(xlabel)
    left.set_ylabel("probability")
    left.set_ylim(0, max(before.max().item(), after.max().item()) * 1.15)  # room for the bar labels
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_kept(
    probs: torch.Tensor,
    labels: Sequence[str],
    *,
    title: str,
    kept: torch.Tensor | None = None,
    top: int = 20,
    log: bool = False,
    ax: plt.Axes | None = None,
) -> Figure:
    """A whole-vocabulary distribution as its ``top`` most likely tokens and one bar for all the others.

    ``kept`` (booleans, one per token) marks what a filter (top-k, top-p, ...) keeps: kept tokens in colour,
    dropped ones grey, and the legend counts both and their mass. The last bar, hatched, is the rest of the
    vocabulary: its kept part in colour below, its dropped part grey on top, so the bars add up to 1
    (with ``log``, the y axis is logarithmic, so tokens of probability 1e-5 still show). Without ``kept``
    every bar is one colour. Tick labels are ``token_label``'s, so spaces and newlines show.

    >>> probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    >>> fig = plot_kept(probs, ["a", " b", "c", "d", "e"], title="t", kept=probs > 0.12, top=3)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['a', '␣b', 'c', 'the other 2']
    >>> round(float(sum(bar.get_height() for bar in fig.axes[0].patches)), 6)  # 3 bars + the rest's 2 parts
    1.0
    """
    probs = torch.as_tensor(probs, dtype=torch.float32).flatten()
    if len(labels) != probs.numel():
        raise ValueError(f"labels must have one entry per probability ({probs.numel()}), got {len(labels)}")
    check_int("top", top, 1)
    filtered = kept is not None
    kept = torch.ones_like(probs, dtype=torch.bool) if kept is None else torch.as_tensor(kept).flatten()
    if kept.dtype != torch.bool:
        raise TypeError(f"kept must hold booleans (True: the filter keeps the token), got {kept.dtype}")
    if kept.numel() != probs.numel():
        raise ValueError(f"kept must have one entry per probability ({probs.numel()}), got {kept.numel()}")
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    order = torch.argsort(probs, descending=True, stable=True)[:top]
    on = kept[order].tolist()
    colors = [KEPT if k else DROPPED for k in on]
    x = list(range(order.numel()))
    ax.bar(x, probs[order].tolist(), color=colors)
    ticks = [token_label(labels[i]) for i in order.tolist()]
    others = torch.ones_like(kept)
    others[order] = False
    if others.any():  # one hatched bar for the rest of the vocabulary, its kept part at the bottom
        rest_kept, rest_dropped = probs[others & kept].sum().item(), probs[others & ~kept].sum().item()
        n = len(x)
        ax.bar(n, rest_kept, color=KEPT, hatch="//", edgecolor="white")
        bar = ax.bar(n, rest_dropped, bottom=rest_kept, color=DROPPED, hatch="//", edgecolor="white")
        # label what the bar is made of: a single total would read as one group's mass next to a legend
        # that counts kept and dropped tokens separately
        both = filtered and rest_kept > 0 and rest_dropped > 0
        label = f"{rest_kept:.3g} kept\n+ {rest_dropped:.3g} dropped" if both else f"{rest_kept + rest_dropped:.3g}"
        (text,) = ax.bar_label(bar, [label], fontsize=8)
        text.set_horizontalalignment("right" if both else "center")  # right: the two-part label stays inside
        ticks.append(f"the other {int(others.sum()):,}")
        on.append(True)
    ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=8)
    for tick, k in zip(ax.get_xticklabels(), on):
        tick.set_color("black" if k else "gray")
    if filtered:
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (KEPT, DROPPED)]
        parts = (("kept", kept), ("dropped", ~kept))
        texts = [f"{name}: {int(part.sum()):,} token{'' if part.sum() == 1 else 's'}, mass {probs[part].sum():.3f}"
                 for name, part in parts]
        ax.legend(handles, texts, fontsize=8)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top=1.5)
    else:
        ax.set_ylim(0, 1.2 * max(bar.get_y() + bar.get_height() for bar in ax.patches))  # room for two lines
    ax.set_xlabel("next token, most likely first")
    ax.set_ylabel("probability (log scale)" if log else "probability")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def save_figure(fig: Figure, name: str, folder: str | Path | None = None) -> Path | None:
    """Write ``fig`` as ``<folder>/<name>.png`` and return the path.

    Without ``folder`` the figure goes to the repository's ``figures/`` (or to ``$MINIGPT_FIGURES_DIR`` when
    that is set: the tests that run the chapters with other parameters collect their figures there), and
    only when the environment variable ``MINIGPT_WRITE_FIGURES`` is ``1`` (else nothing is written and None
    is returned): running a chapter or the tests leaves the committed figures alone, and regenerating them
    is a deliberate step.

    >>> import tempfile
    >>> save_figure(plt.figure(), "empty", tempfile.mkdtemp()).suffix
    '.png'
    """
    if folder is None and os.environ.get(WRITE_FIGURES) != "1":
        return None
    folder = Path(folder if folder is not None else os.environ.get(FIGURES_DIR_VARIABLE) or FIGURES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=100)
    return path


def plot_token_tree(
    tree: dict, *, root: str, title: str, highlight: Sequence[Sequence[str]] = (), labels: Sequence[str] = ()
) -> Figure:
    """Draw a tree of next-token choices: ``{token: (probability, {child: (p, {...})})}``.

    Paths in ``highlight`` (lists of tokens from the root's child down) are drawn thick, each in its own
    colour and line style (vermillion solid, bluish green dashed, blue dotted: chapter 6's beam tree uses the
    first for greedy's pick and the second for the best path, so the two differ without colour too);
    ``labels`` names them in a legend below the plot. Every edge is labelled with its probability.

    >>> fig = plot_token_tree({"dog": (0.4, {}), "nice": (0.5, {})}, root="The", title="t")
    >>> fig.axes[0].get_title()
    't'
    """
    if labels and len(labels) != len(highlight):
        raise ValueError(f"labels must name each highlighted path ({len(highlight)}), got {len(labels)}")
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = [OKABE_ITO["vermillion"], OKABE_ITO["bluish green"], OKABE_ITO["blue"]]
    leaves = iter(range(1000))

    def draw(name: str, children: dict, depth: int, path: tuple[str, ...]) -> float:
        ys = [draw(c, grand, depth + 1, (*path, c)) for c, (_, grand) in children.items()]
        y = sum(ys) / len(ys) if ys else -next(leaves)
        for (child, (p, _)), cy in zip(children.items(), ys):
            on = [i for i, h in enumerate(highlight) if list(h[: len(path) + 1]) == [*path, child]]
            color = colors[on[0] % len(colors)] if on else DROPPED
            style = LINESTYLES[on[0] % len(colors)] if on else "-"
            ax.plot([depth, depth + 1], [y, cy], color=color, ls=style, lw=2.5 if on else 1, zorder=1)
            ax.text(depth + 0.5, (y + cy) / 2, f"{p:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(depth, y, name, ha="center", va="center", zorder=2,
                bbox=dict(boxstyle="round", fc="white", ec="gray"))
        return y

    draw(root, tree, 0, ())
    if labels:
        handles = [plt.Line2D([], [], color=colors[i % len(colors)], ls=LINESTYLES[i % len(colors)], lw=2.5)
                   for i in range(len(labels))]
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(labels), fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("decoding step")
    ax.set_yticks([])
    ax.set_xticks(range(_depth(tree) + 1))
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def _depth(tree: dict) -> int:
    return 1 + max((_depth(children) for _, children in tree.values()), default=0) if tree else 0
