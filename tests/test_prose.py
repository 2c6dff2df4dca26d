"""A sentence in a chapter is a claim: every number in a notebook's prose must come from its code.

nbval checks that each cell's output is what the code computes today, but nothing checks the markdown
around it. So this test reads every number in every markdown cell (chapters, exercises, solutions) and
requires it to be *covered* by one of:

1. **the notebook's outputs**: the number is printed somewhere in the committed outputs (nbval keeps them
   current), written the same way (``0.892``, ``2,102``, ``1.5e-4``). A sentence that quotes a result
   quotes what a cell printed; a sentence built from variables (``display(Markdown(f"..."))``) is an
   output itself and needs no markdown at all;
2. **an input next to it**: the number is in the source of the code cell just before or just after the
   markdown cell (a setting the prose explains, ``k = 8``, ``T = 0.7``);
3. **the allow-list below**: constants and facts that no cell computes (GPT-2's vocabulary, a paper's
   result), each with the reason it may stand.

Not read as claims: code spans and LaTeX (`` `...` ``, ``$...$``), link targets, "Step 3", "chapter 7",
"exercise 2", and everything under a "Sources" heading (years, pages, arXiv ids). A number that is
not covered fails the test with the cell and the sentence around it: print it from the code, write the
sentence without it, or (for a true constant) add it to the allow-list with its reason.

A number matches anywhere in the notebook's outputs, so a stale number that happens to equal another
printed value slips through; qualitative comparisons ("below the bound", "faster") are not numbers at
all. Both are covered by the other half of the rule: such a sentence stands next to an ``assert`` in the
code cell beside it (docs/contributing.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted(p for p in (Path(__file__).resolve().parent.parent / "notebooks").rglob("[0-9][0-9]_*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)

# A number: digits with optional thousands commas, decimals and exponent ("50,257", "0.892", "2.9e-5"); not
# the digits of a name ("GPT-2", "top-2", "distinct-2").
NUMBER = re.compile(r"(?<![\w.])(?<!\w-)\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])(?<!\w-)\d+(?:\.\d+)?(?:e[-−]?\d+)?(?![\w])")

NOT_CLAIMS = [
    re.compile(r"`[^`]*`"),  # code spans: names, literals, commands
    re.compile(r"\$[^$]+\$"),  # formulas
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<[^>]+>"),  # HTML tags and their attributes
    re.compile(r"\b(?:[Ss]teps?|[Cc]hapters?|[Ee]xercises?|[Pp]arts?|[Ss]ections?|[Ee]q\.|[Qq]uestion)\s+\d+"
               r"(?:\s*(?:[-–,]|and|or)\s*\d+)*"),  # cross-references
    re.compile(r"^#+ .*\d.*$", re.M),  # headings ("## Step 3: ...", "# Chapter 10 — ...")
    re.compile(r"^\s*\d+\.(?=\s)", re.M),  # numbered-list markers ("2. Predict ...")
]

# Constants and facts no cell needs to compute; each with the reason it may stand in prose.
ALLOWED = {
    "50,257": "GPT-2's vocabulary size (tokenizer.VOCAB_SIZE, checked in tests/test_tokenizer.py)",
    "124M": "the name of GPT-2's smallest model",
    "0": "zero: 'temperature 0', 'step 0' and the like are definitions, not measurements",
    "1": "one: 'one token', 'probability 1', 'batch size 1' are definitions, not measurements",
}
PER_NOTEBOOK: dict[str, dict[str, str]] = {
    "03_top_k_exercises": {"50": "k = 50, transformers' default top_k, is the setting the open question asks about"},
    "03_top_k_solutions": {"50": "k = 50, transformers' default top_k, is the setting the open question asks about"},
    "12_memory_bound_exercises": {"127": "int8's symmetric range [-127, 127]: the definition Exercise 1 asks for"},
}


def _plain(text: str) -> str:
    return text.replace(",", "").replace("−", "-").lstrip("-")


def _numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def _text_outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


def _prose(source: str) -> str:
    """The part of a markdown cell that makes claims: everything above a "Sources" heading, minus code."""
    source = re.split(r"^#+\s*Sources\b", source, flags=re.M)[0]
    for pattern in NOT_CLAIMS:
        source = pattern.sub(" ", source)
    return source


def uncovered_numbers(path: Path) -> list[str]:
    """Each number in ``path``'s prose that no output, neighbouring input or allow-list entry covers."""
    notebook = nbformat.read(path, as_version=4)
    # a student notebook keeps no outputs: nbgrader generates it from its solutions notebook, which ran the same code
    ran = path.parent.parent / "solutions" / path.name.replace("_exercises", "_solutions")
    ran = nbformat.read(ran, as_version=4) if path.parent.name == "exercises" else notebook
    printed = {_plain(n) for cell in ran.cells for n in _numbers(_text_outputs(cell))}
    allowed = {_plain(n) for n in [*ALLOWED, *PER_NOTEBOOK.get(path.stem, {})]}
    cells = notebook.cells
    problems = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        neighbours = [c for c in (cells[i - 1] if i else None, cells[i + 1] if i + 1 < len(cells) else None)
                      if c is not None and c.cell_type == "code"]
        inputs = {_plain(n) for c in neighbours for n in _numbers(c.source)}
        prose = _prose(cell.source)
        for match in NUMBER.finditer(prose):
            number = _plain(match.group())
            if number not in printed | inputs | allowed:
                context = " ".join(prose[max(0, match.start() - 60): match.end() + 40].split())
                problems.append(f"cell {i}: {match.group()!r} in '... {context} ...'")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_comes_from_the_code(path):
    problems = uncovered_numbers(path)
    assert not problems, (
        f"{path.name}: numbers in the prose that no cell prints, no neighbouring cell sets and the allow-list "
        "does not name (print them from the code, or say it without them):\n  " + "\n  ".join(problems))


