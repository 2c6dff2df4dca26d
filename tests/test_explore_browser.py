"""The explorer in a real browser: headless Chromium shows what Python's process_logits computes.

The exported page recomputes every distribution in JavaScript; here Chromium opens it once, moves its sliders
through the DOM and reads the probabilities it displays, which must equal ``process_logits`` to 1e-5. The
notebook widget's front end is the same script: it is mounted in the same page with a stand-in for
anywidget's model, and must draw exactly what Python sent and send back what was clicked. Then what a
student sees and does: bars on one scale (measured in the DOM), the legend and footnote, temperature 0 as
greedy, messages in the words of the hints, details on focus and click, the arrow keys, the shown defaults.

The browser is Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them with apt-get); nothing
is downloaded at run time. Without them the test is skipped, and says why. The screenshot goes to the folder
in ``MINIGPT_TEST_ARTIFACTS`` if set, else to pytest's temporary folder (``figures/explorer.png``, the README's
picture, is this screenshot, taken with ``MINIGPT_TEST_ARTIFACTS=figures``).
"""

import os
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import load_model
from minigpt.explore import DEFAULTS, PAGE_ERROR, SCRIPT, Trail, decoding_settings, explore, page_data, page_html
from minigpt.generate import generate
from minigpt.logits import WatermarkSettings, greenlist, process_logits

pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium (the dev extra installs it)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

PROMPT, STEPS, SETTINGS_PER_STEP = "ROMEO:", 3, 8  # 3 steps x 8 = 24 random settings


def label(text: str) -> str:
    """A token as the page labels it (explorer.js' tokenLabel, for plain text): ␣ for a space, ↵ for a newline."""
    return text.replace("\\", "\\\\").replace(" ", "\u2423").replace("\n", "\u21b5")


def _browser() -> tuple[str, str]:
    """Paths of Chromium and its driver, or skip (with the reason in the warnings summary too)."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = (
            "no headless browser: chromium and chromedriver must be on PATH (Debian: apt-get install chromium "
            "chromium-driver; .ci/run installs them when it can)"
        )
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def shakespeare():
    return load_model("shakespeare")


@pytest.fixture(scope="module")
def page(shakespeare, tmp_path_factory):
    """The exported page of a 3-step replay, open in headless Chromium; with the replay's raw logits."""
    chromium, driver_path = _browser()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    data = page_data(shakespeare, PROMPT, steps=STEPS, seed=0, model_name="shakespeare")  # generate's defaults
    path = tmp_path_factory.mktemp("explore") / "explore.html"
    path.write_text(page_html(data), encoding="utf-8")
    # the same steps again, to get each step's full raw logits (the page holds them compressed)
    trail = Trail(shakespeare, PROMPT)
    for token in data["tokens"]:
        trail.step(decoding_settings({}), "clicked", token["id"])
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,1300"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(path.as_uri())
        yield browser, data, trail
    finally:
        browser.quit()


# Move the step slider and the five setting sliders as a user would (an input event each), then read back
# what the page displays: the slider values it took, every bar's probability, the rest, entropy, kept count.
SET_AND_READ = """
const [step, values] = arguments;
const move = (name, value) => {
  const input = document.querySelector(`input[type=range][name=${name}]`);
  input.value = String(value);
  input.dispatchEvent(new Event("input", {bubbles: true}));
  return Number(input.value);
};
const used = {step: move("step", step)};
for (const [name, value] of Object.entries(values)) used[name] = move(name, value);
const rows = [...document.querySelectorAll(".mgx-token")].map(
  (r) => ({id: Number(r.dataset.id), raw: Number(r.dataset.raw), before: Number(r.dataset.before), p: Number(r.dataset.p),
          kept: r.dataset.kept === "true"}));
const rest = document.querySelector(".mgx-restrow").dataset;
const count = document.querySelector(".mgx-kept-count");
return {used, rows, rest: {raw: Number(rest.raw), p: Number(rest.p)},
        entropy: Number(document.querySelector(".mgx-entropy").dataset.value),
        kept: Number(count.dataset.value), approx: count.textContent.startsWith("\u2248"),
        error: document.querySelector(".mgx-error").textContent};
"""


