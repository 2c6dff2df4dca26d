"""Each notebook (chapters, exercises, solutions) is a jupytext pair with a plain script; the two must not drift
apart, and the committed outputs come from one top-to-bottom run."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted(p for p in (Path(__file__).resolve().parent.parent / "notebooks").rglob("[0-9][0-9]_*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)  # Jupyter's autosaves are not ours to check


def cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_chapters():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_script_agree(path):
    script = path.with_suffix(".py")
    assert script.exists(), f"{script.name} (the notebook as a plain script) is missing"
    assert cells(jupytext.read(path)) == cells(jupytext.read(script))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_was_executed_top_to_bottom(path):
    notebook = jupytext.read(path)
    counts = [c.execution_count for c in notebook.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "re-execute it: jupyter nbconvert --execute --inplace"
