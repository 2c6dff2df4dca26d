"""Draw the course's reading order, figures/reading_order.png, from the syllabus table in notebooks/README.md.

The prerequisites live in one place, the "needs" column of that table; this script parses it and draws a
chapter → chapter arrow for each prerequisite (solid: the chapter builds on it throughout; dashed: only
the steps named in the cell use it), so the figure cannot disagree with the page. tests/test_syllabus.py
compares `edges()` with the table and checks that they form a DAG.

    python docs/reading_order.py            # redraw figures/reading_order.png
    python docs/reading_order.py --counts   # the words and code lines the reading times are estimated from
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYLLABUS = ROOT / "notebooks" / "README.md"
FIGURE = ROOT / "figures" / "reading_order.png"
HEADER = "| # | chapter | needs |"  # the first cells of the syllabus table's header row
WORDS_PER_MINUTE, CODE_LINES_PER_MINUTE = 150, 20  # the reading rates the syllabus states


def table(text: str | None = None) -> list[dict[str, str]]:
    """The syllabus table's rows, one per chapter, as {column: cell text}.

    >>> rows = table("x\\n| # | chapter | needs |\\n|---|---|---|\\n| 0 | A | — |\\n| 1 | B | 0 |\\n\\ny")
    >>> [(r["#"], r["needs"]) for r in rows]
    [('0', '—'), ('1', '0')]
    """
    lines = (SYLLABUS.read_text() if text is None else text).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    columns = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(dict(zip(columns, cells)))
    return rows


def parse_needs(cell: str) -> tuple[list[int], list[int]]:
    """A "needs" cell → (chapters needed throughout, chapters needed only for the named steps).

    The cell lists chapter numbers, then in brackets the ones a few steps use: "1 (5 for Step 7)".

    >>> parse_needs("—"), parse_needs("4, 6 (9 for Steps 2 and 4)"), parse_needs("1 (4 for Steps 4–5; 5 for Step 2)")
    (([], []), ([4, 6], [9]), ([1], [4, 5]))
    """
    main, _, partial = cell.partition("(")
    hard = [int(n) for n in re.findall(r"\d+", main)]
    soft = [int(n) for n in re.findall(r"(\d+) for Steps? ", partial)]
    return hard, soft


def prerequisites(text: str | None = None) -> dict[int, tuple[list[int], list[int]]]:
    """{chapter: (needed throughout, needed for some steps)}, from the syllabus table."""
    return {int(row["#"]): parse_needs(row["needs"]) for row in table(text)}


def edges(text: str | None = None) -> list[tuple[int, int, str]]:
    """The figure's arrows: (prerequisite, chapter, "all" or "steps"), read from the syllabus table."""
    found = []
    for chapter, (hard, soft) in prerequisites(text).items():
        found += [(p, chapter, "all") for p in hard] + [(p, chapter, "steps") for p in soft]
    return sorted(found)


def titles(text: str | None = None) -> dict[int, str]:
    """{chapter: its short title}, the link text of the table's chapter column."""
    return {int(row["#"]): re.sub(r"\[(.*?)\]\(.*?\)", r"\1", row["chapter"]) for row in table(text)}


# Where each chapter sits in the figure (x, y): the chain 0-5 in the middle, branches above and below it.
# Layout only: the arrows come from the table.
POSITIONS = {0: (0, 0), 1: (1, 0), 2: (2, 0), 3: (3, 0), 4: (4, 0), 5: (5, 0), 9: (6.1, 0),
             10: (2.9, -1.15), 7: (6.1, 1.2), 8: (7.3, 1.6), 12: (7.3, 0.75),
             6: (5.1, -1.15), 11: (7.3, -1.15), 13: (8.5, 1.2), 14: (8.5, -0.55)}
BENDS = (0.0, 0.15, -0.15, 0.25, -0.25, 0.35, -0.35, 0.45, -0.45)  # arcs to try, straightest first


def _arc(start, end, bend: float, steps: int = 40) -> list[tuple[float, float]]:
    """Points along matplotlib's "arc3" path from start to end (display coordinates): a quadratic Bezier."""
    (x1, y1), (x2, y2) = start, end
    cx, cy = (x1 + x2) / 2 + bend * (y2 - y1), (y1 + y2) / 2 - bend * (x2 - x1)
    weights = [((1 - t) ** 2, 2 * t * (1 - t), t * t) for t in (i / steps for i in range(1, steps))]
    return [(a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2) for a, b, c in weights]


