"""The explorer's notebook widget: sliders and buttons in the browser, every probability computed in Python.

``minigpt.explore.explore(model, prompt)`` makes one. It lives in its own module because it needs
anywidget, and a script that only decodes should not pay for loading a notebook front end.

>>> from minigpt.model import GPT, GPTConfig
>>> widget = Explorer(GPT(GPTConfig.from_preset("tiny")), "Hello", top_k=5)
>>> widget.view["kept"]
5
"""

from __future__ import annotations

import anywidget
import traitlets

from minigpt.checks import check_int
from minigpt.explore import DEFAULTS, OFF, ROWS, SCRIPT, SETTINGS, Trail, decoding_settings
from minigpt.logits import WatermarkSettings
from minigpt.model import GPT


class Explorer(anywidget.AnyWidget):
    """The explorer widget: sliders and buttons in the browser, every probability computed here.

    Settings are traits (``repetition_penalty``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``seed``)
    that the sliders set and Python code may set too; each change recomputes ``view``, the data the front
    end draws. A bad value is not raised but shown: ``error`` holds the library's message and ``view``
    keeps the last good distribution until the value is fixed. The buttons call ``greedy``, ``sample``,
    ``choose`` (a clicked bar) and ``back`` through widget messages. With a ``watermark`` the view's tokens
    and rows say which are ``green`` and ``view["watermark"]`` holds ``watermark_summary``'s numbers. Use
    ``explore`` to make one.
    """

    _esm = SCRIPT
    repetition_penalty = traitlets.Any(DEFAULTS["repetition_penalty"]).tag(sync=True)
    temperature = traitlets.Any(DEFAULTS["temperature"]).tag(sync=True)
    top_k = traitlets.Any(DEFAULTS["top_k"]).tag(sync=True)
    top_p = traitlets.Any(DEFAULTS["top_p"]).tag(sync=True)
    min_p = traitlets.Any(DEFAULTS["min_p"]).tag(sync=True)
    seed = traitlets.Any(0).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    view = traitlets.Dict().tag(sync=True)

    def __init__(
        self, model: GPT, prompt: str, *, seed: int = 0, rows: int = ROWS,
        watermark: WatermarkSettings | bool | None = None, **settings,
    ) -> None:
        decoding_settings(settings)  # a bad argument raises here, like any library call
        check_int("seed", seed, 0)
        check_int("rows", rows, 1)
        self._trail, self._rows = Trail(model, prompt, seed=seed, watermark=watermark), rows
        start = {name: OFF[name] if settings.get(name, 0) is None else settings.get(name, DEFAULTS[name])
                 for name in SETTINGS}  # None shows on its slider as the off position
        self._started = start  # the front end says where the sliders started, and whether that is generate's
        super().__init__(seed=seed, **start)
        self.on_msg(self._on_message)
        self._refresh()

    def __repr__(self) -> str:  # no memory address, and not the whole view
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in SETTINGS)
        return f"Explorer({self._trail.prompt!r} + {len(self._trail.steps)} tokens, {shown}, seed={self.seed!r})"

    @traitlets.observe(*SETTINGS)
    def _settings_changed(self, change: dict) -> None:
        self._refresh()

    @traitlets.observe("seed")
    def _seed_changed(self, change: dict) -> None:
        if self._attempt(lambda: check_int("seed", change["new"], 0)) and change["new"] != self._trail.seed:
            self._trail.reseed(change["new"])
        self._refresh()

    def _attempt(self, action) -> bool:
        """Run ``action``; a ValueError or TypeError is shown in ``error`` instead of raised."""
        try:
            action()
        except (ValueError, TypeError) as e:
            self.error = str(e)
            return False
        return True

    def _settings(self) -> dict[str, object] | None:
        """The checked settings, or None (with ``error`` set) when one of them, or the seed, is bad."""
        found = {}

        def check() -> None:
            check_int("seed", self.seed, 0)
            found.update(decoding_settings({name: getattr(self, name) for name in SETTINGS}))

        return found if self._attempt(check) else None

    def _refresh(self) -> None:
        if not hasattr(self, "_rows") or (settings := self._settings()) is None:
            return  # still in __init__, or a bad value: keep the last good view, error says what is wrong
        self.error = ""
        trail = self._trail
        tokens, marks = list(trail.steps), {}  # a new list, so traitlets sees the change
        if (summary := trail.summary()) is not None:  # the watermark: each token green or not, detect's numbers
            tokens = [{**token, "green": green} for token, green in zip(tokens, summary.pop("green"))]
            marks["watermark"] = summary
        self.view = {
            **trail.view(settings, self._rows),
            "prompt": trail.prompt,
            "tokens": tokens,
            "seed": trail.seed,
            "draws": trail.draws,
            "started": self._started,
            "defaults": DEFAULTS,
            **marks,
        }

    def _step(self, how: str, token: int | None = None) -> None:
        settings = self._settings()
        if settings is not None and self._attempt(lambda: self._trail.step(settings, how, token)):
            self._refresh()

    def greedy(self) -> None:
        """Append the token greedy decoding takes: the argmax after the repetition penalty."""
        self._step("greedy")

    def sample(self) -> None:
        """Append a token drawn from the processed distribution with the seeded generator (greedy at temperature 0)."""
        self._step("sampled")

    def choose(self, token: int) -> None:
        """Append ``token`` (a clicked bar), whatever its probability, even 0."""
        self._step("clicked", token)

    def back(self) -> None:
        """Remove the last token and show again the distribution it was chosen from.

        Refused, like the other buttons, while a setting is bad: there would be no distribution to show.
        """
        if self._settings() is not None and self._attempt(self._trail.back):
            self.seed = self._trail.seed  # the seed in force before that step
            self._refresh()

    def _on_message(self, widget: Explorer, content: object, buffers: list) -> None:
        """The front end's buttons: {"action": "greedy" | "sample" | "back"} or {"action": "choose", "id": n}."""
        action = content.get("action") if isinstance(content, dict) else None
        if action == "choose":
            self.choose(content.get("id"))
        elif action in ("greedy", "sample", "back"):
            getattr(self, action)()
