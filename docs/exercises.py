"""Generate the student notebooks in notebooks/exercises/ from their one source, notebooks/solutions/, with nbgrader.

    python docs/exercises.py generate              # rewrite notebooks/exercises/ (then commit it)
    python docs/exercises.py generate --out DIR    # write them to DIR instead (tests/test_exercise_generation.py)

Each solutions notebook is an nbgrader source notebook: the code a student writes sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell marked as a solution, each ``check_…`` cell is an
autograded test cell (1 point), and the last cell, the worked answer to the open question, is a manually
graded answer cell (1 point). The command builds an nbgrader course directory in a temporary folder
(``nbgrader_config.py``, one assignment per chapter under ``source/``), runs ``nbgrader generate_assignment
--force`` on it, and copies the released notebooks back: the solutions replaced by the stub below, the worked
answer by "YOUR ANSWER HERE", the outputs cleared. Three things are done after nbgrader, none to what it grades: the
title loses its " (solutions)", the source's execution timestamps go, and each notebook gets its jupytext twin,
a plain ``.py`` script.
docs/teaching.md says more.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks" / "solutions"
EXERCISES = ROOT / "notebooks" / "exercises"

# what replaces a solution region: the stub line the exercise notebooks have always shown
CODE_STUB = "raise NotImplementedError  # EXERCISE: write this function"
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's own, for the open question's answer cell

CONFIG = f"""\
c = get_config()  # noqa: F821
c.CourseDirectory.root = {{root!r}}
c.ClearSolutions.code_stub = {{{{"python": {CODE_STUB!r}}}}}
c.ClearSolutions.text_stub = {TEXT_STUB!r}
"""


def assignment(source: Path) -> str:
    """The nbgrader assignment a source notebook belongs to: its chapter, e.g. ``03_top_k``."""
    return source.stem.removesuffix("_solutions")


def generate(out: Path = EXERCISES) -> list[Path]:
    """Write each chapter's student notebook and its .py twin to ``out``; return the notebooks written."""
    sources = sorted(SOURCES.glob("[0-9][0-9]_*_solutions.ipynb"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minigpt-course-") as tmp:
        course = Path(tmp)
        (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
        for source in sources:
            folder = course / "source" / assignment(source)
            folder.mkdir(parents=True)
            shutil.copyfile(source, folder / f"{assignment(source)}_exercises.ipynb")
        subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--force", "--log-level=WARN"],
                       cwd=course, check=True)
        written = []
        for source in sources:
            name = f"{assignment(source)}_exercises.ipynb"
            notebook = nbformat.read(course / "release" / assignment(source) / name, as_version=4)
            title = notebook.cells[0]
            assert "nbgrader" not in title.metadata and " (solutions)" in title.source.splitlines()[0], name
            title.source = title.source.replace(" (solutions)", "", 1)
            for cell in notebook.cells:  # when the source was last run: nothing a student needs
                cell.metadata.pop("execution", None)
            nbformat.write(notebook, out / name)
            jupytext.write(notebook, (out / name).with_suffix(".py"), fmt="py:percent")
            written.append(out / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("generate", help="write the student notebooks (and their .py twins)")
    command.add_argument("--out", type=Path, default=EXERCISES, help="where to (default: notebooks/exercises)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
