"""The decoding explorer: the widget's data is process_logits' output, its buttons and errors, the page, the command."""

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt.checkpoint import load_model, save_checkpoint
from minigpt.cli import build_parser, main
from minigpt.explore import (
    ALLOWED,
    DEFAULTS,
    SCRIPT,
    Trail,
    check_page_watermark,
    decoding_settings,
    explore,
    next_token_view,
    page_data,
    page_html,
)
from minigpt.generate import generate
from minigpt.logits import WatermarkSettings, greenlist, process_logits
from minigpt.tokenizer import decode, encode
from minigpt.watermark import detect
from minigpt.widget import Explorer

PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def shakespeare():
    return load_model("shakespeare")


def expected_view(model, ids: list[int], settings: dict, rows: int = 20) -> dict:
    """What the widget must send, computed here from a fresh forward pass and process_logits."""
    with torch.inference_mode():
        logits = model.eval()(torch.tensor([ids]))[:, -1].float()  # (1, V)
    kw = decoding_settings(settings)
    context = torch.tensor([ids])
    p = process_logits(logits, context, new_tokens=0, do_sample=True, **kw).softmax(-1)[0]
    penalised = process_logits(logits, context, new_tokens=0, do_sample=False,
                               repetition_penalty=kw["repetition_penalty"])[0]
    uncut = {name: kw[name] for name in ("repetition_penalty", "temperature")}
    before = process_logits(logits, context, new_tokens=0, do_sample=True, **uncut).softmax(-1)[0]
    top = torch.topk(penalised, rows).indices
    rest = torch.ones_like(p, dtype=torch.bool)
    rest[top] = False
    return {"ids": top.tolist(), "p": p[top], "raw": logits[0].softmax(-1)[top], "before": before[top],
            "rest": p[rest].sum().item(),
            "kept": int((p > 0).sum())}


def assert_view_is(view: dict, expected: dict) -> None:
    assert [row["id"] for row in view["rows"]] == expected["ids"]
    assert torch.allclose(torch.tensor([row["p"] for row in view["rows"]]).double(), expected["p"].double(), atol=1e-6)
    assert torch.allclose(torch.tensor([row["raw"] for row in view["rows"]]).double(), expected["raw"].double(), atol=1e-6)
    assert [row["kept"] for row in view["rows"]] == (expected["p"] > 0).tolist()
    assert torch.allclose(torch.tensor([row["before"] for row in view["rows"]]).double(), expected["before"].double(), atol=1e-6)
    assert view["rest"]["p"] == pytest.approx(expected["rest"], abs=1e-6)
    assert view["kept"] == expected["kept"]


@pytest.mark.parametrize(
    "name, value",
    [("temperature", 1.6), ("temperature", 0.3), ("top_k", 7), ("top_p", 0.5), ("min_p", 0.2),
     ("repetition_penalty", 3.0)],
)
def test_each_control_sends_process_logits_output(shakespeare, name, value):
    widget = explore(shakespeare, "ROMEO:\nI will go, and ROMEO", temperature=0.9)
    before = widget.view
    setattr(widget, name, value)  # what a slider does: set the trait
    assert widget.error == "" and widget.view != before
    assert_view_is(widget.view, expected_view(shakespeare, widget._trail.ids, {**DEFAULTS, "temperature": 0.9,
                                                                                name: value}))


def test_all_controls_together_and_switched_off(shakespeare):
    settings = dict(repetition_penalty=1.3, temperature=0.7, top_k=40, top_p=0.8, min_p=0.05)
    widget = explore(shakespeare, PROMPT, **settings)
    assert_view_is(widget.view, expected_view(shakespeare, encode(PROMPT), settings))
    for name, off in [("top_k", 0), ("top_p", 1.0), ("min_p", 0.0), ("repetition_penalty", 1.0)]:
        setattr(widget, name, off)
        settings[name] = off
        assert_view_is(widget.view, expected_view(shakespeare, encode(PROMPT), settings))
    assert widget.view["kept"] == 50257  # temperature alone removes nothing
    assert widget.view["entropy"] > 0 and widget.view["rows"][0]["id"] == widget.view["greedy"]