def _random_settings(rng: random.Random) -> dict:
    """Slider positions: each transform on or off at random; on, anywhere on its slider's 0.01 (or 1) grid."""
    return {
        "repetition_penalty": rng.choice([1, round(rng.uniform(0.5, 3), 2)]),
        "temperature": round(rng.uniform(0.05, 2), 2),
        "top_k": rng.choice([0, rng.randint(1, 200)]),
        "top_p": rng.choice([1, round(rng.uniform(0.01, 1), 2)]),
        "min_p": rng.choice([0, round(rng.uniform(0.01, 1), 2)]),
    }


def test_page_shows_what_process_logits_computes(page):
    browser, data, trail = page
    rng = random.Random(0)
    for step in range(STEPS):
        context = torch.tensor([trail.ids[: len(data["prompt_ids"]) + step]])
        # float64: float32's softmax over 50,257 tokens is itself off by ~1e-5 of the largest probability
        logits = trail.logits[step].double()[None]
        for _ in range(SETTINGS_PER_STEP):
            shown = browser.execute_script(SET_AND_READ, step, _random_settings(rng))
            used = shown.pop("used")
            assert used.pop("step") == step and shown["error"] == ""
            settings = decoding_settings(used)
            p = process_logits(logits, context, new_tokens=step, do_sample=True, **settings).softmax(-1)[0]
            raw = logits.softmax(-1)[0]
            uncut = {name: settings[name] for name in ("repetition_penalty", "temperature")}  # before the cuts
            before = process_logits(logits, context, new_tokens=step, do_sample=True, **uncut).softmax(-1)[0]
            penalised = process_logits(logits, context, new_tokens=step, do_sample=False,
                                       repetition_penalty=settings["repetition_penalty"])[0]
            ids = [row["id"] for row in shown["rows"]]
            assert sorted(ids) == sorted(torch.topk(penalised, 20).indices.tolist()), used
            for row in shown["rows"]:
                assert row["p"] == pytest.approx(p[row["id"]].item(), abs=1e-5), (used, row)
                assert row["raw"] == pytest.approx(raw[row["id"]].item(), abs=1e-5), (used, row)
                assert row["before"] == pytest.approx(before[row["id"]].item(), abs=1e-5), (used, row)
                assert row["kept"] == (p[row["id"]] > 0), (used, row)
            rest = torch.ones_like(p, dtype=torch.bool)
            rest[ids] = False
            assert shown["rest"]["p"] == pytest.approx(p[rest].sum().item(), abs=1e-5), used
            assert shown["rest"]["raw"] == pytest.approx(raw[rest].sum().item(), abs=1e-5), used
            nonzero = p[p > 0]
            # entropy sums over every token, so the binned ones add a little error (worst seen: 8e-5 nats)
            assert shown["entropy"] == pytest.approx(-(nonzero * nonzero.log()).sum().item(), abs=5e-4), used
            if not shown["approx"]:  # the cut fell among the exactly stored tokens: the count is exact too
                assert shown["kept"] == int((p > 0).sum()), used


# Type into a setting's number field as a user would (a change event); return the message and the bars' classes.
TYPE_IN = """
const [name, text] = arguments;
const input = document.querySelector(`input[type=number][name=${name}]`);
input.value = text;
input.dispatchEvent(new Event("change", {bubbles: true}));
return [document.querySelector(".mgx-error").textContent, document.querySelector(".mgx-bars").className];
"""


def _start_over(browser) -> None:
    """Every slider back where the replay was sampled, the first step, nothing focused."""
    browser.find_element("css selector", "button.mgx-reset").click()
    browser.execute_script(SET_AND_READ, 0, {})
    browser.execute_script("document.activeElement.blur();")


