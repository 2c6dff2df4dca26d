"""The course site's own parts, as a small Sphinx extension (used by docs/conf.py).

- **The decoding explorer, live, in the chapters that open it** (2-5): the "Try it" cell's widget output
  becomes an iframe of the self-contained page ``minigpt.explore.export_page`` writes at build time, from the
  shipped ``shakespeare`` model, with the chapter's own prompt and slider settings. Both are read from the
  chapter: the settings are the keywords of its ``minigpt.explore(...)`` call, the prompt its first argument,
  evaluated as the chapter computes it (from its parameters cell, and for the flat step of chapters 2-4 by the
  chapter's own rule: the greedy continuation's step of largest entropy). The result is checked against the
  widget the committed notebook shows (its text repr names the prompt and every setting).
- **A "run this chapter" note** at the top of every notebook page: the README's setup command, then the
  commands that open or run that notebook.
- **Alt text for every figure**: matplotlib's outputs have none, so each gets the README's description of
  the same figure where the cell saves one the README shows, else the titles the cell gives the figure,
  else the section it is in.
- **Links to folders** (``exercises/``) go to the page ``docs/build_site.py`` writes for each such folder.
- **MathJax from the build**: the files of ``sphinx-mathjax-offline`` (a PyPI package) are copied into
  ``_static/mathjax``; no CDN.
"""

from __future__ import annotations

import ast
import html
import importlib
import json
import re
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

EXPLORER_DIR = "explorer"  # the explorer pages, under the site's root
EXPLORER_STEPS = 8  # sampled steps each page replays: enough to step through, quick to build
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# ---------------------------------------------------------------------------------------------------------------
# the chapter's explorer call, and the prompt it computes


def _notebook(env, docname: str) -> dict | None:
    path = Path(env.doc2path(docname))
    return json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".ipynb" else None


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def explore_call(source: str) -> ast.Call | None:
    """The ``minigpt.explore(...)`` call of a cell's code, if it makes one."""
    try:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "explore" and (
            isinstance(node.func.value, ast.Name) and node.func.value.id == "minigpt"
        ):
            return node
    return None


def _greedy_flat_step(model, prompt: str, new_tokens: int = 60) -> dict:
    """Chapters 2-4's names for their example (Step 7 of chapter 2): the greedy text and its flattest step."""
    import torch

    import minigpt
    from minigpt.tokenizer import encode

    text = minigpt.generate(model, prompt, max_new_tokens=new_tokens)  # greedy: chapter 1's text
    n_prompt = len(encode(prompt))
    with torch.no_grad():
        step_logits = model(text.ids)[0, n_prompt - 1 : -1]
    log_p = torch.log_softmax(step_logits.double(), dim=-1)
    step_H = -(log_p.exp() * log_p).sum(dim=-1)
    return {"text": text, "n_prompt": n_prompt, "flat": int(step_H.argmax()), "peaked": int(step_H.argmin())}


def chapter_explorer(notebook: dict, model) -> tuple[str, dict]:
    """The prompt and settings of the notebook's ``minigpt.explore(model, PROMPT, **settings)`` call."""
    from minigpt.tokenizer import decode

    params: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            exec(_source(cell), params)  # plain assignments: the chapter's parameters
    call = next(filter(None, (explore_call(_source(c)) for c in notebook["cells"] if c["cell_type"] == "code")))
    names = {node.id for node in ast.walk(call) if isinstance(node, ast.Name)}
    scope = {**params, "model": model, "decode": decode}
    if names & {"text", "n_prompt", "flat", "peaked"}:
        scope.update(_greedy_flat_step(model, params["prompt"]))
    value = lambda node: eval(compile(ast.Expression(node), "<explore call>", "eval"), scope)  # noqa: E731
    prompt = value(call.args[1])
    settings = {kw.arg: value(kw.value) for kw in call.keywords}
    return prompt, settings


def shown_widget(notebook: dict) -> tuple[str, dict] | None:
    """The prompt and settings the committed notebook's widget shows (its repr: ``Explorer('...' + 0 tokens, ...)``)."""
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            plain = "".join(data.get("text/plain", "")) if WIDGET_MIME in data else ""
            match = re.fullmatch(r"Explorer\((.*) \+ \d+ tokens, (.*), seed=\d+\)", plain, flags=re.S)
            if match:
                settings = dict(item.split("=", 1) for item in match[2].split(", "))
                return ast.literal_eval(match[1]), {k: ast.literal_eval(v) for k, v in settings.items()}
    return None


