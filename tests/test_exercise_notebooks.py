"""The exercise notebooks: one per chapter, an nbgrader source in solutions/ and the student version it generates.

Each solutions notebook is the one source (docs/teaching.md): the code a student writes sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a solution cell, each ``check_…`` cell is an autograded
test cell with a point whose hidden test (``### BEGIN HIDDEN TESTS``) grades on cases drawn from the
instructor's secret, and each worked answer to an open question is a manually graded answer cell that ends in
its rubric. The exercise notebook is what ``nbgrader generate_assignment`` makes of it, through
``python docs/exercises.py generate``: each solution replaced by the stub ``STUB``, the worked answer by
nbgrader's "YOUR ANSWER HERE", the outputs cleared. tests/test_exercise_generation.py keeps the committed
exercise notebooks equal to what the command generates; this file checks the source's markers and what both
notebooks teach. In the solutions every check passes (nbval compares those outputs); in the exercises, which
keep no outputs, each check cell runs and prints the checker's "not implemented yet". Run as a plain script,
a notebook prints the same verdicts.

Each exercise notebook also asks the student to think: it opens with a prediction (a question to answer before
running the cell that shows the answer) and ends with an open question, followed by the cell for the answer;
in the solutions notebook that cell holds a worked answer.
"""

import runpy
from pathlib import Path

import jupytext
import pytest
import torch

from minigpt.exercises.checking import NOT_IMPLEMENTED

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = ["00_tokens_and_logits", "01_greedy", "02_temperature", "03_top_k", "04_top_p", "05_controlling_the_loop", "06_beam_search",
            "07_kv_cache", "08_speculative_decoding", "09_determinism", "10_constrained_decoding",
            "11_which_method_when", "12_memory_bound", "13_serving_many_users", "14_watermarks"]
STUB = "raise NotImplementedError  # EXERCISE: write this function"  # docs/exercises.py's CODE_STUB
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
ANSWER_STUB = "YOUR ANSWER HERE"  # docs/exercises.py's TEXT_STUB
VERDICT = ("✓ ", "✗ ")
PREDICT = "## Before you start: predict, then run"  # the first markdown cell after the title
OPEN_QUESTION = "## To think about: an open question"  # the last cell but one
WORKED_ANSWER = "## Worked answer"  # a solutions notebook's last cell, the open question's answer cell
HIDDEN = ["### BEGIN HIDDEN TESTS", "from minigpt.exercises.grading import grade", "", "grade({checker}, {function})",
          "### END HIDDEN TESTS"]  # what follows the visible check in a source's check cell
RUBRIC = ["#### Rubric (1 point)", "", "- **1 point**: ", "- **½ point**: ", "- **0 points**: "]  # each line's start


def read(chapter: str, kind: str):
    return jupytext.read(NOTEBOOKS / f"{kind}s" / f"{chapter}_{kind}s.ipynb")


def outputs(cell) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def check_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip().startswith("check_")]


def answer_cells(notebook) -> list:
    """The manually graded cells: an answer to an open question (the worked answer, in the source)."""
    return [c for c in notebook.cells if c.cell_type == "markdown" and grading(c).get("grade")]