def test_page_refuses_bad_values_in_the_words_of_the_hints(page):
    browser, _, _ = page
    _start_over(browser)
    hints = dict(browser.execute_script(
        "return [...document.querySelectorAll('.mgx-hint')].map((h) => [h.previousElementSibling.name, h.textContent]);"))
    for name, text, value in [("temperature", "-1", -1), ("temperature", "", ""), ("temperature", "0.00005", 5e-05),
                              ("top_p", "1.5", 1.5), ("top_p", "0", 0), ("top_k", "2.5", 2.5), ("top_k", "-3", -3),
                              ("min_p", "-0.1", -0.1), ("min_p", "2", 2), ("repetition_penalty", "0", 0)]:
        with pytest.raises((ValueError, TypeError)) as refused:
            decoding_settings({name: value})
        error, bars = browser.execute_script(TYPE_IN, name, text)
        assert error == str(refused.value) and "mgx-stale" in bars
        allowed = error.split(" must be ")[1].rsplit(", got ", 1)[0]
        if value != 5e-05:  # the floor below 0.0001 explains itself; every other message repeats the hint's words
            assert hints[name].endswith(f"; {allowed}"), (hints[name], error)
        browser.execute_script(TYPE_IN, name, str(DEFAULTS[name]))  # back to a good value
    assert hints["top_k"] == "keep the k most likely tokens; 0 (off) or an integer >= 1"
    for name, off in [("top_k", "0"), ("top_p", "1"), ("min_p", "0"), ("repetition_penalty", "1"), ("temperature", "0")]:
        assert browser.execute_script(TYPE_IN, name, off)[0] == ""  # each hint's off value (and greedy) is accepted
    assert browser.execute_script(TYPE_IN, "temperature", "1")[0] == ""


def test_bars_share_one_scale(page):
    """Measured in the DOM: every bar's length is its value over the one scale, the rest of the vocabulary's too."""
    browser, _, _ = page
    _start_over(browser)
    measure = """
    return [...document.querySelectorAll(".mgx-bar")].map((b) => ({value: Number(b.dataset.value),
      width: b.getBoundingClientRect().width, room: b.parentElement.getBoundingClientRect().width
        - 7 * parseFloat(getComputedStyle(b).fontSize), rest: b.closest(".mgx-restrow") !== null}));
    """
    # the case (the rest's raw 0.248 below the first token's 0.381), then a rest that is the largest bar
    for settings, column in [({}, 0), ({"temperature": 1.5, "top_k": 0}, 1)]:
        shown = browser.execute_script(SET_AND_READ, 0, settings)
        bars = browser.execute_script(measure)
        scale = float(browser.find_element("css selector", ".mgx-scale").get_attribute("data-scale"))
        assert scale == max(bar["value"] for bar in bars)
        assert browser.find_element("css selector", ".mgx-scale").text == (
            f"Every bar is drawn on one scale: a full-width bar is {scale:.3f}, the largest probability shown.")
        assert len(bars) == 2 * 21 and sum(bar["rest"] for bar in bars) == 2
        for bar in bars:
            assert bar["width"] == pytest.approx(max(1, bar["room"] * bar["value"] / scale), abs=0.6), bar
        rest, top = [b for b in bars if b["rest"]][column], bars[column]  # raw (0) or processed (1) column
        assert rest["width"] / top["width"] == pytest.approx(rest["value"] / top["value"], rel=0.01)
    assert shown["rest"]["p"] == scale > max(row["p"] for row in shown["rows"])


def test_legend_and_footnote_speak_plainly(page):
    browser, data, _ = page
    legend = browser.find_element("css selector", ".mgx-legend").text
    assert ("\u2423 is a space and \u21b5 a newline (GPT-2's tokens carry their leading space). Entropy is in nats "
            "(natural-log units; ln 2 \u2248 0.69 nats = 1 bit)") in legend
    note = browser.find_element("css selector", ".mgx-note").text
    assert "log-mean-exp" not in note and "bin" not in note
    assert (f"a probability shown here is within {PAGE_ERROR['probability']} of the exact one and the entropy within "
            f"{PAGE_ERROR['entropy']} nats") in note
    assert "exact scores (logits) of the 1,000 most likely tokens and of every token of the text" in note