def test_clicking_a_token_appends_it(shakespeare):
    widget = explore(shakespeare, PROMPT, top_k=5)
    clicked = widget.view["rows"][3]["id"]
    widget._handle_custom_msg({"action": "choose", "id": clicked}, [])  # what a click on the 4th bar sends
    token = widget.view["tokens"][-1]
    assert token["id"] == clicked and token["text"] == decode([clicked]) and token["how"] == "clicked"
    assert token["p"] == pytest.approx(expected_view(shakespeare, encode(PROMPT), {"top_k": 5})["p"][3].item())
    assert [text for text, _ in token["dist"]][:5] == [row["text"] for row in explore(shakespeare, PROMPT).view["rows"][:5]]
    assert_view_is(widget.view, expected_view(shakespeare, encode(PROMPT) + [clicked], {"top_k": 5}))
    removed = widget.view["rows"][-1]["id"]  # a greyed-out token can be followed too: its probability was 0
    widget.choose(removed)
    assert widget.view["tokens"][-1]["p"] == 0 and widget._trail.ids[-1] == removed


def test_back_restores_the_previous_state(shakespeare):
    widget = explore(shakespeare, PROMPT, temperature=1.2, seed=3)
    start = widget.view
    widget.sample()
    first = widget.view
    widget._handle_custom_msg({"action": "greedy"}, [])
    widget.choose(11)
    widget._handle_custom_msg({"action": "back"}, [])
    widget.back()
    assert widget.view == first
    widget.back()
    assert widget.view == start and widget._trail.ids == encode(PROMPT)
    widget.sample()  # the generator went back too: the same draw again
    assert widget.view == first


def test_sample_and_greedy_buttons_decode_as_generate(shakespeare):
    settings = dict(temperature=0.9, top_k=50, top_p=0.95, repetition_penalty=1.2)
    widget = explore(shakespeare, PROMPT, seed=5, **settings)
    for _ in range(6):
        widget.sample()
    sampled = generate(shakespeare, PROMPT, max_new_tokens=6, do_sample=True, seed=5, **settings)
    assert [t["id"] for t in widget.view["tokens"]] == sampled.new_tokens[0]
    assert widget.view["tokens"][-1]["how"] == "sampled (seed 5, draw 6)"
    widget = explore(shakespeare, PROMPT, repetition_penalty=1.2)
    for _ in range(6):
        widget.greedy()
    greedy = generate(shakespeare, PROMPT, max_new_tokens=6, repetition_penalty=1.2)
    assert [t["id"] for t in widget.view["tokens"]] == greedy.new_tokens[0]


