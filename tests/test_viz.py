"""minigpt.viz.plot_kept: a whole-vocabulary distribution as its top tokens plus one bar for the rest."""

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_rgba

from minigpt.viz import DROPPED, KEPT, plot_kept, token_label

BLUE, GREY = to_rgba(KEPT), to_rgba(DROPPED)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def dist():
    """A 1,000-token distribution in shuffled order, and labels with leading spaces and a newline."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(1000) * 3, dim=0)
    labels = [f" w{i}" for i in range(1000)]
    labels[int(probs.argmax())] = "\n"
    return probs, labels


def test_bars_are_the_top_tokens_then_the_rest_split_into_kept_and_dropped(dist):
    probs, labels = dist
    kept = probs >= probs.sort(descending=True).values[29]  # the 30 most likely: 20 shown, 10 in the rest
    ax = plot_kept(probs, labels, title="t", kept=kept, top=20).axes[0]
    bars = ax.patches
    assert len(bars) == 22  # 20 tokens, then the rest's kept part and its dropped part stacked on it
    assert [b.get_height() for b in bars[:20]] == pytest.approx(probs.sort(descending=True).values[:20].tolist())
    rest_kept, rest_dropped = bars[20], bars[21]
    assert rest_kept.get_x() == rest_dropped.get_x() and rest_dropped.get_y() == pytest.approx(rest_kept.get_height())
    ranked = probs.sort(descending=True).values
    assert rest_kept.get_height() == pytest.approx(ranked[20:30].sum().item(), rel=1e-5)
    assert rest_dropped.get_height() == pytest.approx(ranked[30:].sum().item(), rel=1e-5)
    assert sum(b.get_height() for b in bars) == pytest.approx(1.0, abs=1e-5)  # the bars add up to 1


def test_kept_in_colour_dropped_in_grey_and_the_legend_counts_them(dist):
    probs, labels = dist
    kept = probs >= probs.sort(descending=True).values[4]  # the 5 most likely
    ax = plot_kept(probs, labels, title="t", kept=kept, top=8).axes[0]
    assert [b.get_facecolor() for b in ax.patches[:8]] == [BLUE] * 5 + [GREY] * 3
    assert [b.get_facecolor() for b in ax.patches[8:]] == [BLUE, GREY]  # the rest: kept part, dropped part
    assert [t.get_color() for t in ax.get_xticklabels()][:8] == ["black"] * 5 + ["gray"] * 3
    mass = probs.sort(descending=True).values[:5].sum().item()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"kept: 5 tokens, mass {mass:.3f}", f"dropped: 995 tokens, mass {1 - mass:.3f}"]


def test_a_single_kept_token_is_counted_in_the_singular(dist):
    probs, labels = dist
    ax = plot_kept(probs, labels, title="t", kept=probs == probs.max()).axes[0]
    assert ax.get_legend().get_texts()[0].get_text().startswith("kept: 1 token, mass ")


def test_tick_labels_show_spaces_and_newlines_and_count_the_rest(dist):
    probs, labels = dist
    ax = plot_kept(probs, labels, title="Next token", top=3).axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    top3 = probs.topk(3).indices.tolist()
    assert ticks == [token_label(labels[i]) for i in top3] + ["the other 997"]
    assert ticks[0] == "\\n" and ticks[1].startswith("\N{OPEN BOX}w")
    assert ax.get_title() == "Next token" and ax.get_xlabel() == "next token, most likely first"


def test_without_kept_every_bar_is_one_colour_and_there_is_no_legend(dist):
    probs, labels = dist
    ax = plot_kept(probs, labels, title="t", top=5).axes[0]
    assert ax.patches[-1].get_height() == 0  # nothing dropped: the rest's grey part is empty
    assert {b.get_facecolor() for b in ax.patches[:-1]} == {BLUE}
    assert ax.get_legend() is None


def test_a_small_vocabulary_is_drawn_whole_without_a_rest_bar():
    probs = torch.tensor([0.1, 0.6, 0.3])
    ax = plot_kept(probs, ["a", "b", "c"], title="t", kept=probs > 0.2, top=20).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "c", "a"]
    assert [b.get_height() for b in ax.patches] == pytest.approx([0.6, 0.3, 0.1])


def test_log_scale_and_drawing_into_given_axes(dist):
    probs, labels = dist
    fig, axes = plt.subplots(1, 2)
    returned = plot_kept(probs, labels, title="t", log=True, ax=axes[1])
    assert returned is fig
    assert axes[1].get_yscale() == "log" and axes[1].get_ylabel() == "probability (log scale)"
    assert len(axes[0].patches) == 0  # the other panel is left alone


def test_linear_axis_leaves_room_above_the_tallest_bar(dist):
    probs, labels = dist
    ax = plot_kept(probs, labels, title="t", top=5).axes[0]
    tallest = max(b.get_y() + b.get_height() for b in ax.patches)
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > tallest


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(labels=["a", "b"]), ValueError, r"labels must have one entry per probability \(3\), got 2"),
        (dict(kept=torch.tensor([1, 0, 1])), TypeError, r"kept must hold booleans .*, got torch.int64"),
        (dict(kept=torch.tensor([True, False])), ValueError, r"kept must have one entry per probability \(3\), got 2"),
        (dict(top=0), ValueError, r"top must be an integer >= 1, got 0"),
        (dict(top=2.5), TypeError, r"top must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    args = dict(probs=torch.tensor([0.5, 0.3, 0.2]), labels=["a", "b", "c"], title="t") | kwargs
    with pytest.raises(error, match=message):
        plot_kept(**args)
