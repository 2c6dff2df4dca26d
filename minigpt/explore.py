"""The decoding explorer: move a slider, watch the next-token distribution change, click a token to follow it.

Two front ends share one script, ``assets/explorer.js``:

- ``explore(model, prompt)`` returns a notebook widget (``minigpt.widget.Explorer``, an anywidget). Python
  computes every probability with ``minigpt.logits`` (a ``LogitsSettings`` chain); the browser only draws
  what it is sent (the ``view`` trait).
- ``export_page(model, prompt, path)`` (the ``minigpt explore`` command) samples a few steps and writes one
  self-contained HTML file that replays them. With no Python behind it, the page recomputes the same
  transforms in the same order in JavaScript, from each step's stored raw logits (see ``page_data``).

The controls follow transformers' order: repetition penalty → temperature → top-k → top-p → min-p. Each
transform has an "off" position (``OFF``), as in ``process_logits``: top-k 0, top-p 1, min-p 0, penalty 1.
Temperature 0 is greedy decoding, as in ``generate``: all the probability on the most likely token. The
sliders start where ``minigpt generate`` samples (``DEFAULTS``: temperature 0.8, top-k 50).

With ``watermark=WatermarkSettings(...)`` (or True) the chain ends with the watermark, as ``generate``'s does:
δ is added to the green tokens' logits after temperature and the cuts. The text then tints each generated token
that is green, its legend gives ``minigpt.watermark.detect``'s green count and z-score, and the bars tint the
candidates on the current step's green list (``green_tokens``).

>>> from minigpt.model import GPT, GPTConfig
>>> widget = explore(GPT(GPTConfig.from_preset("tiny")), "Hello", top_k=5)
>>> widget.view["kept"], len(widget.view["rows"])
(5, 20)
>>> widget.temperature = 0
>>> widget.view["kept"], widget.view["entropy"]
(1, 0.0)
>>> widget.temperature = -1.0
>>> widget.error
'temperature must be a finite number >= 0, got -1.0'
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minigpt.checks import check_choice, check_int, check_real, remove_leftovers, temp_beside, write_failure
from minigpt.generate import encode_prompt, eval_mode, make_generator
from minigpt.logits import OFF as LOGITS_OFF
from minigpt.logits import LogitsSettings, WatermarkSettings, greenlist
from minigpt.model import GPT
from minigpt.tokenizer import decode
from minigpt.watermark import detect

if TYPE_CHECKING:
    from minigpt.widget import Explorer

SCRIPT = Path(__file__).resolve().parent / "assets" / "explorer.js"
SETTINGS = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p")  # transformers' order
OFF = {name: LOGITS_OFF[name] for name in SETTINGS if name != "temperature"}  # the value that switches each off
# where the sliders start unless told otherwise: where `minigpt generate` samples (cli._add_generate), so the
# explorer shows the distribution the command draws from
DEFAULTS = {**OFF, "temperature": 0.8, "top_k": 50}
# What each setting accepts besides temperature (whose words are LogitsSettings'): the off value is part of
# the range here, unlike in LogitsSettings, where None is off. explorer.js' hints and messages use the same words.
ALLOWED = {
    "repetition_penalty": ("> 0 (1 = off)", lambda v: v > 0),
    "top_k": ("0 (off) or an integer >= 1", lambda v: isinstance(v, numbers.Integral) and v >= 0),
    "top_p": ("in (0, 1] (1 = off)", lambda v: 0 < v <= 1),
    "min_p": ("in [0, 1] (0 = off)", lambda v: 0 <= v <= 1),
}
ROWS = 20  # tokens drawn as bars; the others make up the "rest of the vocabulary" bar
HOVER_ROWS = 8  # tokens listed when hovering a generated token
PAGE_HEAD = 1000  # tokens per step whose raw logits the page stores exactly
PAGE_BIN = 0.01  # width (in logits) of the histogram bins that stand for the other tokens on the page
# The most a probability (in nats, the entropy) on the page can be off, at PAGE_BIN and any slider position, from
# storing the tokens beyond the head as bins. The footnote says so; browser tests check it (the worst seen: 1e-7
# and 2e-6 with no cut, 1e-5 and 8e-5 when a cut falls among the bins).
PAGE_ERROR = {"probability": 1e-4, "entropy": 1e-3}


def decoding_settings(values: dict[str, object]) -> dict[str, object]:
    """The explorer's five settings as ``process_logits`` keywords, checked in the words of the sliders' hints.

    An "off" value (``OFF``, or None) becomes None; a setting not given takes its ``DEFAULTS`` value.
    Temperature is checked by ``LogitsSettings``, with its messages: 0 is greedy decoding, as in ``generate``.
    The others accept their off value as part of their range (``ALLOWED``), as the sliders do.

    >>> decoding_settings({"temperature": 0.8, "top_k": 0, "top_p": 0.9, "min_p": 0, "repetition_penalty": 1})
    {'repetition_penalty': None, 'temperature': 0.8, 'top_k': None, 'top_p': 0.9, 'min_p': None}
    >>> decoding_settings({"temperature": 0})["temperature"], decoding_settings({})["top_k"]
    (0, 50)
    >>> decoding_settings({"top_k": -3})
    Traceback (most recent call last):
        ...
    ValueError: top_k must be 0 (off) or an integer >= 1, got -3
    """
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise TypeError(f"settings must be among {', '.join(SETTINGS)}, got {unknown[0]!r}")
    kw = {name: values.get(name, DEFAULTS[name]) for name in SETTINGS}
    for name in SETTINGS:  # in the pipeline's order, as explorer.js checks them: the first bad one is named
        if name == "temperature":
            LogitsSettings(temperature=kw[name])
        elif kw[name] is not None:
            allowed, ok = ALLOWED[name]
            check_real(name, kw[name], allowed, ok)
    settings = LogitsSettings.with_off_values(**kw)
    return {name: getattr(settings, name) for name in SETTINGS}


def processed_logits(
    logits: torch.Tensor, ids: list[int], new_tokens: int, settings: dict[str, object]
) -> torch.Tensor:
    """The (1, V) scores a token is drawn from after the context ``ids``: ``logits`` (V,) through ``settings``.

    Temperature 0 is greedy decoding, as ``generate`` does it: only the argmax of the penalised logits stays
    (the lowest id on a tie, as ``torch.argmax``), so all the probability is on the token greedy takes.

    >>> processed_logits(torch.tensor([1.0, 3.0, 3.0]), [0], 1, decoding_settings({"temperature": 0}))
    tensor([[-inf, 3., -inf]])
    """
    context, scores = torch.tensor([ids]), logits.float()[None]  # fp32, as the decoding loop does
    chosen = LogitsSettings(**settings)
    if chosen.temperature == 0:
        penalised = chosen.chain(sample=False)(scores, context, new_tokens=new_tokens)  # what greedy compares
        greedy = penalised.argmax(-1, keepdim=True)
        return torch.full_like(penalised, -math.inf).scatter(-1, greedy, penalised.gather(-1, greedy))
    return chosen.chain(sample=True)(scores, context, new_tokens=new_tokens)


def next_token_view(
    logits: torch.Tensor, ids: list[int], new_tokens: int, settings: dict[str, object], rows: int = ROWS
) -> dict:
    """What the explorer draws for one step: the top ``rows`` tokens raw and processed, the rest, entropy.

    ``logits`` (V,) are the model's raw next-token scores after the context ``ids`` (prompt included, for
    the repetition penalty), of which ``new_tokens`` were generated; ``settings`` are ``process_logits``
    keywords (see ``decoding_settings``). Rows are ordered by the penalised logits, the order the later
    transforms keep tokens in, so kept tokens come first. ``p`` is the processed probability (0 for a
    removed token), ``raw`` the model's own, ``before`` the one after the penalty and temperature but before
    the cuts (top-k, top-p, min-p), which the front end draws greyed for a removed token; ``rest`` sums ``raw``
    and ``p`` over every token not in a row. At temperature 0 (greedy) ``before`` and ``p`` are both all on
    the greedy token: the limit of ever sharper temperatures, where no cut has anything left to remove.
    With ``settings["watermark"]`` (a ``WatermarkSettings``) ``p`` and ``greedy`` include δ, added last as in
    ``generate``, while ``before`` stays without it (δ comes after the cuts); each row says whether it is
    ``green`` (``green_tokens``) and the rows keep the penalised order, the order the cuts keep tokens in.

    >>> settings = decoding_settings({"temperature": 1, "top_k": 2})
    >>> view = next_token_view(torch.tensor([2.0, 1.0, 0.0]), [0], 1, settings, rows=2)
    >>> [(r["id"], round(r["p"], 3), r["kept"]) for r in view["rows"]], view["kept"]
    ([(0, 0.731, True), (1, 0.269, True)], 2)
    """
    context = torch.tensor([ids])
    scores = logits.float()[None]  # (1, V): transforms and softmax in fp32, as the decoding loop does
    watermark = settings.get("watermark")
    plain = LogitsSettings(**{**settings, "watermark": None})
    penalised = plain.chain(sample=False)(scores, context, new_tokens=new_tokens)[0]  # the penalty alone
    processed = processed_logits(logits, ids, new_tokens, settings)[0]
    # before the cuts, so before δ too (it comes after them); but at temperature 0 all on greedy's token, δ and all
    uncut = {"repetition_penalty": settings["repetition_penalty"], "temperature": settings["temperature"],
             "watermark": watermark if settings["temperature"] == 0 else None}
    before = processed_logits(logits, ids, new_tokens, uncut)[0].softmax(-1)
    greedy = {**uncut, "temperature": 0, "watermark": watermark}  # generate's greedy applies δ too
    raw_p, p = scores[0].softmax(-1), processed.softmax(-1)
    top = torch.topk(penalised, min(rows, len(penalised))).indices
    shown = torch.zeros_like(p, dtype=torch.bool)
    shown[top] = True
    nonzero = p[p > 0]
    rows = [{"id": i, "text": decode([i]), "raw": raw_p[i].item(), "before": before[i].item(), "p": p[i].item(),
             "kept": bool(p[i] > 0)} for i in top.tolist()]
    if watermark is not None:
        for row, green in zip(rows, green_tokens(ids, top.tolist(), watermark, len(p))):
            row["green"] = green
    return {
        "rows": rows,
        "rest": {"raw": raw_p[~shown].sum().item(), "p": p[~shown].sum().item(), "count": int((~shown).sum())},
        "entropy": max(0.0, -(nonzero * nonzero.log()).sum().item()),  # nats; -0.0 when one token has it all
        "kept": int(torch.isfinite(processed).sum()),
        "vocab": len(p),
        "greedy": int(processed_logits(logits, ids, new_tokens, greedy)[0].argmax()),  # what greedy decoding takes
        "approx": False,  # the page sets it when its compressed logits make a count approximate
    }


def green_tokens(
    ids: Sequence[int], candidates: Sequence[int], watermark: WatermarkSettings, vocab_size: int
) -> list[bool]:
    """Is each of ``candidates`` on the green list of the step after the context ``ids``? (``greenlist``.)

    lefthash: the list the context seeds; selfhash: the list each candidate seeds with the context, itself
    included (only the 40 most likely can get δ, ``minigpt.logits.SELFHASH_CANDIDATES``; this says which are
    green). A context shorter than ``context_width`` seeds none, as the watermark skips that step.

    >>> green_tokens([3], [0, 1, 2, 3], WatermarkSettings(greenlist_ratio=0.5), vocab_size=4)
    [False, False, True, True]
    """
    if len(ids) < watermark.context_width:
        return [False] * len(candidates)
    if watermark.seeding_scheme == "selfhash":
        return [token in greenlist([*ids, token], watermark, vocab_size).tolist() for token in candidates]
    green = set(greenlist(ids, watermark, vocab_size).tolist())
    return [token in green for token in candidates]


def watermark_summary(prompt_ids: list[int], new_ids: list[int], watermark: WatermarkSettings) -> dict:
    """What the explorer's legend says about the watermark of the generated ``new_ids``: ``detect``'s numbers.

    Only the generated tokens are scored: ``detect`` reads them after the prompt's last ``context_width`` ids
    (lefthash; selfhash counts the token itself, so one fewer). ``green`` has one entry per generated token,
    None for one not scored (a prompt shorter than ``context_width``); the counts and z-score are None while
    no token is scored.

    >>> summary = watermark_summary([464, 3290], [318, 257, 922, 1110], WatermarkSettings())
    >>> summary["green"], summary["num_green"], round(summary["z_score"], 3)
    ([False, True, True, False], 2, 1.155)
    """
    width = watermark.context_width - (watermark.seeding_scheme == "selfhash")
    ids = prompt_ids[max(0, len(prompt_ids) - width) :] + new_ids
    settings = {name: getattr(watermark, name) for name in ("greenlist_ratio", "bias", "seeding_scheme")}
    if len(ids) <= watermark.context_width:  # nothing to score yet
        return {**settings, "green": [None] * len(new_ids), "num_scored": 0, "num_green": None, "z_score": None,
                "p_value": None}
    found = detect(ids, watermark)
    return {**settings, "green": [None] * (len(new_ids) - len(found.green)) + list(found.green),
            "num_scored": found.num_tokens_scored, "num_green": found.num_green_tokens, "z_score": found.z_score,
            "p_value": found.p_value}


class Trail:
    """A context growing one token at a time, with everything needed to step back: the explorer's state.

    Each step keeps the raw next-token logits of its context, so stepping back and moving a slider cost no
    forward pass. Samples come from one generator seeded with ``seed``, drawn as ``generate`` draws them:
    n samples with fixed settings are ``generate``'s n tokens for the same seed and settings. ``watermark``
    (a ``WatermarkSettings``, True for the defaults, or None) joins every step's settings, as in ``generate``.

    >>> from minigpt.model import GPT, GPTConfig
    >>> trail = Trail(GPT(GPTConfig.from_preset("tiny")), "Hello", seed=0)
    >>> trail.step(decoding_settings({}), "clicked", token=11)
    11
    >>> trail.ids[-1], trail.steps[-1]["how"]
    (11, 'clicked')
    >>> trail.back(); trail.ids == encode_prompt("Hello")
    True
    """

    def __init__(self, model: GPT, prompt: str, *, seed: int = 0, watermark: WatermarkSettings | bool | None = None
                 ) -> None:
        if not isinstance(model, GPT):
            raise TypeError(f"model must be a minigpt GPT, got {type(model).__name__}")
        self.model, self.prompt = model, prompt
        self.watermark = LogitsSettings(watermark=watermark).watermark  # checked; True becomes the defaults
        self.ids = encode_prompt(prompt)
        self.reseed(seed)
        self.steps: list[dict] = []  # one per generated token: id, text, p, how, dist
        self._saved: list[tuple[torch.Tensor, int, int]] = []  # generator state, seed, draws before each step
        self.logits = [self._forward()]  # raw next-token logits (V,) after each context length

    def reseed(self, seed: int) -> None:
        """Draw from ``seed`` afresh from now on; the draw counter restarts at 0."""
        self.generator = make_generator(seed, None, torch.device("cpu"))
        self.seed, self.draws = seed, 0

    @torch.inference_mode()
    def _forward(self) -> torch.Tensor:
        block = self.model.config.block_size  # a longer context slides: the model sees its last block_size tokens
        device = self.model.transformer.wte.weight.device
        with eval_mode(self.model):
            logits = self.model(torch.tensor([self.ids[-block:]], device=device), last_only=True)
        return logits[0, -1].float().cpu()

    def view(self, settings: dict[str, object], rows: int = ROWS) -> dict:
        """``next_token_view`` of the current context (with the watermark, if any)."""
        return next_token_view(self.logits[-1], self.ids, len(self.steps), {**settings, "watermark": self.watermark},
                               rows)

    def summary(self) -> dict | None:
        """``watermark_summary`` of the tokens generated so far, or None without a watermark."""
        if self.watermark is None:
            return None
        prompt = self.ids[: len(self.ids) - len(self.steps)]
        return watermark_summary(prompt, [step["id"] for step in self.steps], self.watermark)

    def step(self, settings: dict[str, object], how: str, token: int | None = None) -> int:
        """Append one token and return it: ``how`` is "greedy", "sampled" (a seeded draw) or "clicked" (``token``).

        The step records the token's processed probability and the distribution it came from. At temperature
        0 "sampled" is greedy, as in ``generate``: nothing is drawn, the generator is left as it was.
        """
        check_choice("how", how, ("greedy", "sampled", "clicked"))
        settings = {**settings, "watermark": self.watermark}
        processed = processed_logits(self.logits[-1], self.ids, len(self.steps), settings)
        probs = processed.softmax(-1)  # (1, V), what generate samples from
        saved = (self.generator.get_state(), self.seed, self.draws)
        if how == "sampled" and settings["temperature"] == 0:
            how = "greedy"
        if how == "greedy":  # generate's greedy: the argmax of the penalised logits, the one token left at T = 0
            greedy = {"repetition_penalty": settings["repetition_penalty"], "temperature": 0,
                      "watermark": self.watermark}
            token = int(processed_logits(self.logits[-1], self.ids, len(self.steps), greedy).argmax())
        elif how == "sampled":
            token = int(torch.multinomial(probs, 1, generator=self.generator))
            self.draws += 1
        check_int("token", token, 0, high=probs.size(-1) - 1)
        top = torch.topk(probs[0], HOVER_ROWS)
        self._saved.append(saved)
        self.ids.append(token)
        self.steps.append({
            "id": token,
            "text": decode([token]),
            "p": probs[0, token].item(),
            "how": f"sampled (seed {self.seed}, draw {self.draws})" if how == "sampled" else how,
            "dist": [[decode([i]), q] for i, q in zip(top.indices.tolist(), top.values.tolist()) if q > 0],
        })
        self.logits.append(self._forward())
        return token

    def back(self) -> None:
        """Undo the last ``step``: the context, its logits and the generator as they were before it."""
        if not self.steps:
            raise ValueError("back needs a generated token to remove, got only the prompt")
        state, self.seed, self.draws = self._saved.pop()
        self.generator.set_state(state)
        self.ids.pop(), self.steps.pop(), self.logits.pop()


def explore(
    model: GPT, prompt: str, *, seed: int = 0, rows: int = ROWS, watermark: WatermarkSettings | bool | None = None,
    **settings,
) -> Explorer:
    """Open the decoding explorer on ``prompt``: the next-token distribution, raw and processed, as bars.

    ``settings`` are the sliders' starting values: ``repetition_penalty``, ``temperature``, ``top_k``,
    ``top_p``, ``min_p`` (0, 1 or None switch a transform off, see ``OFF``; temperature 0 is greedy); those
    not given start where ``minigpt generate`` samples, temperature 0.8 and top-k 50 (``DEFAULTS``), and the
    widget says so. ``seed`` seeds the Sample button; ``rows`` is how many tokens get a bar. ``watermark``
    (a ``WatermarkSettings``, or True for the defaults) ends the chain with the watermark, as in ``generate``,
    and tints the green tokens. Bad arguments raise here; bad values typed into the widget later are shown in it
    instead.

    >>> from minigpt.model import GPT, GPTConfig
    >>> widget = explore(GPT(GPTConfig.from_preset("tiny")), "Hello", top_p=0.9)
    >>> widget.temperature, widget.top_k, widget.top_p
    (0.8, 50, 0.9)
    >>> widget.greedy(); widget.sample(); [t["how"] for t in widget.view["tokens"]]
    ['greedy', 'sampled (seed 0, draw 1)']
    >>> widget.back(); [t["how"] for t in widget.view["tokens"]]
    ['greedy']
    """
    from minigpt.widget import Explorer  # here, not at the top: anywidget loads only when a widget is made

    return Explorer(model, prompt, seed=seed, rows=rows, watermark=watermark, **settings)


def page_data(
    model: GPT,
    prompt: str,
    *,
    steps: int = 20,
    seed: int = 0,
    model_name: str = "",
    head: int = PAGE_HEAD,
    bin_width: float = PAGE_BIN,
    watermark: WatermarkSettings | bool | None = None,
    **settings,
) -> dict:
    """Sample ``steps`` tokens after ``prompt`` and return what the page needs to replay them, as JSON.

    ``settings`` are those of ``decoding_settings`` (``DEFAULTS`` where not given; temperature 0 takes the
    greedy tokens). Per step the page stores the raw logits of the ``head`` most likely tokens and of every token in the
    text (the repetition penalty changes those) exactly, as float32. The other ~49,000 tokens are a
    histogram: bins ``bin_width`` wide, each with its count and the log-mean-exp of its logits, so the
    rest-of-vocabulary mass is exact at temperature 1 and off by a second-order term at temperature T (at
    most about |1/T (1/T - 1)| bin_width² / 8 of it, relative). A top-k, top-p or min-p cut that falls
    among those tokens is placed to within a bin; the page then marks the kept count as approximate.

    With a ``watermark`` (lefthash only: ``check_page_watermark``) the replay samples with it, as ``generate``
    does, and each step also stores which of its tokens are green: one flag per stored token and per bin, the
    green and the other tokens binned apart, so that δ, added after the cuts, shifts whole bins exactly and
    the bound above still holds. The head then also holds the ``head`` tokens most likely after δ (greedy
    decoding's token at temperature 0 is one of them). ``watermark`` gives its settings and
    ``watermark_summary`` of the replay's tokens; each token says whether it is ``green``.

    >>> from minigpt.model import GPT, GPTConfig
    >>> data = page_data(GPT(GPTConfig.from_preset("tiny")), "Hello", steps=2, top_k=50)
    >>> len(data["steps"]), len(data["tokens"]), data["settings"]["top_k"]
    (2, 2, 50)
    """
    check_int("steps", steps, 1, high=model.config.block_size - 1)
    check_int("seed", seed, 0)
    check_int("head", head, 1)
    check_real("bin_width", bin_width, "a finite number > 0", lambda v: 0 < v < math.inf)
    library = decoding_settings(settings)
    watermark = check_page_watermark(watermark)
    trail = Trail(model, prompt, seed=seed, watermark=watermark)
    for _ in range(steps):
        trail.step(library, "sampled")
    in_text = torch.tensor(sorted(set(trail.ids)))
    prompt_ids = trail.ids[: len(trail.ids) - steps]
    stored = []
    for i, logits in enumerate(trail.logits[:-1]):
        green = None
        if watermark is not None:  # (V,) bool: the green list this step's context seeds
            green = torch.tensor(green_tokens(trail.ids[: len(prompt_ids) + i], range(len(logits)), watermark,
                                              len(logits)))
        stored.append(_compress(logits, in_text, head, bin_width, green, watermark.bias if watermark else 0.0))
    texts = {i: decode([i]) for step in stored for i in step.pop("id_list")}
    tokens = [{"id": s["id"], "p": s["p"]} for s in trail.steps]
    marks = {}
    if watermark is not None:
        summary = trail.summary()
        for token, green in zip(tokens, summary["green"]):
            token["green"] = green
        marks["watermark"] = {**{k: v for k, v in summary.items() if k != "green"},
                              "hashing_key": watermark.hashing_key, "context_width": watermark.context_width}
    return {
        "model": model_name,
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "tokens": tokens,
        **marks,
        "texts": texts,
        "settings": {name: OFF[name] if library[name] is None else library[name] for name in SETTINGS},
        "defaults": DEFAULTS,  # minigpt generate's, which the page names when the replay's settings differ
        # the footnote's bound on what the bins change; the error grows with the square of the bins' width
        "max_error": {name: bound * max(1.0, (bin_width / PAGE_BIN) ** 2) for name, bound in PAGE_ERROR.items()},
        "seed": seed,
        "vocab": len(trail.logits[0]),
        "head": head,
        "bin_width": bin_width,
        "steps": stored,
    }


def check_page_watermark(watermark: WatermarkSettings | bool | None) -> WatermarkSettings | None:
    """``watermark`` checked for the exported page, as a ``WatermarkSettings`` (or None): lefthash only.

    >>> check_page_watermark(WatermarkSettings(seeding_scheme="selfhash"))
    Traceback (most recent call last):
        ...
    ValueError: watermark must use seeding_scheme='lefthash' on the exported page, got 'selfhash': ...
    """
    watermark = LogitsSettings(watermark=watermark).watermark  # checked; True becomes the defaults
    if watermark is not None and watermark.seeding_scheme != "lefthash":
        raise ValueError(
            f"watermark must use seeding_scheme='lefthash' on the exported page, got {watermark.seeding_scheme!r}: "
            "selfhash's green tokens are the candidates among the 40 most likely that each seed a green list "
            "holding themselves, which the page would have to recompute at every slider position; the notebook "
            "widget (explore) shows selfhash exactly"
        )
    return watermark


def _compress(
    logits: torch.Tensor, in_text: torch.Tensor, head: int, bin_width: float, green: torch.Tensor | None, bias: float
) -> dict:
    """One step's raw logits (V,) for the page: the head exactly, the tail as a log-mean-exp histogram.

    With ``green`` (V,) bool, the green list, the head also holds the ``head`` largest logits + ``bias`` on
    green tokens, green and other tokens are binned apart, and ``green`` flags each stored token, then each bin.
    """
    keep = torch.zeros(len(logits), dtype=torch.bool)
    keep[torch.topk(logits, min(head, len(logits))).indices] = True
    if green is not None:  # greedy decoding's token is the argmax after δ
        keep[torch.topk(logits + bias * green, min(head, len(logits))).indices] = True
    keep[in_text] = True
    ids = keep.nonzero().squeeze(1)
    tail = logits[~keep].double()
    counts = values = bin_green = torch.zeros(0)
    if len(tail):
        top = tail.max()
        index = ((top - tail) / bin_width).floor().long()  # bin 0 holds the largest tail logits
        if green is not None:
            index = 2 * index + green[~keep]  # each bin split in two: its other tokens, its green ones
        bins, inverse, counts = torch.unique(index, return_inverse=True, return_counts=True)
        sums = torch.zeros(len(bins), dtype=torch.float64).index_add_(0, inverse, (tail - top).exp())
        values = (top + (sums / counts).log()).float()  # log-mean-exp: n * exp(value) is the bin's exact mass
        bin_green = bins % 2
    compressed = {
        "id_list": ids.tolist(),
        "ids": _b64(ids.int()),
        "logits": _b64(logits[ids].float()),
        "values": _b64(values.float()),
        "counts": _b64(counts.int()),
    }
    if green is not None:
        compressed["green"] = _b64(torch.cat([green[ids], bin_green.bool()]).to(torch.uint8))  # a byte per flag
    return compressed


def _b64(tensor: torch.Tensor) -> str:
    """A float32, int32 or uint8 tensor as little-endian bytes in base64 (the page reads them into a typed array)."""
    array = tensor.contiguous().numpy()
    return base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode()


def page_html(data: dict) -> str:
    """The self-contained page: ``explorer.js`` and the replay's data inline, nothing fetched.

    >>> page = page_html({"prompt": "Hi"})
    >>> page.startswith("<!doctype html>") and "http" not in page.split("<script")[0]
    True
    """
    script = SCRIPT.read_text()
    if "</script" in script.lower():
        raise ValueError(f"{SCRIPT.name} must not contain '</script' (it is inlined into the page)")
    # "<" escaped inside the JSON, so a token such as "</" cannot end the script element early
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    title = html.escape(f"minigpt decoding explorer: {data.get('prompt', '')}")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n</head>\n<body>\n"
        "<div id=\"minigpt-explorer\"></div>\n"
        f"<script type=\"application/json\" id=\"minigpt-explorer-data\">{payload}</script>\n"
        f"<script type=\"module\">\n{script}\n"
        "mountPage(document.getElementById(\"minigpt-explorer\"), "
        "JSON.parse(document.getElementById(\"minigpt-explorer-data\").textContent));\n"
        "</script>\n</body>\n</html>\n"
    )


def check_page_path(path: str | Path) -> Path:
    """``path`` as a Path, if a page can be written there: in an existing folder, not a folder itself.

    >>> check_page_path("no/such/folder/page.html")
    Traceback (most recent call last):
        ...
    FileNotFoundError: path must be a file in an existing folder, got 'no/such/folder/page.html'
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir() or path.is_dir():
        raise FileNotFoundError(f"path must be a file in an existing folder, got {str(path)!r}")
    return path


def export_page(model: GPT, prompt: str, path: str | Path, **options) -> Path:
    """Write the replay page of ``page_data(model, prompt, **options)`` to ``path``; return the path.

    The page is written beside ``path`` under a temporary name and renamed over it, so ``path`` holds the
    old page or the whole new one, never a truncated one (a full disk is an ``OSError`` of one sentence).
    Where ``path`` is a symlink, the link is replaced and the file it points to is left untouched.

    >>> import tempfile
    >>> from minigpt.model import GPT, GPTConfig
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = export_page(GPT(GPTConfig.from_preset("tiny")), "Hello", Path(folder) / "x.html", steps=2)
    ...     out.read_text().count("<script")
    2
    """
    path = check_page_path(path)
    page = page_html(page_data(model, prompt, **options))
    remove_leftovers(path, "partial")
    staging = temp_beside(path, "partial")
    try:
        with staging.open("x", encoding="utf-8") as f:  # "x": a new file, never one planted at that name
            f.write(page)
        os.replace(staging, path)  # replaces a symlink itself; the file it pointed to stays as it was
    except BaseException as e:
        staging.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(write_failure(f"path={str(path)!r}", e)) from e
        raise
    return path
