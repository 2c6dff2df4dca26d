"""The exercise and solution notebooks: one pair per chapter 1–8, the same cells apart from the filled-in stubs.

An exercise notebook leaves each stub unimplemented, marked with ``STUB``; its check cell then prints the
checker's "not implemented yet". The solutions notebook is the same notebook with the stubs filled in, and
every check there passes. nbval compares the outputs themselves; this file keeps the pairs from drifting, and
test_chapters.py keeps each notebook equal to its script. Run as a plain script, a notebook prints the same
verdicts its check cells show.

Each exercise notebook also asks the student to think: it opens with a prediction (a question to answer before
running the cell that shows the answer) and ends with an open question; the solutions notebook repeats both
and adds one more cell, a worked answer to the open question.
"""

import runpy
from pathlib import Path

import jupytext
import pytest
import torch

from minigpt.exercises.checking import NOT_IMPLEMENTED

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["01_greedy", "02_temperature", "03_top_k", "04_top_p", "05_controlling_the_loop", "06_beam_search",
            "07_kv_cache", "08_speculative_decoding", "10_constrained_decoding",
            "11_which_method_when", "12_memory_bound"]
STUB = "raise NotImplementedError  # EXERCISE: write this function"
VERDICT = ("✓ ", "✗ ")
PREDICT = "## Before you start: predict, then run"  # the first markdown cell after the title
OPEN_QUESTION = "## To think about: an open question"  # an exercise notebook's last cell
WORKED_ANSWER = "## Worked answer"  # a solutions notebook's last cell, after the open question


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
    assert len(solution) == len(exercise) + 1  # the solutions add a worked answer at the end
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


def paragraphs(markdown: str) -> list[str]:
    return [p for p in markdown.split("\n\n") if p.strip()]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_open_with_a_prediction_and_end_with_an_open_question(chapter):
    for kind in ("exercise", "solution"):
        cells = read(chapter, kind).cells
        assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# Chapter")  # the title
        first = next(i for i, c in enumerate(cells) if i > 0 and c.cell_type == "markdown")
        predict, run = cells[first], cells[first + 1]
        assert predict.source.startswith(PREDICT), f"{kind}: the first cell after the title asks for a prediction"
        asked = predict.source.partition("write down your answers:")[2]  # "Before you run …, write down …:"
        assert "Before you run" in predict.source and "\n1. " in asked and "?" in asked
        # the cell after it runs and shows the answer, before the first exercise
        assert run.cell_type == "code" and not run.source.strip().splitlines()[-1].startswith("check_")
        assert outputs(run).strip() and STUB not in run.source
        assert first < next(i for i, c in enumerate(cells) if c.source.startswith("## Exercise 1"))
        last = cells[-1] if kind == "exercise" else cells[-2]
        assert last.cell_type == "markdown" and last.source.startswith(OPEN_QUESTION), f"{kind}: ends with it"
        assert "?" in paragraphs(last.source)[1]  # the question itself, under the heading
        assert "no single right answer" in last.source


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_end_with_a_worked_answer(chapter):
    exercise, solution = read(chapter, "exercise").cells, read(chapter, "solution").cells
    assert solution[-2].source == exercise[-1].source  # the open question, then its answer
    answer = solution[-1]
    assert answer.cell_type == "markdown" and answer.source.startswith(WORKED_ANSWER)
    assert WORKED_ANSWER not in "".join(c.source for c in exercise)
    assert len(paragraphs(answer.source)) >= 3  # the heading and a few paragraphs, not a one-liner