def draw(text: str | None = None, out: Path = FIGURE) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Patch

    from minigpt.viz import OKABE_ITO

    names, arrows = titles(text), edges(text)
    exercised = {int(row["#"]) for row in table(text) if any("exercises/" in cell for cell in row.values())}
    unplaced = set(names) - set(POSITIONS)
    assert not unplaced, f"give chapters {sorted(unplaced)} a place in POSITIONS"

    fig, ax = plt.subplots(figsize=(13, 5.2))
    xs, ys = [POSITIONS[c][0] for c in names], [POSITIONS[c][1] for c in names]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.45, max(ys) + 0.75)
    ax.axis("off")
    nodes = {}
    for chapter in names:
        label = "\n".join(_wrap(f"{chapter} {names[chapter]}", 14)) + ("\n+ exercises" if chapter in exercised else "")
        face = OKABE_ITO["sky blue"] if chapter in exercised else "white"
        nodes[chapter] = ax.text(*POSITIONS[chapter], label, ha="center", va="center", fontsize=9.5, zorder=3,
                                 bbox={"boxstyle": "round,pad=0.35", "lw": 1.4, "facecolor": face,
                                       "edgecolor": OKABE_ITO["black"]})
    ax.set_title("Reading order: each arrow runs from a chapter to one that builds on it", fontsize=12)
    fig.tight_layout()
    fig.canvas.draw()  # the boxes' sizes: arrows stop at their edges and bend round the boxes in their way
    boxes = {c: node.get_bbox_patch().get_window_extent().expanded(1.08, 1.25) for c, node in nodes.items()}
    for a, b, kind in arrows:
        start, end = (ax.transData.transform(POSITIONS[c]) for c in (a, b))
        others = [box for c, box in boxes.items() if c not in (a, b)]
        bend = min(BENDS, key=lambda bend: sum(  # the straightest arc clear of the other boxes, inside the axes
            not ax.bbox.contains(x, y) or any(box.contains(x, y) for box in others) for x, y in _arc(start, end, bend)))
        ax.add_patch(FancyArrowPatch(
            POSITIONS[a], POSITIONS[b], patchA=nodes[a].get_bbox_patch(), patchB=nodes[b].get_bbox_patch(),
            arrowstyle="-|>", mutation_scale=14, lw=1.6 if kind == "all" else 1.4, zorder=2,
            linestyle="-" if kind == "all" else (0, (4, 3)), connectionstyle=f"arc3,rad={bend}",
            color=OKABE_ITO["black"] if kind == "all" else OKABE_ITO["vermillion"]))
    ax.legend(handles=[
        Line2D([], [], color=OKABE_ITO["black"], lw=1.6, label="needed throughout"),
        Line2D([], [], color=OKABE_ITO["vermillion"], lw=1.4, ls=(0, (4, 3)), label="needed for a few steps"),
        Patch(facecolor=OKABE_ITO["sky blue"], edgecolor=OKABE_ITO["black"], label="has an exercise notebook"),
    ], loc="upper left", fontsize=9.5, frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _wrap(label: str, width: int) -> list[str]:
    lines = [""]
    for word in label.split():
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return lines


def counts(notebook: Path) -> tuple[int, int]:
    """(words of markdown, lines of code) in a notebook: what its reading time is estimated from."""
    cells = json.loads(notebook.read_text())["cells"]
    text = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    words = len([token for token in text.split() if re.search(r"\w", token)])
    lines = sum(len("".join(c["source"]).splitlines()) for c in cells if c["cell_type"] == "code")
    return words, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", action="store_true", help="print each notebook's words and code lines")
    if parser.parse_args().counts:
        notebooks = ROOT / "notebooks"
        for path in [*sorted(notebooks.glob("[0-9][0-9]_*.ipynb")), *sorted(notebooks.glob("exercises/*.ipynb"))]:
            words, lines = counts(path)
            minutes = math.ceil(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE)  # a chapter's "read"
            estimate = f"read {minutes} min" if path.parent == notebooks else "(exercises: their words only)"
            print(f"{path.relative_to(notebooks).as_posix():50} {words:5,} words {lines:4} code lines  {estimate}")
        return
    print(draw())


if __name__ == "__main__":
    main()