def test_the_check_finds_a_stale_number(tmp_path):
    notebook = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(f'{2102:,} tokens')", execution_count=1)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2,102 tokens\n")]
    notebook.cells = [
        code,
        nbformat.v4.new_markdown_cell("Top-p keeps 2,102 tokens here (Step 3), about 3,400 in `k = 3400`."),
        nbformat.v4.new_markdown_cell("## Sources\n\n- Holtzman et al. (2020). arXiv:1904.09751."),
    ]
    path = tmp_path / "99_example.ipynb"
    nbformat.write(notebook, path)
    problems = uncovered_numbers(path)
    assert len(problems) == 1 and "'3,400'" in problems[0]


IMAGE = re.compile(r"<img\b[^>]*>|!\[([^\]]*)\]\([^)]*\)")


def images_without_alt_text(markdown: str) -> list[str]:
    """Each image in ``markdown`` (``<img ...>`` or ``![alt](src)``) whose alt text is missing or empty."""
    missing = []
    for match in IMAGE.finditer(markdown):
        tag = match.group()
        alt = match.group(1) if tag.startswith("!") else (re.search(r'\balt="([^"]*)"', tag) or [None, ""])[1]
        if not alt.strip():
            missing.append(tag)
    return missing


def test_every_image_says_what_it_shows():
    """Alt text: what a screen reader reads, and what shows where the image does not load."""
    root = Path(__file__).resolve().parent.parent
    pages = {p.relative_to(root).as_posix(): p.read_text() for p in [root / "README.md", *(root / "docs").glob("*.md")]}
    pages |= {p.name: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown")
              for p in NOTEBOOKS}
    missing = {name: images_without_alt_text(text) for name, text in pages.items()}
    assert not {k: v for k, v in missing.items() if v}
    assert images_without_alt_text('<img src="a.png" width="2"> ![](b.png) ![a plot](c.png)') == [
        '<img src="a.png" width="2">', "![](b.png)"]