def write_explorer(app: Sphinx, docname: str) -> None:
    """Write the chapter's explorer page, ``explorer/<chapter>.html``, from the shipped model."""
    from minigpt.explore import DEFAULTS, export_page

    notebook = _notebook(app.env, docname)
    model = _shakespeare(app)
    prompt, settings = chapter_explorer(notebook, model)
    shown = shown_widget(notebook)
    if shown is not None:
        shown_prompt, shown_settings = shown
        expected = {**DEFAULTS, **settings}
        if shown_prompt != prompt or any(float(shown_settings[k]) != float(v) for k, v in expected.items()):
            logger.warning(f"{docname}: the explorer built for the site ({prompt!r}, {settings}) differs from the one "
                           f"the notebook's output shows ({shown_prompt!r}, {shown_settings}): re-run the chapter")
    out = Path(app.outdir) / EXPLORER_DIR / f"{Path(docname).name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    export_page(model, prompt, out, steps=EXPLORER_STEPS, seed=0, model_name="shakespeare", **settings)


def _shakespeare(app: Sphinx):
    if getattr(app, "_minigpt_model", None) is None:
        from minigpt.checkpoint import load_model

        app._minigpt_model = load_model("shakespeare")
    return app._minigpt_model


def explorer_node(docname: str) -> nodes.raw:
    depth = docname.count("/")
    src = "../" * depth + f"{EXPLORER_DIR}/{Path(docname).name}.html"
    return nodes.raw(
        "",
        '<div class="minigpt-explorer">\n'
        "<p><strong>The decoding explorer, live.</strong> Here the notebook opens it as a widget; on this page it "
        f"replays {EXPLORER_STEPS} steps sampled from the shipped <code>shakespeare</code> model when the site was "
        "built, with the chapter's prompt and settings. Move the sliders: every probability is recomputed in your "
        "browser, exactly as <code>minigpt.logits.process_logits</code> computes it. "
        f'(<a href="{html.escape(src)}">Open it on its own page</a>.)</p>\n'
        f'<iframe class="minigpt-explorer-frame" src="{html.escape(src)}" title="The decoding explorer on this '
        'chapter\'s example" style="width: 100%; height: 1320px; border: 1px solid #ccc; border-radius: 4px;">'
        "</iframe>\n</div>\n",
        format="html",
    )


# ---------------------------------------------------------------------------------------------------------------
# the "run this chapter" note


def setup_command(readme: Path) -> str:
    """The README's setup command (its first shell block that installs), without the example run at its end."""
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S):
        if "pip install" in block:
            parts = [part for part in block.strip().split(" && ") if not part.startswith("minigpt ")]
            return " && \\\n    ".join(parts)  # one command, on lines a page can show
    raise ExtensionError(f"no setup command (a ```bash block with pip install) in {readme}")


def run_note(app: Sphinx, docname: str) -> nodes.Node:
    setup = setup_command(Path(app.config.minigpt_repo_root) / "README.md")
    ipynb = f"{docname}.ipynb"
    script = Path(app.config.minigpt_repo_root) / f"{docname}.py"
    commands = f"jupyter lab {ipynb}"
    note = nodes.admonition(classes=["tip", "minigpt-run"])
    folder = Path(docname).parent.name
    kind = {"exercises": "these exercises", "solutions": "these solutions"}.get(folder, "this chapter")
    note += nodes.title("", f"Run {kind}")
    intro = nodes.paragraph()
    intro += nodes.Text("On your machine (Python 3.10 or later; a CPU is enough): clone the repository, set up "
                        "once from its root with the README's command, then open this notebook in Jupyter")
    intro += nodes.Text(" or run it as a plain script." if script.exists() else ".")
    note += intro
    note += nodes.literal_block(setup, setup, language="bash")
    if script.exists():
        commands += f"\n# or, as a plain script that prints its results:\npython {docname}.py"
    note += nodes.literal_block(commands, commands, language="bash")
    return note


# ---------------------------------------------------------------------------------------------------------------
# alt text


def readme_alts(readme: Path) -> dict[str, str]:
    """``figures/NAME.png`` -> the README's alt text for it."""
    text = readme.read_text(encoding="utf-8")
    alts = {}
    for tag in re.findall(r"<img\b[^>]*>", text):
        src, alt = re.search(r'src="([^"]+)"', tag), re.search(r'alt="([^"]+)"', tag)
        if src and alt:
            alts[Path(src[1]).stem] = html.unescape(alt[1])
    for alt, src in re.findall(r"!\[([^\]]+)\]\(([^)\s]+)", text):
        alts[Path(src).stem] = alt
    return alts


