"""Grading a class end to end with nbgrader, as docs/teaching.md tells an instructor to.

One test walks the guide on chapter 3's exercises: ``python docs/exercises.py course`` makes the course
directory, ``nbgrader generate_assignment`` the student notebook, four submissions are collected into
``submitted/`` (one all correct, one with a bug in ``top_k_probs`` only, one whose functions loop forever and
print forever, one that kills its own kernel), ``nbgrader autograde`` runs with the instructor's secret, an
open answer is graded by hand, and ``nbgrader generate_feedback`` and ``nbgrader export`` give the feedback
and the grades. The grades per exercise are asserted, and so is what the feedback shows: the failing hidden
case, the time limit, the cut output, never the secret.

The other tests hold the checker to what grading needs from it: a student's function, run by a hidden test,
cannot find the instructor's secret in its environment or in the checker's frames.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from minigpt.exercises import grading
from minigpt.exercises.checking import SECRET_VARIABLE
from minigpt.exercises.top_k import check_top_k_filter
from minigpt.logits import top_k_filter

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "03_top_k"
NOTEBOOK = f"{CHAPTER}_exercises.ipynb"
SECRET = "a phrase only the instructor knows"

# What each student wrote in place of the stubs; a function not named here is the worked solution.
LOOPS_FOREVER = "def top_k_filter(logits, k):\n    while True:\n        pass\n"
PRINTS_FOREVER = "def top_k_probs(logits, k, temperature):\n    while True:\n        print('spam ' * 20)\n"
FORGETS_TO_RENORMALISE = """\
def top_k_probs(logits, k, temperature):
    probs = torch.softmax(logits / temperature, dim=-1)
    return probs.masked_fill(top_k_filter(logits, k) == float("-inf"), 0.0)  # the survivors no longer sum to 1
