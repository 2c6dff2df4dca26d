"""The explorer in a real browser: headless Chromium shows what Python's process_logits computes.

The exported page recomputes every distribution in JavaScript; here Chromium opens it once, moves its sliders
through the DOM and reads the probabilities it displays, which must equal ``process_logits`` to 1e-5. The
notebook widget's front end is the same script: it is mounted in the same page with a stand-in for
anywidget's model, and must draw exactly what Python sent and send back what was clicked.

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
from minigpt.explore import DEFAULTS, SCRIPT, Trail, decoding_settings, explore, page_data, page_html
from minigpt.logits import process_logits

PROMPT, STEPS, SETTINGS_PER_STEP = "ROMEO:", 3, 8  # 3 steps x 8 = 24 random settings
REPLAY = dict(temperature=0.8, top_k=50)  # what `minigpt explore` samples with by default


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

    data = page_data(shakespeare, PROMPT, steps=STEPS, seed=0, model_name="shakespeare", **REPLAY)
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


def test_page_refuses_bad_values_with_the_library_messages(page):
    browser, _, _ = page
    type_in = """
    const [name, text] = arguments;
    const input = document.querySelector(`input[type=number][name=${name}]`);
    input.value = text;
    input.dispatchEvent(new Event("change", {bubbles: true}));
    return [document.querySelector(".mgx-error").textContent, document.querySelector(".mgx-bars").className];
    """
    for name, text, value in [("temperature", "0", 0), ("top_p", "1.5", 1.5), ("top_k", "2.5", 2.5),
                              ("min_p", "-0.1", -0.1), ("repetition_penalty", "0", 0), ("temperature", "", "")]:
        with pytest.raises((ValueError, TypeError)) as refused:
            decoding_settings({name: value})
        error, bars = browser.execute_script(type_in, name, text)
        assert error == str(refused.value) and "mgx-stale" in bars
        browser.execute_script(type_in, name, str(DEFAULTS[name]))  # back to a good value
    assert browser.execute_script(type_in, "temperature", "1")[0] == ""


def test_widget_front_end_draws_what_python_sent(page, shakespeare):
    """explorer.js's anywidget `render`, mounted with a stand-in model holding the widget's real traits."""
    browser, _, _ = page
    widget = explore(shakespeare, PROMPT, temperature=0.7, top_p=0.9)
    widget.greedy()
    traits = {name: getattr(widget, name) for name in ("view", "error", "seed", *decoding_settings({}))}
    mount = """
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
    drawn = browser.execute_script(f"return (async () => {{ {mount} }})();", SCRIPT.read_text(), traits)
    assert drawn == [[row["id"], row["p"]] for row in widget.view["rows"]]
    # a click on the third bar sends {"action": "choose", "id": ...}; Python appends that token
    browser.find_elements("css selector", "#widget .mgx-token .mgx-label")[2].click()
    browser.find_element("css selector", "#widget button.mgx-back").click()
    range_ = browser.find_element("css selector", "#widget input[type=range][name=temperature]")
    browser.execute_script("arguments[0].value = '1.25'; arguments[0].dispatchEvent(new Event('input'));", range_)
    sent, set_ = browser.execute_script("return [window.__sent, window.__set];")
    assert sent == [{"action": "choose", "id": drawn[2][0]}, {"action": "back"}]
    assert set_ == [["temperature", 1.25]]
    widget._handle_custom_msg(sent[0], [])
    assert [t["id"] for t in widget.view["tokens"]][-1] == drawn[2][0]
    browser.execute_script("document.getElementById('widget').remove();")


def test_screenshot(page, tmp_path):
    """The page at the replay's second step with top-p 0.9 added, saved as a test artifact."""
    browser, _, _ = page
    shown = browser.execute_script(SET_AND_READ, 1, {"repetition_penalty": 1, "top_p": 0.9, "min_p": 0, **REPLAY})
    assert shown["error"] == "" and 1 < shown["kept"] < 50
    out = Path(os.environ.get("MINIGPT_TEST_ARTIFACTS") or tmp_path) / "explorer.png"
    assert browser.find_element("css selector", ".mgx").screenshot(str(out))
    print(f"screenshot: {out}")