def test_the_footnotes_bound_holds_at_every_temperature(page):
    """No cut: the binned tokens are all in, and the rest and the entropy are off by far less than the footnote says."""
    browser, data, trail = page
    _start_over(browser)
    worst = {"probability": 0.0, "entropy": 0.0}
    for step in range(STEPS):
        logits = trail.logits[step].double()
        for temperature in [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.25, 1.5, 2.0]:
            shown = browser.execute_script(SET_AND_READ, step, {"top_k": 0, "temperature": temperature})
            p = (logits / temperature).softmax(-1)
            rest = torch.ones_like(p, dtype=torch.bool)
            rest[[row["id"] for row in shown["rows"]]] = False
            nonzero = p[p > 0]
            worst["probability"] = max(worst["probability"], abs(shown["rest"]["p"] - p[rest].sum().item()),
                                       *(abs(row["p"] - p[row["id"]].item()) for row in shown["rows"]))
            worst["entropy"] = max(worst["entropy"], abs(shown["entropy"] + (nonzero * nonzero.log()).sum().item()))
    assert worst["probability"] < PAGE_ERROR["probability"] / 100 and worst["entropy"] < PAGE_ERROR["entropy"] / 100


def test_temperature_zero_is_greedy_on_the_page(page, shakespeare):
    browser, data, trail = page
    _start_over(browser)
    first = generate(shakespeare, PROMPT, max_new_tokens=1, temperature=0).new_tokens[0][0]
    for step, penalty in [(0, 1), (2, 1.3)]:
        shown = browser.execute_script(SET_AND_READ, step, {"temperature": 0, "repetition_penalty": penalty, "top_p": 0.5})
        context = torch.tensor([trail.ids[: len(data["prompt_ids"]) + step]])
        penalised = process_logits(trail.logits[step][None], context, new_tokens=step, do_sample=False,
                                   repetition_penalty=None if penalty == 1 else penalty)  # what generate's argmax sees
        greedy = int(penalised.argmax())
        assert step or greedy == first
        assert shown["error"] == "" and shown["used"]["temperature"] == 0
        assert [(row["id"], row["p"], row["before"], row["kept"]) for row in shown["rows"]] == (
            [(greedy, 1, 1, True)] + [(row["id"], 0, 0, False) for row in shown["rows"][1:]])
        assert shown["rest"]["p"] == 0 and shown["entropy"] == 0 and shown["kept"] == 1 and not shown["approx"]
    stats = browser.find_element("css selector", ".mgx-stats").text
    assert stats.endswith("temperature 0 is greedy decoding: all the probability on the most likely token")


def test_details_follow_focus_and_click(page):
    """What a title tooltip showed only to a mouse: the details line, on focus, hover, tap or click."""
    browser, data, _ = page
    _start_over(browser)
    details = browser.find_element("css selector", ".mgx-details")
    assert details.text.startswith("Details: hover over, tap or Tab to a token of the text or a bar")
    labels = browser.find_elements("css selector", ".mgx-token .mgx-label")
    assert all(node.get_attribute("tabindex") == "0" and node.get_attribute("aria-label") for node in labels)
    row = browser.execute_script("const r = document.querySelectorAll('.mgx-token')[1]; return {...r.dataset};")
    browser.execute_script("arguments[0].focus();", labels[1])  # what Tab does
    expected = (f"{label(data['texts'][int(row['id'])])} (token {row['id']}): raw {float(row['raw']):.3f} \u2192 after the penalty and temperature "
                f"{float(row['before']):.3f} \u2192 processed {float(row['p']):.3f}")
    assert details.text == expected and labels[1].get_attribute("aria-label") == expected
    tokens = browser.find_elements("css selector", ".mgx-tok")
    assert [t.get_attribute("tabindex") for t in tokens] == ["0"] * STEPS
    tokens[2].click()  # a click or a tap on a token of the text: that step, and its details
    assert browser.find_element("css selector", ".mgx-where").text.startswith(f"step 3 of {STEPS}")
    assert details.text.startswith(f"{label(data['texts'][data['tokens'][2]['id']])} (new token 3): "
                                   f"p = {data['tokens'][2]['p']:.3f} when chosen (sampled, seed 0, draw 3)\ndrawn from: ")
    focused = browser.execute_script("return document.activeElement.dataset.key;")
    assert focused == "tok-2"  # the redrawn token kept the focus
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)  # the arrows work from a focused token too
    assert browser.find_element("css selector", ".mgx-where").text.startswith(f"step 2 of {STEPS}")
    browser.find_elements("css selector", ".mgx-tok")[0].send_keys(Keys.ENTER)  # Enter goes to a step, as a click
    assert browser.find_element("css selector", ".mgx-where").text.startswith(f"step 1 of {STEPS}")


