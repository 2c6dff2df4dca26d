"""Each notebook (chapters, exercises, solutions) is a jupytext pair with a plain script; the two must not drift
apart, and the committed outputs come from one top-to-bottom run. A chapter run as a script opens no window
and writes no figure unless asked (MINIGPT_WRITE_FIGURES=1)."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import matplotlib.pyplot as plt
import pytest

from minigpt import viz

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


CHAPTERS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_ignored_outputs_say_why(path):
    """A cell nbval does not check says why on the line under the marker (docs/contributing.md)."""
    for cell in jupytext.read(path).cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code" and "# NBVAL_IGNORE_OUTPUT" in lines:
            below = lines[lines.index("# NBVAL_IGNORE_OUTPUT") + 1]
            assert below.startswith("# why: "), f"say why nbval ignores this cell's output:\n{cell.source}"


def test_figures_are_written_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.setattr(viz, "FIGURES_DIR", tmp_path)
    monkeypatch.delenv(viz.WRITE_FIGURES, raising=False)
    assert viz.save_figure(plt.figure(), "chapter") is None and not any(tmp_path.iterdir())
    monkeypatch.setenv(viz.WRITE_FIGURES, "1")
    assert viz.save_figure(plt.figure(), "chapter") == tmp_path / "chapter.png"
    assert (tmp_path / "chapter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close("all")


def test_a_chapter_run_as_a_script_gets_no_window(tmp_path):
    """Where matplotlib's default backend would open a window (a desktop), a script still gets Agg.

    The stand-in "desktop" backend fails where a real one would wait for its window to be closed.
    """
    (tmp_path / "window_backend.py").write_text(
        "from matplotlib.backend_bases import FigureManagerBase as FigureManager\n"
        "from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas\n"
        "def show(*args, **kwargs):\n"
        "    raise SystemExit('plt.show() would wait for a window here')\n"
    )
    (tmp_path / "matplotlibrc").write_text("backend: module://window_backend\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env |= {"MATPLOTLIBRC": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    script = "import matplotlib, matplotlib.pyplot as plt{}; plt.plot([1]); plt.show(); print(matplotlib.get_backend())"
    as_desktop = subprocess.run([sys.executable, "-c", script.format("")], env=env, capture_output=True, text=True)
    assert "would wait for a window" in as_desktop.stderr  # the stand-in works
    chapter = subprocess.run([sys.executable, "-c", script.format(", minigpt.viz")], env=env, capture_output=True,
                             text=True, timeout=120)
    assert (chapter.returncode, chapter.stdout.strip().lower(), chapter.stderr) == (0, "agg", "")