"""
KILLS_ITS_KERNEL = "import os\n\nos._exit(1)\n"
SUBMISSIONS = {
    "alice": {},
    "bob": {"top_k_probs": FORGETS_TO_RENORMALISE},
    "carol": {"top_k_filter": LOOPS_FOREVER, "top_k_probs": PRINTS_FOREVER},
    "dave": {"top_k_filter": KILLS_ITS_KERNEL},
}


def nbgrader(course: Path, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != SECRET_VARIABLE}
    if secret is not None:
        env[SECRET_VARIABLE] = secret
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=600)


def solution(source: nbformat.NotebookNode, grade_id: str) -> str:
    """A solution cell of the source as a student who solved it would write it: the markers gone."""
    cell = next(c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    return "\n".join(line for line in cell.source.splitlines() if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def submit(course: Path, student: str, written: dict[str, str]) -> None:
    """What ``nbgrader collect`` (or the instructor, without JupyterHub) puts in submitted/: the filled-in notebook."""
    release = nbformat.read(course / "release" / CHAPTER / NOTEBOOK, as_version=4)
    source = nbformat.read(course / "source" / CHAPTER / NOTEBOOK, as_version=4)
    for cell in release.cells:
        marks = cell.metadata.get("nbgrader", {})
        grade_id = marks.get("grade_id", "")
        if cell.cell_type == "code" and marks.get("solution"):
            cell.source = written.get(grade_id, solution(source, grade_id))
        elif grade_id == "open_question":
            cell.source = f"{student}: no single k fits every prompt; it depends on how sure the model is."
    folder = course / "submitted" / student / CHAPTER
    folder.mkdir(parents=True)
    nbformat.write(release, folder / NOTEBOOK)


def scores(course: Path) -> dict[str, dict[str, float | None]]:
    """Each student's score per graded cell, as the gradebook holds them (the check cells' autograded points)."""
    from nbgrader.api import Gradebook, MissingEntry

    found = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in SUBMISSIONS:
            try:
                notebook = gradebook.find_submission_notebook(NOTEBOOK.removesuffix(".ipynb"), CHAPTER, student)
            except MissingEntry:
                continue
            found[student] = {grade.name: grade.score for grade in notebook.grades}
    return found


def test_a_class_is_graded_end_to_end(tmp_path):
    course = tmp_path / "course"
    subprocess.run([sys.executable, str(ROOT / "docs" / "exercises.py"), "course", str(course), CHAPTER],
                   check=True, capture_output=True, text=True)
    generated = nbgrader(course, "generate_assignment", CHAPTER)
    assert generated.returncode == 0, generated.stderr
    released = (course / "release" / CHAPTER / NOTEBOOK).read_text()
    assert "HIDDEN TESTS" not in released and "grade(" not in released and "### BEGIN SOLUTION" not in released

    for student, written in SUBMISSIONS.items():
        submit(course, student, written)
    start = time.monotonic()
    autograded = nbgrader(course, "autograde", CHAPTER, secret=SECRET)
    took = time.monotonic() - start
    # dave's kernel died: nbgrader says so, leaves him ungraded and grades everyone else
    assert "There was an error processing assignment '03_top_k' for student 'dave'" in autograded.stderr
    assert "DeadKernelError" in autograded.stderr
    # bounded: four kernels, and carol's four checks stopped at the 10 s limit each; about 100 s on a quiet
    # 2-core machine, so the bound only says that nothing ran on until nbgrader's 30 s per cell or for ever
    assert took < 400, f"autograde took {took:.0f} s"

    assert scores(course) == {
        "alice": {"check_top_k_filter": 1.0, "check_top_k_probs": 1.0, "open_question": 0.0},
        "bob": {"check_top_k_filter": 1.0, "check_top_k_probs": 0.0, "open_question": 0.0},
        "carol": {"check_top_k_filter": 0.0, "check_top_k_probs": 0.0, "open_question": 0.0},
        "dave": {"check_top_k_filter": 0.0, "check_top_k_probs": 0.0, "open_question": 0.0},  # nothing ran
    }

    # the open question, graded by hand (what formgrader's box does): alice's answer earns its point
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        gradebook.find_grade("open_question", NOTEBOOK.removesuffix(".ipynb"), CHAPTER, "alice").manual_score = 1.0
        gradebook.db.commit()

    feedback = nbgrader(course, "generate_feedback", CHAPTER)
    assert feedback.returncode == 0, feedback.stderr
    shown = {student: (course / "feedback" / student / CHAPTER / NOTEBOOK.replace(".ipynb", ".html")).read_text()
             for student in ("alice", "bob", "carol")}
    assert "✗" not in shown["alice"] and shown["alice"].count("all 8 drawn cases pass") == 1
    assert "✗ top_k_probs: drawn case 1 of 5 fails" in shown["bob"] and "each row must sum to 1" in shown["bob"]
    assert "did not return within 10 s" in shown["carol"] and "[output cut: the function printed more" in shown["carol"]
    assert all(SECRET not in page and "practice cases" not in page for page in shown.values())

    exported = nbgrader(course, "export")
    assert exported.returncode == 0, exported.stderr
    rows = [line.split(",") for line in (course / "grades.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    grades = {row[header.index("student_id")]: (float(row[header.index("score")]), float(row[header.index("max_score")]))
              for row in rows}
    assert grades == {"alice": (3.0, 3.0), "bob": (1.0, 3.0), "carol": (0.0, 3.0), "dave": (0.0, 3.0)}


def looks_for_the_secret(logits, k):
    """A student's function that searches where it can reach for the instructor's secret, and returns what it found."""
    found = [name for name, value in os.environ.items() if SECRET in value]
    frame = sys._getframe()
    while frame is not None:  # every caller's local variables: the checker's, the hidden test's
        found += [name for name, value in frame.f_locals.items() if isinstance(value, str) and SECRET in value]
        frame = frame.f_back
    if found:
        raise RuntimeError(f"found the secret in {found}")
    return top_k_filter(logits, k)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the secret is kept from the function in a forked child")
def test_a_hidden_test_does_not_hand_the_secret_to_the_function(monkeypatch, capsys):
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)
    assert grading.grade(check_top_k_filter, looks_for_the_secret).passed
    assert SECRET not in capsys.readouterr().out
    assert os.environ[SECRET_VARIABLE] == SECRET  # removed in the child only: the next hidden test needs it


def test_the_hidden_cases_come_from_the_secret(monkeypatch, capsys):
    def wrong(logits, k):
        return logits

    shown = []
    for secret in (SECRET, SECRET, "another phrase"):
        monkeypatch.setenv(SECRET_VARIABLE, secret)
        with pytest.raises(grading.HiddenTestFailed, match="^top_k_filter fails a hidden case: the verdict above"):
            grading.grade(check_top_k_filter, wrong)
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] != shown[2]
    assert shown[0].startswith("✗ top_k_filter: drawn case 1 of 8 fails") and "practice cases" not in shown[0]
    assert check_top_k_filter(wrong).message.splitlines()[0] != shown[0].splitlines()[0]  # not the visible cases


def test_without_a_secret_the_hidden_test_says_its_cases_are_public(monkeypatch, capsys):
    monkeypatch.delenv(SECRET_VARIABLE, raising=False)
    grading.grade(check_top_k_filter, top_k_filter)
    assert capsys.readouterr().out == f"✓ top_k_filter: all 8 drawn cases pass\n{grading.NO_SECRET}\n"


@pytest.mark.parametrize("checker, secret, error, message", [
    (len, None, TypeError, "checker must be one of minigpt.exercises' check_… functions, got <built-in function len>"),
    (check_top_k_filter, "", ValueError, "secret must be a non-empty string, got ''"),
])
def test_grade_refuses_what_it_cannot_use(checker, secret, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        grading.grade(checker, top_k_filter, secret=secret)


def test_a_forked_check_works_with_torch_threads_the_caller_started():
    """A check forks after the caller's torch ops: with more than one thread, the child used to wait forever on
    the parent's OpenMP pool (a student's script or notebook that never calls set_num_threads(1))."""
    script = ("import torch\n"
              "from minigpt.exercises.top_k import check_top_k_probs, _top_k_probs\n"
              "torch.set_num_threads(2)\n"
              "torch.softmax(torch.randn(64, 4096), dim=-1)  # the parent's thread pool, started\n"
              "check_top_k_probs(_top_k_probs)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout == "✓ top_k_probs: all 6 hidden cases pass\n", done.stdout + done.stderr


def test_a_function_that_prints_forever_is_cut_and_stopped():
    """Infinite output cannot flood the notebook or the grader: the first OUTPUT_LIMIT characters, a note, the verdict."""
    script = ("from minigpt.exercises import checking\n"
              "from minigpt.exercises.top_k import check_top_k_filter\n"
              "checking.TIME_LIMIT_S = 1.0\n"
              "def spams(logits, k):\n"
              "    while True:\n"
              "        print('spam ' * 20)\n"
              "check_top_k_filter(spams)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    from minigpt.exercises.checking import OUTPUT_LIMIT

    out = done.stdout
    cut = f"\n[output cut: the function printed more than {OUTPUT_LIMIT} characters]\n"
    assert out.index(cut) == OUTPUT_LIMIT and set(out[:OUTPUT_LIMIT]) == set("spam \n")
    assert out[OUTPUT_LIMIT + len(cut):].startswith("✗ top_k_filter: hidden case 1 of 8 fails")
    assert "did not return within 1 s" in out and len(out) < OUTPUT_LIMIT + 1000 and done.returncode == 0