def test_arrow_keys_move_the_steps_anywhere_but_in_a_field(page):
    browser, _, _ = page
    _start_over(browser)
    where = lambda: browser.find_element("css selector", ".mgx-where").text.split(":")[0]  # noqa: E731
    keys = ActionChains(browser)
    keys.send_keys(Keys.ARROW_RIGHT).perform()  # on the page's body: nothing has the focus
    assert where() == "step 2 of 3"
    keys.send_keys(Keys.ARROW_RIGHT).send_keys(Keys.ARROW_RIGHT).perform()  # not past the last step
    assert where() == "step 3 of 3" and browser.find_element("css selector", "button.mgx-next").get_attribute("disabled")
    keys.send_keys(Keys.ARROW_LEFT).perform()
    assert where() == "step 2 of 3"
    browser.find_element("css selector", "button.mgx-prev").send_keys(Keys.ARROW_LEFT)  # a button has the focus
    assert where() == "step 1 of 3"
    number = browser.find_element("css selector", "input[type=number][name=temperature]")
    number.send_keys(Keys.ARROW_RIGHT)  # in a number field the arrows move the caret, not the steps
    assert where() == "step 1 of 3"
    browser.execute_script("const t = document.createElement('input'); t.type = 'text'; t.id = 'typing';"
                           "t.value = 'abc'; document.body.append(t);")
    browser.find_element("id", "typing").send_keys(Keys.ARROW_LEFT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert where() == "step 1 of 3"
    temperature = browser.find_element("css selector", "input[type=range][name=temperature]")
    temperature.send_keys(Keys.ARROW_RIGHT)  # a setting's slider: the arrows move that slider only
    assert where() == "step 1 of 3" and temperature.get_attribute("value") == "0.81"
    step = browser.find_element("css selector", "input[type=range][name=step]")
    step.send_keys(Keys.ARROW_RIGHT)  # the step slider moves the steps itself, once
    assert where() == "step 2 of 3"
    browser.execute_script("document.getElementById('typing').remove();")


def test_the_page_shows_where_the_sliders_started(page):
    browser, _, _ = page
    _start_over(browser)
    start = browser.find_element("css selector", ".mgx-start")
    assert start.text == ("The sliders started at temperature 0.8, top-k 50 (the others off), as minigpt generate "
                          "samples.")
    assert start.find_element("css selector", "code").text == "minigpt generate"
    values = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('input[type=range]')].map((r) => [r.name, r.value]));")
    assert values == {"step": "0", "repetition_penalty": "1", "temperature": "0.8", "top_k": "50", "top_p": "1",
                      "min_p": "0"}


# explorer.js' anywidget `render`, mounted in the page with a stand-in model holding `traits`; returns each bar's id and p
MOUNT_WIDGET = """
    const [source, traits] = arguments;
    const done = new Promise((resolve) => { window.__mounted = resolve; });
    const script = document.createElement("script");
    script.type = "module";  // the shared script once more, now handing its anywidget entry point to the test
    script.textContent = source + "\\nwindow.__mounted(render);";
    document.head.append(script);
    const render = await done;
    window.__sent = []; window.__set = [];
    const model = {get: (k) => traits[k], set: (k, v) => window.__set.push([k, v]), save_changes() {},
                   on() {}, off() {}, send: (m) => window.__sent.push(m)};
    const root = document.createElement("div");
    root.id = "widget";
    document.body.prepend(root);
    render({model, el: root});
    return [...root.querySelectorAll(".mgx-token")].map((r) => [Number(r.dataset.id), Number(r.dataset.p)]);
"""


def _mount_widget(browser, widget) -> list:
    traits = {name: getattr(widget, name) for name in ("view", "error", "seed", *decoding_settings({}))}
    return browser.execute_script(f"return (async () => {{ {MOUNT_WIDGET} }})();", SCRIPT.read_text(), traits)