def test_a_new_seed_restarts_the_draws(shakespeare):
    widget = explore(shakespeare, PROMPT, seed=0)
    widget.sample()
    widget.seed = 1  # what the seed box sets
    widget.sample()
    assert widget.view["seed"] == 1 and widget.view["draws"] == 1
    assert widget.view["tokens"][-1]["how"] == "sampled (seed 1, draw 1)"
    widget.back()  # back to just before that draw: seed 1, nothing drawn from it yet
    assert widget.seed == 1 and widget.view["draws"] == 0
    widget.sample()
    assert widget.view["tokens"][-1]["how"] == "sampled (seed 1, draw 1)"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("temperature", -1.0, "temperature must be a finite number >= 0, got -1.0"),
        ("temperature", float("inf"), "temperature must be a finite number >= 0, got inf"),
        ("temperature", "", "temperature must be a finite number >= 0, got ''"),
        ("temperature", 5e-05, "temperature must be 0 (greedy decoding) or at least 0.0001 (below it, logits / "
                               "temperature can overflow float32, and sampling is greedy decoding anyway), got 5e-05"),
        ("top_k", -3, "top_k must be 0 (off) or an integer >= 1, got -3"),
        ("top_k", 2.5, "top_k must be 0 (off) or an integer >= 1, got 2.5"),
        ("top_p", 1.5, "top_p must be in (0, 1] (1 = off), got 1.5"),
        ("top_p", 0, "top_p must be in (0, 1] (1 = off), got 0"),
        ("min_p", -0.1, "min_p must be in [0, 1] (0 = off), got -0.1"),
        ("min_p", 1.5, "min_p must be in [0, 1] (0 = off), got 1.5"),
        ("repetition_penalty", 0, "repetition_penalty must be > 0 (1 = off), got 0"),
        ("seed", -1, "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_values_are_shown_in_the_widget_not_raised(shakespeare, name, value, message):
    widget = explore(shakespeare, PROMPT, top_k=10)
    good = widget.view
    setattr(widget, name, value)  # no exception: nothing reaches the notebook's output area
    assert widget.error == message
    if name != "seed":  # the same message the library gives for the same value
        with pytest.raises((ValueError, TypeError), match=re.escape(message)):
            decoding_settings({name: value})
    assert widget.view == good  # the last good distribution stays (the front end greys it)
    widget.greedy(), widget.sample(), widget.choose(5)  # refused while a value is bad
    assert widget.view["tokens"] == [] and widget.error == message
    setattr(widget, name, DEFAULTS.get(name, 0))
    assert widget.error == "" and widget.view["tokens"] == []
    widget.choose(5)
    setattr(widget, name, value)
    widget.back()  # refused too: the view would have no distribution to show
    assert widget.error == message and len(widget._trail.steps) == 1


def test_temperature_zero_is_greedy_as_in_generate(shakespeare):
    """The widget, the view and the Sample button at T = 0: all the mass on generate(temperature=0)'s token."""
    widget = explore(shakespeare, PROMPT, temperature=0, repetition_penalty=1.3, top_p=0.5, seed=4)
    greedy = generate(shakespeare, PROMPT, max_new_tokens=6, temperature=0, repetition_penalty=1.3).new_tokens[0]
    view = widget.view
    assert widget.error == "" and view["greedy"] == greedy[0] == view["rows"][0]["id"]
    assert [(r["p"], r["before"], r["kept"]) for r in view["rows"]] == [(1.0, 1.0, True)] + [(0.0, 0.0, False)] * 19
    assert view["rest"]["p"] == 0 and view["kept"] == 1 and view["entropy"] == 0.0
    assert view["rows"][0]["raw"] < 1  # the raw column still shows the model's own probabilities
    for _ in range(6):
        widget.sample()  # as generate: temperature 0 overrides sampling, and nothing is drawn
    assert [t["id"] for t in widget.view["tokens"]] == greedy
    assert {t["how"] for t in widget.view["tokens"]} == {"greedy"} and widget.view["draws"] == 0
    assert all(t["p"] == 1.0 and t["dist"] == [[t["text"], 1.0]] for t in widget.view["tokens"])
    widget.temperature = 0.7  # and back to a distribution: the generator was never touched
    widget.sample()
    assert widget.view["tokens"][-1]["how"] == "sampled (seed 4, draw 1)"


def test_temperature_zero_breaks_ties_as_argmax():
    """Two tokens tied for the largest logit: greedy (generate's argmax) takes the lower id, and so does the view."""
    logits = torch.tensor([0.5, 2.0, -1.0, 2.0, 1.0])
    view = next_token_view(logits, [4], 0, decoding_settings({"temperature": 0, "top_k": 0}), rows=3)
    assert int(logits.argmax()) == 1 and view["greedy"] == 1
    assert {r["id"]: r["p"] for r in view["rows"]} == {1: 1.0, 3: 0.0, 4: 0.0}
    logits = torch.tensor([0.5, 2.0, -1.0, 4.0, 1.0])  # the penalty 2 brings token 3 down to 2.0: a tie again
    penalised = next_token_view(logits, [3], 0, decoding_settings({"temperature": 0, "repetition_penalty": 2}), rows=2)
    assert penalised["greedy"] == 1 and {r["id"]: r["p"] for r in penalised["rows"]} == {1: 1.0, 3: 0.0}


def test_temperature_zero_replays_greedy_decoding_on_the_page(shakespeare):
    data = page_data(shakespeare, PROMPT, steps=3, temperature=0)
    assert [t["id"] for t in data["tokens"]] == generate(shakespeare, PROMPT, max_new_tokens=3).new_tokens[0]
    assert [t["p"] for t in data["tokens"]] == [1.0, 1.0, 1.0] and data["settings"]["temperature"] == 0


def test_defaults_are_minigpt_generates(tiny_model):
    """The sliders start where `minigpt generate` samples, the widget says so, and so do explore's flags."""
    generate_flags = build_parser("generate").parse_args(["generate", "Hi"])
    assert (generate_flags.temperature, generate_flags.top_k) == (DEFAULTS["temperature"], DEFAULTS["top_k"]) == (0.8, 50)
    explore_flags = build_parser("explore").parse_args(["explore", "Hi", "--out", "x.html"])
    assert {name: getattr(explore_flags, name) for name in DEFAULTS} == {
        "repetition_penalty": None, "temperature": 0.8, "top_k": 50, "top_p": None, "min_p": None}
    widget = explore(tiny_model, PROMPT)
    assert {name: getattr(widget, name) for name in DEFAULTS} == DEFAULTS
    assert widget.view["started"] == widget.view["defaults"] == DEFAULTS
    widget = explore(tiny_model, PROMPT, temperature=1.5, top_k=None)
    assert widget.view["started"] == {**DEFAULTS, "temperature": 1.5, "top_k": 0}
    assert decoding_settings({}) == {"repetition_penalty": None, "temperature": 0.8, "top_k": 50, "top_p": None,
                                     "min_p": None}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_messages_use_the_words_of_the_hints(name):
    """Each setting's message says what ALLOWED says, which explorer.js shows as the slider's hint."""
    allowed, _ = ALLOWED[name]
    with pytest.raises(ValueError) as refused:
        decoding_settings({name: -5})
    assert str(refused.value) == f"{name} must be {allowed}, got -5"
    assert f'allowed: "{allowed}"' in SCRIPT.read_text()  # the same words in the page's and widget's hint
    decoding_settings({name: OFF_VALUES[name]})  # the off value the hint names is accepted


OFF_VALUES = {"repetition_penalty": 1, "top_k": 0, "top_p": 1, "min_p": 0}


def test_bad_clicks_and_messages_are_shown(shakespeare):
    widget = explore(shakespeare, PROMPT)
    widget.back()
    assert widget.error == "back needs a generated token to remove, got only the prompt"
    widget._handle_custom_msg({"action": "choose", "id": "x"}, [])
    assert widget.error == "token must be an integer between 0 and 50256, got 'x'"
    widget._handle_custom_msg({"action": "choose", "id": 50257}, [])
    assert widget.error == "token must be an integer between 0 and 50256, got 50257"
    widget._handle_custom_msg({"action": "explode"}, [])  # unknown messages are ignored
    widget.temperature = 0.5
    assert widget.error == "" and widget.view["tokens"] == []


def test_bad_arguments_raise_when_the_widget_is_made(tiny_model):
    with pytest.raises(ValueError, match=re.escape("top_p must be in (0, 1] (1 = off), got 1.5")):
        explore(tiny_model, PROMPT, top_p=1.5)
    with pytest.raises(TypeError, match="settings must be among"):
        explore(tiny_model, PROMPT, top_n=3)
    with pytest.raises(ValueError, match="prompt must contain at least one token"):
        explore(tiny_model, "")
    with pytest.raises(TypeError, match="model must be a minigpt GPT, got str"):
        explore("shakespeare", PROMPT)


def test_widget_basics(tiny_model):
    widget = minigpt.explore(tiny_model, PROMPT, top_p=None, rows=5)
    assert isinstance(widget, Explorer) and widget.top_p == 1.0 and len(widget.view["rows"]) == 5
    assert repr(widget) == ("Explorer('ROMEO:' + 0 tokens, repetition_penalty=1.0, temperature=0.8, top_k=50, "
                            "top_p=1.0, min_p=0.0, seed=0)")
    assert widget._esm == SCRIPT.read_text()  # the front end is the shared script


def test_page_is_one_self_contained_file_with_the_shared_script(tiny_model, tmp_path):
    out = tmp_path / "page.html"
    assert main(["explore", "Hi </script> there", "--out", str(out), "--steps", "3",
                 "--model", str(save_checkpoint(tiny_model, tmp_path / "tiny"))]) == 0
    page = out.read_text()
    assert SCRIPT.read_text() in page  # the widget's module, verbatim
    assert page.count("<script") == 2 and page.lower().count("</script") == 2  # the prompt's "</script>" escaped
    assert not re.search(r"https?://|\bsrc=|<link|@import|fetch\(", page)  # nothing from the network


def test_page_data_stores_each_step_exactly_enough(shakespeare):
    data = page_data(shakespeare, PROMPT, steps=4, seed=2, repetition_penalty=1.3)  # at minigpt generate's defaults
    sampled = generate(shakespeare, PROMPT, max_new_tokens=4, do_sample=True, seed=2, temperature=0.8, top_k=50,
                       repetition_penalty=1.3)
    assert [t["id"] for t in data["tokens"]] == sampled.new_tokens[0]
    assert data["settings"] == {"repetition_penalty": 1.3, "temperature": 0.8, "top_k": 50, "top_p": 1.0, "min_p": 0.0}
    assert data["defaults"] == DEFAULTS and data["max_error"] == {"probability": 1e-4, "entropy": 1e-3}
    text_ids = set(data["prompt_ids"]) | {t["id"] for t in data["tokens"]}
    trail = Trail(shakespeare, PROMPT)  # the same contexts again, for each step's full logits
    for token in data["tokens"]:
        trail.step(decoding_settings({}), "clicked", token["id"])
    for i, step in enumerate(data["steps"]):
        ids = np.frombuffer(base64.b64decode(step["ids"]), "<i4")
        logits = np.frombuffer(base64.b64decode(step["logits"]), "<f4").astype(np.float64)
        values = np.frombuffer(base64.b64decode(step["values"]), "<f4").astype(np.float64)
        counts = np.frombuffer(base64.b64decode(step["counts"]), "<i4")
        full = trail.logits[i]
        assert text_ids <= set(ids.tolist()) and len(ids) >= 1000 and len(ids) + counts.sum() == 50257
        assert np.array_equal(logits, full[torch.from_numpy(ids.astype(np.int64))].double().numpy())  # exact
        assert logits[np.argsort(-logits)][999] >= values.max()  # the bins hold only tokens below the top 1,000
        # the rest-of-vocabulary mass at temperature 1 is exact: same log-sum-exp as the full logits
        lse = np.logaddexp.reduce(np.concatenate([logits, values + np.log(counts)]))
        assert lse == pytest.approx(torch.logsumexp(full.double(), 0).item(), abs=1e-6)
        assert all(decode([int(j)]) == data["texts"][int(j)] for j in ids[:50])


WATERMARK = WatermarkSettings(bias=2.5, greenlist_ratio=0.3, hashing_key=7)
SELFHASH_REFUSED = (
    "watermark must use seeding_scheme='lefthash' on the exported page, got 'selfhash': selfhash's green tokens are "
    "the candidates among the 40 most likely that each seed a green list holding themselves, which the page would "
    "have to recompute at every slider position; the notebook widget (explore) shows selfhash exactly"
)


def _green(ids: list[int], watermark: WatermarkSettings = WATERMARK) -> set[int]:
    return set(greenlist(ids, watermark).tolist())


def test_the_widget_tints_exactly_the_green_tokens(shakespeare):
    widget = explore(shakespeare, PROMPT, seed=3, watermark=WATERMARK, top_p=0.95)
    prompt = encode(PROMPT)
    for _ in range(5):
        widget.sample()
    ids = prompt + [t["id"] for t in widget.view["tokens"]]
    green = _green(ids)  # the next step's green list
    assert [row["green"] for row in widget.view["rows"]] == [row["id"] in green for row in widget.view["rows"]]
    assert any(row["green"] for row in widget.view["rows"]) and not all(row["green"] for row in widget.view["rows"])
    flags = [ids[len(prompt) + i] in _green(ids[: len(prompt) + i]) for i in range(5)]
    assert [t["green"] for t in widget.view["tokens"]] == flags
    found = detect(ids[len(prompt) - 1 :], WATERMARK)  # the generated tokens, after the token that seeds the first
    assert found.green == tuple(flags) and found.num_tokens_scored == 5
    summary = widget.view["watermark"]
    assert (summary["num_green"], summary["num_scored"], summary["z_score"], summary["p_value"]) == (
        found.num_green_tokens, 5, found.z_score, found.p_value)
    assert (summary["bias"], summary["greenlist_ratio"], summary["seeding_scheme"]) == (2.5, 0.3, "lefthash")


def test_no_watermark_no_green_marks(shakespeare):
    view = explore(shakespeare, PROMPT, watermark=False).view
    assert "watermark" not in view and all("green" not in row for row in view["rows"])


@pytest.mark.parametrize("watermark", [WATERMARK, WatermarkSettings(seeding_scheme="selfhash", context_width=2)])
def test_watermarked_probabilities_are_the_library_chains(shakespeare, watermark):
    """Every row's processed probability, the rest and the kept count: process_logits with the watermark, to 1e-6."""
    trail = Trail(shakespeare.double(), PROMPT, watermark=watermark)  # float64: no near-tie can flip on another CPU
    try:
        for token in (11, 198, 40):
            trail.step(decoding_settings({}), "clicked", token)
        for values in [{}, {"temperature": 1.3, "top_k": 0, "repetition_penalty": 1.4}, {"top_p": 0.6, "min_p": 0.05}]:
            settings = decoding_settings(values)
            view = trail.view(settings)
            context = torch.tensor([trail.ids])
            logits = trail.logits[-1].float()[None]
            p = process_logits(logits, context, new_tokens=3, do_sample=True, watermark=watermark, **settings)
            p = p.softmax(-1)[0]
            plain = process_logits(logits, context, new_tokens=3, do_sample=True, **settings).softmax(-1)[0]
            assert not torch.allclose(p, plain, atol=1e-3)  # the watermark changes the distribution
            for row in view["rows"]:
                assert row["p"] == pytest.approx(p[row["id"]].item(), abs=1e-6), (values, row)
                assert row["green"] == (row["id"] in _green([*trail.ids, row["id"]] if watermark.seeding_scheme ==
                                                           "selfhash" else trail.ids, watermark))
            shown = torch.ones_like(p, dtype=torch.bool)
            shown[[row["id"] for row in view["rows"]]] = False
            assert view["rest"]["p"] == pytest.approx(p[shown].sum().item(), abs=1e-6)
            assert view["kept"] == int((p > 0).sum())
    finally:
        shakespeare.float()


def test_watermarked_tokens_are_generates(shakespeare):
    """The replay, the Sample button and greedy decoding with a watermark: generate(..., watermark=...)'s tokens."""
    data = page_data(shakespeare, PROMPT, steps=6, seed=2, watermark=WATERMARK, repetition_penalty=1.2)
    sampled = generate(shakespeare, PROMPT, max_new_tokens=6, do_sample=True, seed=2, temperature=0.8, top_k=50,
                       repetition_penalty=1.2, watermark=WATERMARK)
    assert [t["id"] for t in data["tokens"]] == sampled.new_tokens[0]
    plain = generate(shakespeare, PROMPT, max_new_tokens=6, do_sample=True, seed=2, temperature=0.8, top_k=50,
                     repetition_penalty=1.2)
    assert plain.new_tokens[0] != sampled.new_tokens[0]  # the watermark changed the draws
    selfhash = WatermarkSettings(seeding_scheme="selfhash", bias=4.0)
    for watermark in (WATERMARK, selfhash):
        widget = explore(shakespeare, PROMPT, seed=5, watermark=watermark, top_p=0.9)
        for _ in range(4):
            widget.sample()
        drawn = generate(shakespeare, PROMPT, max_new_tokens=4, do_sample=True, seed=5, temperature=0.8, top_k=50,
                         top_p=0.9, watermark=watermark)
        assert [t["id"] for t in widget.view["tokens"]] == drawn.new_tokens[0]
        greedy = explore(shakespeare, PROMPT, watermark=watermark, temperature=0)
        for _ in range(4):
            greedy.greedy()
        expected = generate(shakespeare, PROMPT, max_new_tokens=4, temperature=0, watermark=watermark).new_tokens[0]
        assert [t["id"] for t in greedy.view["tokens"]] == expected
        assert greedy.view["greedy"] == generate(shakespeare, PROMPT + decode(expected), max_new_tokens=1,
                                                 temperature=0, watermark=watermark).new_tokens[0][0]


def test_the_page_stores_the_green_lists(shakespeare):
    data = page_data(shakespeare, PROMPT, steps=3, seed=0, watermark=WATERMARK)
    ids = data["prompt_ids"] + [t["id"] for t in data["tokens"]]
    trail = Trail(shakespeare, PROMPT)
    for token in data["tokens"]:
        trail.step(decoding_settings({}), "clicked", token["id"])
    for i, step in enumerate(data["steps"]):
        green = _green(ids[: len(data["prompt_ids"]) + i])
        stored = np.frombuffer(base64.b64decode(step["ids"]), "<i4")
        logits = np.frombuffer(base64.b64decode(step["logits"]), "<f4").astype(np.float64)
        values = np.frombuffer(base64.b64decode(step["values"]), "<f4").astype(np.float64)
        counts = np.frombuffer(base64.b64decode(step["counts"]), "<i4")
        flags = np.frombuffer(base64.b64decode(step["green"]), "u1")
        assert len(flags) == len(stored) + len(values)
        assert flags[: len(stored)].tolist() == [int(j in green) for j in stored.tolist()]
        full = trail.logits[i].double()
        mask = torch.zeros(len(full), dtype=torch.bool)
        mask[list(green)] = True
        for colour, tokens in [(1, mask), (0, ~mask)]:  # each colour's mass is exact: the bins never mix them
            lse = np.logaddexp.reduce(np.concatenate([logits[flags[: len(stored)] == colour],
                                                      (values + np.log(counts))[flags[len(stored) :] == colour]]))
            assert lse == pytest.approx(torch.logsumexp(full[tokens], 0).item(), abs=1e-6)
        best = torch.topk(full + WATERMARK.bias * mask, 1000).indices.tolist()  # greedy's token after δ is stored
        assert set(best) <= set(stored.tolist())
    assert [t["green"] for t in data["tokens"]] == list(detect(ids[len(data["prompt_ids"]) - 1 :], WATERMARK).green)
    assert data["watermark"]["num_green"] == sum(t["green"] for t in data["tokens"])
    assert "watermark" not in page_data(shakespeare, PROMPT, steps=1) and "green" not in page_data(
        shakespeare, PROMPT, steps=1)["steps"][0]


def test_the_page_refuses_selfhash(tiny_model):
    with pytest.raises(ValueError) as refused:
        page_data(tiny_model, PROMPT, steps=1, watermark=WatermarkSettings(seeding_scheme="selfhash"))
    assert str(refused.value) == SELFHASH_REFUSED
    assert check_page_watermark(True) == WatermarkSettings() and check_page_watermark(None) is None


def test_explore_command_watermarks_the_page(tiny_checkpoint, tmp_path):
    out = tmp_path / "explore.html"
    assert main(["explore", "ROMEO:", "--out", str(out), "--model", str(tiny_checkpoint), "--steps", "2",
                 "--watermark", "--watermark-bias", "3", "--greenlist-ratio", "0.5"]) == 0
    page = out.read_text()
    assert '"watermark":{"greenlist_ratio":0.5,"bias":3.0,"seeding_scheme":"lefthash"' in page


@pytest.fixture
def tiny_checkpoint(tiny_model, tmp_path):
    return save_checkpoint(tiny_model, tmp_path / "tiny")


def test_explore_command_writes_the_page(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "explore.html"
    assert main(["explore", "ROMEO:", "--out", str(out), "--model", str(tiny_checkpoint), "--steps", "2",
                 "--seed", "4", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    assert '"seed":4' in out.read_text() and '"top_p":0.9' in out.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", "1.5"], "top_p must be in (0, 1] (1 = off), got 1.5"),
        (["--top-k", "-3"], "top_k must be 0 (off) or an integer >= 1, got -3"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0, got -1.0"),
        (["--steps", "0"], "steps must be an integer >= 1, got 0"),
        (["--seed", "-2"], "seed must be an integer >= 0, got -2"),
        (["--out", "no/such/folder/x.html"], "path must be a file in an existing folder, got 'no/such/folder/x.html'"),
        (["--watermark-bias", "3"], "--watermark-bias set(s) the watermark, which is off: pass --watermark too"),
        (["--watermark", "--seeding-scheme", "selfhash"], SELFHASH_REFUSED),
    ],
)
def test_explore_command_refuses_bad_options_before_loading(tiny_checkpoint, tmp_path, capsys, monkeypatch, args,
                                                             message):
    from minigpt import cli

    monkeypatch.setattr(cli, "load_model", lambda *a, **kw: pytest.fail("the model was loaded before the check"))
    argv = ["explore", "ROMEO:", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x.html"), *args]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"minigpt explore: error: {message}\n"


def test_explore_command_refuses_too_many_steps(tiny_checkpoint, tmp_path, capsys):
    argv = ["explore", "ROMEO:", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x.html"), "--steps", "500"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "minigpt explore: error: steps must be an integer between 1 and 127, got 500\n"


def test_page_html_escapes_its_data():
    page = page_html({"prompt": "</script><b>", "texts": {"1": "</"}})
    assert "</script><b>" not in page and "<b>" not in page.split("<script")[0]


def test_the_page_replaces_a_symlink_and_a_full_disk_leaves_the_old_page(tiny_model, tiny_checkpoint, tmp_path,
                                                                          monkeypatch, capsys):
    import errno

    from minigpt.explore import export_page

    tmp_path = tmp_path / "pages"  # beside the checkpoint's folder, alone
    tmp_path.mkdir()
    target, link = tmp_path / "theirs.html", tmp_path / "link.html"
    target.write_text("not minigpt's")
    link.symlink_to(target)
    (tmp_path / ".link.html.abcd1234.partial").write_text("a killed run's")
    export_page(tiny_model, "Hi", link, steps=1)
    assert target.read_text() == "not minigpt's" and not link.is_symlink()  # the link went, not its target
    page = link.read_text()
    assert page.endswith("</html>\n") and sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "theirs.html"]
    real_open = Path.open

    def full_disk(self, mode="r", *args, **kwargs):  # half the page goes out, then the disk is full
        f = real_open(self, mode, *args, **kwargs)
        if "x" in mode:
            def write(text):
                f.buffer.write(text[: len(text) // 2].encode())
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(OSError) as info:
        export_page(tiny_model, "Hello", link, steps=1)
    assert str(info.value) == f"could not write path={str(link)!r} (No space left on device); nothing was left behind"
    assert link.read_text() == page and sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "theirs.html"]
    assert main(["explore", "Hi", "--out", str(link), "--model", str(tiny_checkpoint), "--steps", "1"]) == 1
    assert capsys.readouterr().err == f"minigpt explore: error: {info.value}\n"
    assert link.read_text() == page and sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "theirs.html"]
