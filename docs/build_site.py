"""Build the course website: ``python docs/build_site.py`` writes it to docs/_build/html (see docs/site.md).

The site's sources are the repository's own files, in the repository's layout (so the README's and the
chapters' relative links hold): the chapters, exercises and solutions from ``notebooks/`` with their committed
outputs, the syllabus ``notebooks/README.md``, the README and ``docs/*.md``, and the front page
``docs/_site/index.md``. They are copied into a staging folder (``WORK/source``, keeping their times, so a
second build re-reads only what changed) and Sphinx builds that with ``docs/conf.py``. Nothing is fetched:
the build runs offline. ``--execute`` re-runs every notebook instead of rendering its committed outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# what the site renders or links to, relative to the repository root
SOURCES = [
    "README.md",
    "LICENSE",
    "docs/*.md",
    "notebooks/*.md",
    "notebooks/*.ipynb",
    "notebooks/exercises/*.ipynb",
    "notebooks/solutions/*.ipynb",
    "data/README.md",
    "minigpt/fast/README.md",
    "figures/*",
]


LINK = re.compile(r"\]\(<?([^)\s>]+)>?\)|\bsrc=\"([^\"]+)\"")  # markdown links and images, <img src="...">


def linked(page: Path) -> set[Path]:
    """The repository's files and folders a page links to (a script, a data file, ``exercises/``)."""
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "markdown")
    found = set()
    for match in LINK.finditer(text):
        target = (match[1] or match[2]).split("#")[0]
        if not target or ":" in target:  # an anchor on the page, or a URL
            continue
        path = (page.parent / target).resolve()
        if path.exists() and path.is_relative_to(ROOT) and not {".git", ".venv"} & set(path.parts):
            found.add(path)
    return found


def folder_page(folder: Path, source: Path) -> str:
    """A page for a linked folder (``exercises/``): what a repository browser shows there, the folder's pages."""
    rel = folder.relative_to(source).as_posix()
    docs = sorted(p for p in folder.iterdir() if p.suffix in (".md", ".ipynb") and p.name != "index.md")
    lines = ["---", "orphan: true", "---", "", f"# {rel}/", ""]
    lines += [f"- [{p.stem.replace('_', ' ')}]({p.name})" for p in docs]
    return "\n".join(lines) + "\n"


def stage(source: Path) -> list[Path]:
    """Copy the site's sources into ``source`` (only those changed), drop those gone; return the copied paths.

    A file a page links to is copied too (the site serves it as a download), and a folder a page links to gets
    an ``index.md`` listing its pages (the extension points the link there).
    """
    wanted = {p.relative_to(ROOT): p for pattern in SOURCES for p in sorted(ROOT.glob(pattern)) if p.is_file()}
    folders = set()
    for page in [p for p in wanted.values() if p.suffix in (".md", ".ipynb")]:
        for path in linked(page):
            if path.is_file():
                wanted.setdefault(path.relative_to(ROOT), path)
            elif path != ROOT:
                folders.add(path.relative_to(ROOT))
    wanted[Path("index.md")] = DOCS / "_site" / "index.md"
    copied = []
    for rel, src in wanted.items():
        dst = source / rel
        same = lambda a, b: (a.st_mtime_ns, a.st_size) == (b.st_mtime_ns, b.st_size)  # noqa: E731
        if dst.exists() and same(dst.stat(), src.stat()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(rel)
    generated = {}
    for rel in sorted(folders):
        if (source / rel).is_dir() and rel / "index.md" not in wanted:
            generated[rel / "index.md"] = folder_page(source / rel, source)
    for rel, text in generated.items():
        if not (source / rel).exists() or (source / rel).read_text(encoding="utf-8") != text:
            (source / rel).write_text(text, encoding="utf-8")
    for path in sorted(source.rglob("*"), reverse=True):  # a source deleted from the repository leaves the site
        if path.is_file() and path.relative_to(source) not in wanted and path.relative_to(source) not in generated:
            path.unlink()
    return copied


def build(out: Path, work: Path, *, execute: bool = False, jobs: str = "1", quiet: bool = False,
          warnings: Path | None = None) -> int:
    """Stage the sources under ``work`` and build the HTML site into ``out``; return Sphinx's exit status.

    ``warnings``: a file that receives Sphinx's warnings too (tests/test_site.py reads it).
    """
    from sphinx.cmd.build import build_main

    source = work / "source"
    source.mkdir(parents=True, exist_ok=True)
    stage(source)
    args = ["-b", "html", "-c", str(DOCS), "-d", str(work / "doctrees"), "-j", jobs, str(source), str(out)]
    if execute:
        args.insert(0, "-E")  # every page again: its outputs come from running it
    if quiet:
        args.insert(0, "-q")
    if warnings is not None:
        args[:0] = ["-w", str(warnings)]
    before = os.environ.get("MINIGPT_SITE_EXECUTE")
    os.environ["MINIGPT_SITE_EXECUTE"] = "1" if execute else "0"  # docs/conf.py reads it
    try:
        return build_main(args)
    finally:
        if before is None:
            del os.environ["MINIGPT_SITE_EXECUTE"]
        else:
            os.environ["MINIGPT_SITE_EXECUTE"] = before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python docs/build_site.py")
    parser.add_argument("--out", type=Path, help="where the site goes (default: WORK/html)")
    parser.add_argument("--work", type=Path, default=DOCS / "_build",
                        help="staging and cache folder (default: docs/_build)")
    parser.add_argument("--execute", action="store_true",
                        help="re-run every notebook instead of using its committed outputs")
    parser.add_argument("-j", "--jobs", default="1",
                        help="Sphinx's parallel readers, or auto (default: 1; on 2 cores auto was slower)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    out = args.out or args.work / "html"
    start = time.perf_counter()
    status = build(out.resolve(), args.work.resolve(), execute=args.execute, jobs=args.jobs, quiet=args.quiet)
    if status == 0:
        print(f"site built in {time.perf_counter() - start:.0f} s: open {(out / 'index.html').resolve().as_uri()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