def test_widget_front_end_draws_what_python_sent(page, shakespeare):
    """explorer.js's anywidget `render`, mounted with a stand-in model holding the widget's real traits."""
    browser, _, _ = page
    widget = explore(shakespeare, PROMPT, temperature=0.7, top_p=0.9)
    widget.greedy()
    drawn = _mount_widget(browser, widget)
    assert drawn == [[row["id"], row["p"]] for row in widget.view["rows"]]
    assert browser.find_element("css selector", "#widget .mgx-start").text == (
        "The sliders started at temperature 0.7, top-k 50, top-p 0.9 (the others off); minigpt generate samples at "
        "temperature 0.8, top-k 50.")
    # a click on the third bar sends {"action": "choose", "id": ...}; Python appends that token
    labels = browser.find_elements("css selector", "#widget .mgx-token .mgx-label")
    labels[2].click()
    assert labels[2].get_attribute("role") == "button"
    browser.execute_script("arguments[0].focus();", labels[4])  # focus shows the details, Enter appends
    details = browser.find_element("css selector", "#widget .mgx-details").text
    row = widget.view["rows"][4]
    processed = f"{row['p']:.3f}" if row["kept"] else "0 (removed by top-k, top-p or min-p)"
    assert details == (f"{label(row['text'])} (token {row['id']}): raw {row['raw']:.3f} \u2192 after the penalty and "
                       f"temperature {row['before']:.3f} \u2192 processed {processed}")
    assert labels[4].get_attribute("aria-label") == details + "; press Enter to append it"
    labels[4].send_keys(Keys.ENTER)
    browser.find_element("css selector", "#widget button.mgx-back").click()
    range_ = browser.find_element("css selector", "#widget input[type=range][name=temperature]")
    browser.execute_script("arguments[0].value = '1.25'; arguments[0].dispatchEvent(new Event('input'));", range_)
    sent, set_ = browser.execute_script("return [window.__sent, window.__set];")
    assert sent == [{"action": "choose", "id": drawn[2][0]}, {"action": "choose", "id": drawn[4][0]}, {"action": "back"}]
    assert set_ == [["temperature", 1.25]]
    widget._handle_custom_msg(sent[0], [])
    assert [t["id"] for t in widget.view["tokens"]][-1] == drawn[2][0]
    browser.execute_script("document.getElementById('widget').remove();")


def test_widget_front_end_tints_what_python_found_green(page, shakespeare):
    browser, _, _ = page
    widget = explore(shakespeare, PROMPT, seed=2, watermark=WatermarkSettings(seeding_scheme="selfhash"))
    for _ in range(4):
        widget.sample()
    try:
        drawn = _mount_widget(browser, widget)
        assert drawn == [[row["id"], row["p"]] for row in widget.view["rows"]]
        rows = browser.execute_script("return [...document.querySelectorAll('#widget .mgx-token')].map((r) => "
                                      "[r.dataset.green === 'true', r.classList.contains('mgx-green')]);")
        assert rows == [[row["green"], row["green"]] for row in widget.view["rows"]]
        assert {green for green, _ in rows} == {True, False}
        text = browser.execute_script("return [...document.querySelectorAll('#widget .mgx-tok')].map((t) => "
                                      "t.classList.contains('mgx-green'));")
        assert text == [t["green"] for t in widget.view["tokens"]]
        legend = browser.find_element("css selector", "#widget .mgx-watermark").text
        w = widget.view["watermark"]
        assert legend.startswith("watermark (\u03b4 = 2 added last, \u03b3 = 0.25, selfhash): ")
        assert f"Text: {w['num_green']} of 4 generated tokens green (1 expected by chance), z-score {w['z_score']:.3f}" in legend
    finally:
        browser.execute_script("document.getElementById('widget')?.remove();")


def test_screenshot(page, tmp_path):
    """The page at the replay's second step with top-p 0.9 added, a bar focused, saved as a test artifact."""
    browser, _, _ = page
    _start_over(browser)
    shown = browser.execute_script(SET_AND_READ, 1, {**DEFAULTS, "top_p": 0.9})
    assert shown["error"] == "" and 1 < shown["kept"] < 50
    browser.execute_script("document.querySelectorAll('.mgx-token .mgx-label')[1].focus();")
    out = Path(os.environ.get("MINIGPT_TEST_ARTIFACTS") or tmp_path) / "explorer.png"
    assert browser.find_element("css selector", ".mgx").screenshot(str(out))
    print(f"screenshot: {out}")