def _literal(node: ast.AST) -> str | None:
    """A title argument as text: a string, or an f-string with its fields shown as '…'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    return None


def figure_titles(source: str) -> tuple[list[str], list[str]]:
    """The titles a cell gives its figures (``title=``, ``set_title``, ``suptitle``) and the names it saves them as."""
    try:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return [], []
    titles, saved = [], []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("set_title", "suptitle", "title") and node.args:
            titles.append(_literal(node.args[0]))
        titles.extend(_literal(kw.value) for kw in node.keywords if kw.arg in ("title", "after_title"))
        if name == "save_figure" and len(node.args) > 1:
            saved.append(_literal(node.args[1]))
    clean = lambda items: [" ".join(t.split()) for t in items if t and t.strip("… ")]  # noqa: E731
    return clean(titles), clean(saved)


def add_alt_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    alts = readme_alts(Path(app.config.minigpt_repo_root) / "README.md")
    title = next(iter(doctree.findall(nodes.title)), None)
    page = title.astext() if title else docname
    for image in doctree.findall(nodes.image):
        if image.get("alt") and image["alt"] != image.get("uri"):
            continue
        cell = next((n for n in _ancestors(image) if "cell" in n.get("classes", [])), None)
        section = next((n for n in _ancestors(image) if isinstance(n, nodes.section)), None)
        heading = section[0].astext() if section is not None and len(section) else page
        source = cell[0].astext() if cell is not None and "cell_input" in cell[0].get("classes", []) else ""
        titles, saved = figure_titles(source)
        if any(name in alts for name in saved):
            alt = alts[next(name for name in saved if name in alts)]
        elif titles:
            alt = f"Figure ({heading}): " + "; ".join(dict.fromkeys(titles))
        else:
            alt = f"Figure of {page}, {heading}"
        image["alt"] = alt


def _ancestors(node: nodes.Node):
    while node.parent is not None:
        node = node.parent
        yield node


# ---------------------------------------------------------------------------------------------------------------
# the events


def folder_links(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A link to a folder (``[exercises/](exercises/)``) goes to the page build_site.py made for it."""
    import posixpath

    from sphinx.addnodes import pending_xref

    for ref in doctree.findall(pending_xref):
        path, _, anchor = ref.get("reftarget", "").partition("#")
        if ref.get("reftype") != "myst" or ref.get("refdomain") or not path:
            continue
        folder = posixpath.normpath(posixpath.join(posixpath.dirname(docname), path))
        if (Path(app.srcdir) / folder / "index.md").is_file():  # as myst-parser marks a link to a page
            ref["refdomain"], ref["reftarget"], ref["reftargetid"] = "doc", f"{folder}/index", anchor or None


def doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    add_alt_text(app, doctree, docname)
    folder_links(app, doctree, docname)
    if Path(app.env.doc2path(docname)).suffix != ".ipynb":
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None:  # the note goes right under the page's title
        section.insert(1, run_note(app, docname))
    for cell in list(doctree.findall(nodes.container)):
        if "cell" not in cell.get("classes", []) or not len(cell) or explore_call(cell[0].astext()) is None:
            continue
        outputs = [child for child in cell.children if "cell_output" in child.get("classes", [])]
        for output in outputs:
            cell.remove(output)
        cell += explorer_node(docname)
        app.env.minigpt_explorers = getattr(app.env, "minigpt_explorers", set()) | {docname}


def env_purge_doc(app: Sphinx, env, docname: str) -> None:
    getattr(env, "minigpt_explorers", set()).discard(docname)


def env_merge_info(app: Sphinx, env, docnames, other) -> None:
    env.minigpt_explorers = getattr(env, "minigpt_explorers", set()) | getattr(other, "minigpt_explorers", set())


def build_finished(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    for docname in sorted(getattr(app.env, "minigpt_explorers", set())):
        write_explorer(app, docname)
    mathjax = Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent / "static" / "mathjax"
    target = Path(app.outdir) / "_static" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.copytree(mathjax, target, dirs_exist_ok=True, ignore=_other_mathjax_builds)


# MathJax's other combined builds (SVG output, MathML input, ...): tex-chtml.js never loads them (15 of its 24 MB)
OTHER_MATHJAX = {"mml-chtml.js", "mml-svg.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-mml-chtml.js",
                 "tex-mml-svg.js", "tex-svg.js", "tex-svg-full.js", "node-main.js", "svg", "svg.js"}


def _other_mathjax_builds(folder: str, names: list[str]) -> set[str]:
    return OTHER_MATHJAX & set(names) if Path(folder).name in ("mathjax", "output") else set()


def setup(app: Sphinx) -> dict:
    app.add_config_value("minigpt_repo_root", str(Path(__file__).resolve().parents[2]), "env")
    app.connect("doctree-read", doctree_read)
    app.connect("env-purge-doc", env_purge_doc)
    app.connect("env-merge-info", env_merge_info)
    app.connect("build-finished", build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
