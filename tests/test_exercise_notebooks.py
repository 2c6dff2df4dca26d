"""The exercise and solution notebooks: one pair per chapter 1–8, the same cells apart from the filled-in stubs.

An exercise notebook leaves each stub unimplemented, marked with ``STUB``; its check cell then prints the
checker's "not implemented yet". The solutions notebook is the same notebook with the stubs filled in, and
every check there passes. nbval compares the outputs themselves; this file keeps the pairs from drifting, and
test_chapters.py keeps each notebook equal to its script. Run as a plain script, a notebook prints the same
verdicts its check cells show.
"""

import runpy
from pathlib import Path

import jupytext
import pytest
import torch

from minigpt.exercises.checking import NOT_IMPLEMENTED

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["01_greedy", "02_temperature", "03_top_k", "04_top_p", "05_controlling_the_loop", "06_beam_search",
            "07_kv_cache", "08_speculative_decoding"]
STUB = "raise NotImplementedError  # EXERCISE: write this function"
VERDICT = ("✓ ", "✗ ")


def read(chapter: str, kind: str):
    return jupytext.read(NOTEBOOKS / f"{kind}s" / f"{chapter}_{kind}s.ipynb")


def outputs(cell) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def check_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip().splitlines()[-1].startswith("check_")]


def verdicts(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(VERDICT)]


def test_one_exercise_and_one_solution_notebook_per_chapter():
    for kind in ("exercise", "solution"):
        found = sorted(p.stem.removesuffix(f"_{kind}s") for p in (NOTEBOOKS / f"{kind}s").glob("*.ipynb"))
        assert found == CHAPTERS  # each one's script twin and run order: test_chapters.py


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_are_the_exercises_with_the_stubs_filled_in(chapter):
    exercise, solution = read(chapter, "exercise").cells, read(chapter, "solution").cells
    assert len(exercise) == len(solution)
    stubs = 0
    for ex, sol in zip(exercise, solution):
        assert STUB not in sol.source
        if STUB in ex.source:
            stubs += 1
            # the same function: signature and docstring, everything above the stub line
            head = ex.source.split(STUB)[0].rstrip()
            assert sol.source.startswith(head) and sol.source.strip() != head
        else:  # the title says which of the pair it is; everything else is the same
            assert ex.source == sol.source.replace(" (solutions)", "", 1)
    assert stubs >= 2, "each chapter's exercise notebook has at least two exercises"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_checks_say_not_implemented_in_exercises_and_pass_in_solutions(chapter):
    for kind, verdict in (("exercise", NOT_IMPLEMENTED), ("solution", "✓")):
        checks = check_cells(read(chapter, kind))
        assert len(checks) >= 2
        for cell in checks:
            assert verdict in outputs(cell), f"{kind}: {cell.source!r} printed {outputs(cell)!r}"
            assert len(verdicts(outputs(cell))) == 1, f"{kind}: {cell.source!r} showed its verdict more than once"
            if kind == "solution":
                assert "✗" not in outputs(cell)


@pytest.mark.parametrize("kind", ["exercise", "solution"])
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_run_as_a_script_it_prints_the_verdicts_the_notebook_shows(chapter, kind, capsys):
    """`python notebooks/exercises/01_greedy_exercises.py` prints every check's verdict, once, as Jupyter does."""
    with torch.random.fork_rng(devices=[]):  # the script seeds torch's global generator: give it back
        runpy.run_path(str(NOTEBOOKS / f"{kind}s" / f"{chapter}_{kind}s.py"), run_name="__main__")
    shown = [line for cell in check_cells(read(chapter, kind)) for line in verdicts(outputs(cell))]
    assert verdicts(capsys.readouterr().out) == shown
    assert len(shown) == len(check_cells(read(chapter, kind)))