def test_the_watermarked_page_adds_delta_last_and_tints_the_green_tokens(page, shakespeare, tmp_path):
    """A watermarked replay in the same browser: the page's chain (δ on the green tokens, last) is process_logits'."""
    browser, _, _ = page
    unwatermarked = browser.current_url
    watermark = WatermarkSettings(bias=2.5, greenlist_ratio=0.3, hashing_key=7)
    data = page_data(shakespeare, PROMPT, steps=STEPS, seed=1, watermark=watermark)
    path = tmp_path / "watermarked.html"
    path.write_text(page_html(data), encoding="utf-8")
    trail = Trail(shakespeare, PROMPT)
    for token in data["tokens"]:
        trail.step(decoding_settings({}), "clicked", token["id"])
    rng, colours = random.Random(1), set()
    try:
        browser.get(path.as_uri())
        for step in range(STEPS):
            ids = trail.ids[: len(data["prompt_ids"]) + step]
            green = set(greenlist(ids, watermark).tolist())
            logits = trail.logits[step].double()[None]
            for values in [{}, {"temperature": 0}, {"temperature": 0, "repetition_penalty": 1.3},
                           *(_random_settings(rng) for _ in range(5))]:
                shown = browser.execute_script(SET_AND_READ, step, {**DEFAULTS, **values})  # every slider moved
                used = shown.pop("used")
                assert used.pop("step") == step and shown["error"] == ""
                settings = decoding_settings(used)
                sample = settings["temperature"] > 0
                p = process_logits(logits, torch.tensor([ids]), new_tokens=step, do_sample=sample, watermark=watermark,
                                   **settings)
                if not sample:  # greedy decoding: all on the argmax after the penalty and δ
                    p = torch.zeros_like(p).scatter(-1, p.argmax(-1, keepdim=True), 1.0)
                p = p.softmax(-1)[0] if sample else p[0]
                for row in shown["rows"]:
                    assert row["p"] == pytest.approx(p[row["id"]].item(), abs=1e-5), (used, row)
                rest = torch.ones_like(p, dtype=torch.bool)
                rest[[row["id"] for row in shown["rows"]]] = False
                assert shown["rest"]["p"] == pytest.approx(p[rest].sum().item(), abs=1e-5), used
                nonzero = p[p > 0]
                assert shown["entropy"] == pytest.approx(-(nonzero * nonzero.log()).sum().item(), abs=5e-4), used
                tinted = browser.execute_script(
                    "return [...document.querySelectorAll('.mgx-token')].map((r) => [Number(r.dataset.id), "
                    "r.dataset.green === 'true', r.classList.contains('mgx-green')]);")
                assert tinted == [[i, i in green, i in green] for i, _, _ in tinted]
                colours.update(tint for _, tint, _ in tinted)
        assert colours == {True, False}  # green rows and others were shown
        text = browser.execute_script(
            "return [...document.querySelectorAll('.mgx-tok')].map((t) => [t.dataset.green, "
            "t.classList.contains('mgx-green'), getComputedStyle(t).boxShadow]);")
        assert [[flag, tint] for flag, tint, _ in text] == [[str(t["green"]).lower(), t["green"]] for t in data["tokens"]]
        assert all(("0, 158, 115" in shadow) == tint for _, tint, shadow in text)  # the Okabe-Ito green underline
        legend = browser.find_element("css selector", ".mgx-watermark").text
        w = data["watermark"]
        words, p_value = legend.rsplit(", p-value ", 1)
        assert words == (
            f"watermark (\u03b4 = 2.5 added last, \u03b3 = 0.3, lefthash): a token underlined or tinted green is on its "
            f"step's green list. Text: {w['num_green']} of {STEPS} generated tokens green (0.9 expected by chance), "
            f"z-score {w['z_score']:.3f}")
        assert float(p_value.rstrip(".")) == pytest.approx(w["p_value"], rel=5e-3)
    finally:
        browser.get(unwatermarked)
