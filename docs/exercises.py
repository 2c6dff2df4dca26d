"""Generate the student notebooks in notebooks/exercises/ from their one source, notebooks/solutions/, with nbgrader.

    python docs/exercises.py generate              # rewrite notebooks/exercises/ (then commit it)
    python docs/exercises.py generate --out DIR    # write them to DIR instead (tests/test_exercise_generation.py)
    python docs/exercises.py generate 03_top_k     # only the chapters named
    python docs/exercises.py course ~/decoding     # an nbgrader course directory for a class (docs/teaching.md)

Each solutions notebook is an nbgrader source notebook: the code a student writes sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell marked as a solution, each ``check_…`` cell is an
autograded test cell (1 point) whose hidden test (``### BEGIN HIDDEN TESTS``) nbgrader removes from the
student's notebook, and each worked answer to an open question is a manually graded answer cell (1 point).
``generate`` builds an nbgrader course directory in a temporary folder
(``nbgrader_config.py``, one assignment per chapter under ``source/``), runs ``nbgrader generate_assignment
--force`` on it, and copies the released notebooks back: the solutions replaced by the stub below, the worked
answer by "YOUR ANSWER HERE", the outputs cleared. Three things are done after nbgrader, none to what it grades: the
title loses its " (solutions)", the source's execution timestamps go, and each notebook gets its jupytext twin,
a plain ``.py`` script. ``course`` makes the course directory an instructor grades a class in, the same way
but kept. docs/teaching.md says more.
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


def sources(chapters: list[str] | None = None) -> list[Path]:
    """The source notebooks of ``chapters`` (e.g. ``["03_top_k"]``); by default, every chapter that has one."""
    found = sorted(SOURCES.glob("[0-9][0-9]_*_solutions.ipynb"))
    unknown = sorted(set(chapters or []) - {assignment(source) for source in found})
    if unknown:
        known = ", ".join(assignment(source) for source in found)
        raise SystemExit(f"no exercise source for chapter(s) {', '.join(unknown)}: the chapters are {known}")
    return [source for source in found if not chapters or assignment(source) in chapters]


def make_course(root: Path, chapters: list[str] | None = None) -> list[str]:
    """Write an nbgrader course directory at ``root``; return its assignments, one per chapter.

    ``root/nbgrader_config.py`` holds the stubs the student notebooks show, and each chapter's source notebook
    goes to ``root/source/<chapter>/<chapter>_exercises.ipynb``, the name its student notebook will have.
    """
    chosen = sources(chapters)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"the course directory must be new or empty, and {root} is not: choose another")
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root.resolve())))
    for source in chosen:
        folder = root / "source" / assignment(source)
        folder.mkdir(parents=True)
        shutil.copyfile(source, folder / f"{assignment(source)}_exercises.ipynb")
    return [assignment(source) for source in chosen]


def generate(out: Path = EXERCISES, chapters: list[str] | None = None) -> list[Path]:
    """Write each chapter's student notebook and its .py twin to ``out``; return the notebooks written.

    ``chapters`` (e.g. ``["03_top_k"]``) limits it to those; by default, every chapter with a source.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minigpt-course-") as tmp:
        course = Path(tmp)
        make_course(course, chapters)
        subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--force", "--log-level=WARN"],
                       cwd=course, check=True)
        written = []
        for source in sources(chapters):
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
    command.add_argument("chapters", nargs="*", help="only these chapters, e.g. 03_top_k (default: all)")
    command.add_argument("--out", type=Path, default=EXERCISES, help="where to (default: notebooks/exercises)")
    command = commands.add_parser("course", help="make an nbgrader course directory with every chapter's source")
    command.add_argument("root", type=Path, help="the course directory to make (new or empty)")
    command.add_argument("chapters", nargs="*", help="only these chapters, e.g. 03_top_k (default: all)")
    args = parser.parse_args()
    if args.command == "generate":
        for path in generate(args.out, args.chapters):
            print(path)
    else:
        assignments = make_course(args.root, args.chapters)
        print(f"{args.root}: an nbgrader course with the assignments {', '.join(assignments)}; next, in it:\n"
              "  nbgrader generate_assignment <assignment>   (docs/teaching.md walks through the rest)")


if __name__ == "__main__":
    main()