def grading(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def verdicts(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(VERDICT)]


def test_one_exercise_and_one_solution_notebook_per_chapter():
    for kind in ("exercise", "solution"):
        found = sorted(p.stem.removesuffix(f"_{kind}s") for p in (NOTEBOOKS / f"{kind}s").glob("*.ipynb"))
        assert found == CHAPTERS  # each one's script twin and run order: test_chapters.py


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_source_marks_what_nbgrader_grades(chapter):
    """Solution cells hold one marked region each, check cells are graded, the worked answer is graded by hand."""
    source = read(chapter, "solution")
    cells = source.cells
    solutions = [c for c in cells if grading(c).get("solution") and c.cell_type == "code"]
    assert len(solutions) >= 2, "each chapter's notebook has at least two exercises"
    for cell in solutions:
        lines = cell.source.splitlines()
        assert [line.strip() for line in lines if "SOLUTION" in line] == [BEGIN, END], cell.source
        assert lines[0].startswith("def ")  # one function per exercise, its signature and docstring left to see
        assert lines[-1].strip() == END and not grading(cell)["grade"]
        assert grading(cell)["grade_id"] == lines[0].removeprefix("def ").split("(")[0]  # the function's name
    checks = check_cells(source)
    assert [grading(c)["grade_id"] for c in checks] == [f"check_{grading(c)['grade_id']}" for c in solutions]
    for cell in checks:
        assert grading(cell) | {"points": 1} == {"grade": True, "grade_id": grading(cell)["grade_id"], "locked": True,
                                                 "points": 1, "schema_version": 3, "solution": False, "task": False}
        assert grading(cell)["points"] > 0
        checker, function = grading(cell)["grade_id"], grading(cell)["grade_id"].removeprefix("check_")
        hidden = [line.format(checker=checker, function=function) for line in HIDDEN]
        assert cell.source.splitlines() == [f"{checker}({function})", *hidden], "the visible check, then the hidden test"
    answers = answer_cells(source)
    assert answers[-1] is cells[-1] and grading(cells[-1])["grade_id"] == "open_question"
    for answer in answers:
        assert grading(answer)["solution"] and grading(answer)["points"] == 1
        assert BEGIN not in answer.source  # the whole cell is the solution
        rubric = answer.source.splitlines()[-len(RUBRIC):]
        assert all(line.startswith(start) and (not start.startswith("- ") or len(line) > len(start) + 20)
                   for line, start in zip(rubric, RUBRIC, strict=True)), f"{chapter}: ends in its rubric"
    marked = [c for c in cells if "nbgrader" in c.metadata]
    assert len(marked) == len(solutions) + len(checks) + len(answers)
    assert len({grading(c)["grade_id"] for c in marked}) == len(marked)  # nbgrader needs them unique


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_exercises_show_stubs_where_the_solutions_have_code(chapter):
    exercise = read(chapter, "exercise").cells
    stubs = [c for c in exercise if grading(c).get("solution") and c.cell_type == "code"]
    assert len(stubs) >= 2 and all(c.source.strip().endswith(STUB) and c.source.count(STUB) == 1 for c in stubs)
    assert not any(BEGIN in c.source or END in c.source for c in exercise)
    assert all(STUB not in c.source for c in read(chapter, "solution").cells)
    assert all(not c.get("outputs") and c.execution_count is None for c in exercise if c.cell_type == "code")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_checks_pass_in_the_solutions(chapter):
    checks = check_cells(read(chapter, "solution"))
    assert len(checks) >= 2
    for cell in checks:
        assert "✓" in outputs(cell) and "✗" not in outputs(cell), f"{cell.source!r} printed {outputs(cell)!r}"
        shown = verdicts(outputs(cell))  # the visible check's, then the hidden test's on practice cases
        assert len(shown) == 2 and " hidden cases pass" in shown[0] and " drawn cases pass" in shown[1], shown


@pytest.mark.parametrize("kind", ["exercise", "solution"])
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_run_as_a_script_it_prints_the_verdicts_the_notebook_shows(chapter, kind, capsys):
    """`python notebooks/exercises/01_greedy_exercises.py` prints every check's verdict, once, as Jupyter does.

    An exercise notebook keeps no outputs: each of its checks says "not implemented yet", and none raises.
    """
    with torch.random.fork_rng(devices=[]):  # the script seeds torch's global generator: give it back
        runpy.run_path(str(NOTEBOOKS / f"{kind}s" / f"{chapter}_{kind}s.py"), run_name="__main__")
    printed = verdicts(capsys.readouterr().out)
    checks = check_cells(read(chapter, kind))
    if kind == "solution":  # each check cell prints two verdicts: the visible check's and the hidden test's
        assert printed == [line for cell in checks for line in verdicts(outputs(cell))]
        assert len(printed) == 2 * len(checks)
    else:
        assert all(line.startswith("✗ ") and NOT_IMPLEMENTED in line for line in printed), printed
        assert len(printed) == len(checks)


def paragraphs(markdown: str) -> list[str]:
    return [p for p in markdown.split("\n\n") if p.strip()]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_open_with_a_prediction_and_end_with_an_open_question(chapter):
    for kind in ("exercise", "solution"):
        cells = read(chapter, kind).cells
        assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# Chapter")  # the title
        assert ("(solutions)" in cells[0].source.splitlines()[0]) == (kind == "solution")
        first = next(i for i, c in enumerate(cells) if i > 0 and c.cell_type == "markdown")
        predict, run = cells[first], cells[first + 1]
        assert predict.source.startswith(PREDICT), f"{kind}: the first cell after the title asks for a prediction"
        asked = predict.source.partition("write down your answers:")[2]  # "Before you run …, write down …:"
        assert "Before you run" in predict.source and "\n1. " in asked and "?" in asked
        # the cell after it runs and shows the answer (in the solutions, which keep outputs), before exercise 1
        assert run.cell_type == "code" and not run.source.strip().splitlines()[-1].startswith("check_")
        assert STUB not in run.source and "nbgrader" not in run.metadata
        assert bool(outputs(run).strip()) == (kind == "solution")
        assert first < next(i for i, c in enumerate(cells) if c.source.startswith("## Exercise 1"))
        question = cells[-2]
        assert question.cell_type == "markdown" and question.source.startswith(OPEN_QUESTION), f"{kind}: ends with it"
        assert "?" in paragraphs(question.source)[1]  # the question itself, under the heading
        assert "no single right answer" in question.source
        assert grading(cells[-1])["grade_id"] == "open_question"  # then the cell for the answer


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_only_the_solutions_hold_the_worked_answer(chapter):
    exercise, solution = read(chapter, "exercise").cells, read(chapter, "solution").cells
    assert solution[-2].source == exercise[-2].source  # the open question, then its answer cell
    answer = solution[-1]
    assert answer.cell_type == "markdown" and answer.source.startswith(WORKED_ANSWER)
    assert len(paragraphs(answer.source)) >= 3  # the heading and a few paragraphs, not a one-liner
    assert exercise[-1].source == ANSWER_STUB and exercise[-1].cell_type == "markdown"
    assert WORKED_ANSWER not in "".join(c.source for c in exercise)
    assert all(cell.source == ANSWER_STUB for cell in answer_cells(read(chapter, "exercise")))
    assert "Rubric" not in "".join(c.source for c in exercise)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_an_exercise_with_its_own_open_question_also_asks_for_a_prediction(chapter):
    """A whole-decoder exercise (chapters 7, 8, 10) has its own prediction and open question inside its section."""
    cells = read(chapter, "exercise").cells
    for answer in answer_cells(read(chapter, "exercise"))[:-1]:
        function = grading(answer)["grade_id"].removeprefix("open_question_")
        i = cells.index(answer)
        section = max(j for j in range(i) if cells[j].source.startswith("## Exercise"))
        within = cells[section:i]
        predict = next(c for c in within if c.source.startswith("### Predict, then run"))
        assert "Before you run the next cell, write down your answer" in predict.source and "?" in predict.source
        run = within[within.index(predict) + 1]
        assert run.cell_type == "code" and "nbgrader" not in run.metadata and STUB not in run.source
        assert any(grading(c).get("grade_id") == function and c.cell_type == "code" for c in within), function
        assert cells[i - 1].source.startswith("### To think about:") and "no single right answer" in cells[i - 1].source
