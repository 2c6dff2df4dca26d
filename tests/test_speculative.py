"""Speculative decoding and prompt lookup: greedy output is the target's, sampled output follows its distribution."""

import copy
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minigpt import speculative
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig
from minigpt.speculative import lookup_draft, prompt_lookup_generate, speculative_generate

PROMPT = "Every effort moves you"
TINY = dict(block_size=128, n_layer=2, n_head=4, n_embd=64)  # the "tiny" preset, GPT-2's vocabulary


def random_gpt(seed, std=0.3, **config):
    """A random GPT with larger weights than GPT-2's init: peaked, varied distributions instead of one token."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "ln_" in name else p.normal_(0.0, std)
    return model


def perturbed(model, seed, noise):
    """A copy of ``model`` with noise on every weight: a draft that agrees with it often, not always."""
    torch.manual_seed(seed)
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * noise)
    return draft


@pytest.fixture(scope="module")
def target():
    return random_gpt(1, **TINY)


@pytest.fixture(scope="module")
def drafts(target):
    return {
        "near": perturbed(target, seed=5, noise=0.02),  # accepts some drafts and rejects others
        # smaller and unrelated: rejects nearly everything. Its context (64) fits the 4-token prompt and 60
        # new tokens exactly, so a draft that ran past max_new_tokens would overflow it
        "other": random_gpt(2, n_layer=1, n_head=2, n_embd=32, block_size=64),
        "same": target,  # accepts everything
    }


@pytest.fixture(scope="module")
def greedy(target):
    """The target's own greedy continuation of PROMPT: what every greedy run below must reproduce."""
    return generate(target, PROMPT, max_new_tokens=60)


# ---------------------------------------------------------------- greedy: exactly the target's tokens


@pytest.mark.parametrize("k", [1, 2, 4, 7])
@pytest.mark.parametrize("draft_name", ["near", "other", "same"])
def test_greedy_equals_target_greedy(target, drafts, greedy, k, draft_name):
    out = speculative_generate(target, drafts[draft_name], PROMPT, k=k, max_new_tokens=60)
    assert out.new_tokens == greedy.new_tokens
    assert torch.equal(out.ids, greedy.ids) and out.text == greedy.text
    assert out.num_accepted <= out.num_proposed
    assert out.num_target_passes == 60 - out.num_accepted  # every pass gives its accepted drafts + 1 token
    if draft_name == "same":
        assert out.acceptance_rate == 1.0 and out.num_target_passes == math.ceil(60 / (k + 1))
    elif draft_name == "near":
        assert 0.0 < out.acceptance_rate < 1.0  # both paths, acceptance and rejection (with cache crops)
    else:
        assert out.acceptance_rate < 0.2


def test_the_output_is_varied(greedy):
    assert len(set(greedy.new_tokens[0])) >= 5  # not one token repeated: drafts can really disagree


@pytest.mark.parametrize("draft_name, k", [("near", 3), ("same", 7)])
def test_greedy_stops_at_eos_like_the_target(target, drafts, greedy, draft_name, k):
    tokens = greedy.new_tokens[0]
    eos = next(t for t in tokens if tokens.index(t) >= 5)  # first emitted at step 5 or later, mid-round
    ref = generate(target, PROMPT, max_new_tokens=60, eos_token_id=eos)
    out = speculative_generate(target, drafts[draft_name], PROMPT, k=k, max_new_tokens=60, eos_token_id=eos)
    assert out.new_tokens == ref.new_tokens and out.new_tokens[0][-1] == eos and out.stopped_by == ["eos"]
    assert torch.equal(out.ids, ref.ids) and out.text == ref.text


def test_caches_hold_only_kept_tokens(target, drafts, monkeypatch):
    """Spy on the forward passes: each cache keeps the sequence so far, never a rejected draft."""
    calls = []  # (model, tokens the cache still holds from earlier passes, tokens fed now, tokens it held)
    held = {}  # per cache: every token fed to it so far, position by position
    forward = GPT.forward

    def spy(self, idx, **kw):
        cache = kw["kv_cache"]
        before = held.get(id(cache), [])
        calls.append((self, before[: cache.length], idx[0].tolist(), before))
        held[id(cache)] = before[: cache.length] + idx[0].tolist()
        return forward(self, idx, **kw)

    monkeypatch.setattr(GPT, "forward", spy)
    draft = drafts["near"]
    out = speculative_generate(target, draft, PROMPT, k=4, max_new_tokens=40)
    final = out.ids[0].tolist()
    # the target: each pass finds in its cache the sequence so far but its last token (an empty cache the
    # first time) and is fed that token and the drafts; the sequence grows by the matching drafts + 1
    length = 4  # the prompt
    for model, kept, fed, _ in calls:
        if model is target:
            assert len(kept) == length - 1 or not kept
            seen = kept + fed
            assert seen[:length] == final[:length]
            drafts_ok = [a == b for a, b in zip(seen[length:], final[length:])] + [False]
            length += drafts_ok.index(False) + 1
    assert length == len(final)
    # the draft: when a round starts, its cache holds only tokens of the sequence
    round_starts = True
    for model, kept, _, _ in calls:
        if round_starts:
            assert kept == final[: len(kept)]
        round_starts = model is target
    for model in (target, draft):  # and both caches were cropped, after rejections
        assert any(len(before) > len(kept) for m, kept, _, before in calls if m is model)


def test_short_runs(target, drafts):
    nothing = speculative_generate(target, drafts["near"], PROMPT, max_new_tokens=0)
    assert nothing.new_tokens == [[]] and nothing.text == PROMPT and nothing.num_target_passes == 0
    one = speculative_generate(target, drafts["near"], PROMPT, k=4, max_new_tokens=1)  # no room to draft
    assert one.num_proposed == 0 and one.acceptance_rate == 0.0 and one.num_target_passes == 1


def test_id_prompt_has_no_text(target, drafts, greedy):
    ids = greedy.ids[:, :4]
    out = speculative_generate(target, drafts["near"], ids, max_new_tokens=10)
    assert out.texts is None and out.new_tokens == [greedy.new_tokens[0][:10]]


# ---------------------------------------------------------------- prompt lookup


def test_lookup_draft_copies_what_followed_the_latest_match():
    assert lookup_draft([5, 1, 2, 3, 9, 1, 2, 3], ngram_size=3, num_pred_tokens=2) == [9, 1]
    assert lookup_draft([1, 2, 4, 1, 2, 6, 1, 2], ngram_size=2, num_pred_tokens=3) == [6, 1, 2]  # latest
    assert lookup_draft([1, 2, 4, 1, 2, 6, 1, 2], ngram_size=2, num_pred_tokens=9) == [6, 1, 2]  # to the end
    assert lookup_draft([7, 2, 8, 3, 2], ngram_size=3, num_pred_tokens=2) == [8, 3]  # shorter n-gram
    assert lookup_draft([1, 2, 3], ngram_size=3, num_pred_tokens=5) == []  # nothing seen before
    assert lookup_draft([4, 4, 4], ngram_size=2, num_pred_tokens=5) == [4]  # overlapping match


@pytest.mark.parametrize("ngram_size, num_pred_tokens", [(1, 1), (2, 4), (3, 10)])
def test_prompt_lookup_equals_greedy(target, greedy, ngram_size, num_pred_tokens):
    out = prompt_lookup_generate(target, PROMPT, max_new_tokens=60, ngram_size=ngram_size,
                                 num_pred_tokens=num_pred_tokens)
    assert out.new_tokens == greedy.new_tokens and out.text == greedy.text
    assert 0.0 <= out.acceptance_rate <= 1.0
    assert out.num_target_passes == 60 - out.num_accepted


class CyclingModel(GPT):
    """Always predicts (token + 1) mod 4, whatever came before: text that repeats with period 4."""

    def __init__(self):
        super().__init__(GPTConfig(vocab_size=8, block_size=64, n_layer=1, n_head=1, n_embd=4))

    def forward(self, idx, *, kv_cache=None, last_only=False, **_):
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))  # nothing to store, but the positions count as seen
        logits = 10.0 * F.one_hot((idx + 1) % 4, self.config.vocab_size).float()  # (1, T, V)
        return logits[:, -1:] if last_only else logits


def test_prompt_lookup_pays_off_on_repetitive_text():
    out = prompt_lookup_generate(CyclingModel(), torch.tensor([[0, 1, 2, 3, 0, 1]]), max_new_tokens=30)
    assert out.new_tokens == [[(2 + i) % 4 for i in range(30)]]
    # the latest earlier match is one period back, so a pass copies the 4 tokens after it, keeps them all
    # and adds one of its own: 30 tokens in 6 passes instead of 30
    assert (out.num_proposed, out.num_accepted, out.num_target_passes) == (24, 24, 6)
    assert out.acceptance_rate == 1.0


# ---------------------------------------------------------------- sampling: the target's distribution
#
# Speculative sampling must give exactly the target's sampling distribution, so we compare its empirical
# frequencies with the exact one by Pearson's chi-square test. A tiny 12-token model with temperature 1.5
# and top-k 4 keeps the support small (4 first tokens, 16 pairs), so a few thousand runs suffice. The
# draft is the target with noise: half of its tokens are accepted, and it proposes tokens outside the
# target's top 4 (p = 0), so every path runs: accept, reject with a residual draw, the bonus token. The runs
# are seeded, so the test is deterministic; for a seed picked at random, a correct sampler would fail each
# check with probability 1e-4. With this seed the p-values are 0.35 (first token) and 0.67 (pairs) for
# speculative sampling, 0.29 and 0.50 for prompt lookup; the buggy samplers below get 2e-16 or less.

SMALL = dict(vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=16)
SAMPLING = dict(do_sample=True, temperature=1.5, top_k=4)
RUNS = 2000
P_MIN = 1e-4


@pytest.fixture(scope="module")
def small():
    target = random_gpt(0, **SMALL)
    return target, perturbed(target, seed=100, noise=0.1)


def exact_first_two(model, prompt):
    """The target's sampling distribution of the first two new tokens, {(x1, x2): p(x1) p(x2 | x1)}, taken
    from the distributions ``generate`` samples from."""
    def dist(ids):
        return generate(model, ids, max_new_tokens=1, return_distributions=True, **SAMPLING).distributions[0][0]

    p1 = dist(prompt)
    joint = {}
    for x1 in p1.nonzero().flatten().tolist():
        p2 = dist(torch.cat([prompt, torch.tensor([[x1]])], dim=1))
        joint |= {(x1, x2): p1[x1].item() * p2[x2].item() for x2 in p2.nonzero().flatten().tolist()}
    return joint


def marginal(joint):
    """The first token's share of pair probabilities or counts."""
    first = Counter()
    for (x1, _), p in joint.items():
        first[x1] += p
    return first


def chi_square_p_value(counts, probs):
    """P-value of Pearson's chi-square test that ``counts`` were drawn from ``probs`` (both keyed by outcome).

    Rare outcomes are pooled, smallest first, until each bin expects at least 5 draws; an outcome of
    probability 0 that was drawn at all gives 0.
    """
    n = sum(counts.values())
    if any(probs.get(key, 0) == 0 for key in counts):
        return 0.0
    observed, expected = [], []
    o, e = 0, 0.0  # the bin being filled
    for key in sorted(probs, key=probs.get):
        o, e = o + counts[key], e + n * probs[key]
        if e >= 5:
            observed.append(o)
            expected.append(e)
            o, e = 0, 0.0
    observed[-1] += o  # what is left joins the last bin
    expected[-1] += e
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    df = torch.tensor((len(expected) - 1) / 2, dtype=torch.float64)
    return torch.special.gammaincc(df, torch.tensor(statistic / 2, dtype=torch.float64)).item()  # chi² sf


def sample_first_two(run, runs=RUNS):
    g = torch.Generator().manual_seed(1234)
    return Counter(tuple(run(g).new_tokens[0][:2]) for _ in range(runs))


def speculative_run(target, draft, prompt, g):
    # k = 2 and 3 new tokens: the first round drafts 2, so the first two tokens can come from every path
    return speculative_generate(target, draft, prompt, k=2, max_new_tokens=3, generator=g, **SAMPLING)


def lookup_run(target, draft, prompt, g):
    return prompt_lookup_generate(target, prompt, ngram_size=2, num_pred_tokens=2, max_new_tokens=3, generator=g,
                                  **SAMPLING)


SAMPLERS = {  # name: (prompt, run)
    "speculative": (torch.tensor([[1, 2, 3]]), speculative_run),
    # [1, 7] was followed by [6, 1]: that is the guess (the target gives 6 a probability of 0.31)
    "prompt lookup": (torch.tensor([[1, 7, 6, 1, 7]]), lookup_run),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_follows_the_target_distribution(small, sampler):
    target, draft = small
    prompt, run = SAMPLERS[sampler]
    joint = exact_first_two(target, prompt)
    counts = sample_first_two(lambda g: run(target, draft, prompt, g))
    assert chi_square_p_value(marginal(counts), marginal(joint)) > P_MIN
    assert chi_square_p_value(counts, joint) > P_MIN


@pytest.mark.parametrize(
    "bug",
    [
        # always keeping the draft token: tokens follow the draft's q, not the target's p
        lambda monkeypatch: monkeypatch.setattr(speculative, "_accepts", lambda p_x, q_x, rng: True),
        # after a rejection, drawing from p instead of max(0, p - q): too much mass where the draft is high
        lambda monkeypatch: monkeypatch.setattr(speculative, "residual", lambda p, q: p),
    ],
    ids=["always accept", "resample from p"],
)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_chi_square_test_catches_wrong_samplers(small, monkeypatch, sampler, bug):
    """The negative control: the same test, on a quarter of the runs, rejects a sampler with a known bug."""
    target, draft = small
    prompt, run = SAMPLERS[sampler]
    joint = exact_first_two(target, prompt)
    bug(monkeypatch)
    counts = sample_first_two(lambda g: run(target, draft, prompt, g), runs=RUNS // 4)
    assert chi_square_p_value(counts, joint) < P_MIN


def test_same_seed_same_sample(target, drafts):
    runs = [speculative_generate(target, drafts["near"], PROMPT, max_new_tokens=20, do_sample=True, top_p=0.9,
                                 seed=s).new_tokens for s in (3, 3, 4)]
    assert runs[0] == runs[1] != runs[2]


def test_temperature_zero_is_greedy(target, drafts, greedy):
    out = speculative_generate(target, drafts["near"], PROMPT, max_new_tokens=20, do_sample=True, temperature=0)
    assert out.new_tokens == [greedy.new_tokens[0][:20]]


# ---------------------------------------------------------------- bad input, rejected up front


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(k=0), ValueError, r"k must be an integer >= 1, got 0"),
        (dict(k=2.0), TypeError, r"k must be an integer >= 1, got 2.0"),
        (dict(k=True), TypeError, r"k must be an integer >= 1, got True"),
        (dict(temperature=-1.0), ValueError, r"temperature must be a finite number >= 0, got -1.0"),
        (dict(top_k=0), ValueError, r"top_k must be an integer >= 1, got 0"),
        (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\], got 1.5"),
        (dict(max_new_tokens=-1), ValueError, r"max_new_tokens must be an integer >= 0, got -1"),
        (dict(do_sample="yes"), TypeError, r"do_sample must be True or False, got 'yes'"),
        (dict(eos_token_id=60000), ValueError, r"eos_token_id must be token ids in \[0, 50257\), got 60000"),
        (dict(seed=1, generator=torch.Generator()), ValueError, r"pass either seed or generator, not both"),
        (dict(max_new_tokens=125), ValueError,
         r"prompt \(4 tokens\) \+ max_new_tokens \(125\) must fit the target's context of 128 tokens \(block_size\), got 129"),
        (dict(max_new_tokens=61), ValueError,
         r"prompt \(4 tokens\) \+ max_new_tokens \(61\) must fit the draft's context of 64 tokens \(block_size\), got 65"),
        (dict(prompt=torch.tensor([[1, 2], [3, 4]])), ValueError, r"prompt must be a single sequence, a str or \(1, T\) ids, got 2 rows"),
        (dict(prompt=[1, 2]), TypeError, r"prompt must be a str or a \(1, T\) id tensor, got list"),
        (dict(prompt=""), ValueError, r"prompt must contain at least one token, got an empty string"),
    ],
)
def test_bad_speculative_settings(target, drafts, kwargs, error, message):
    kwargs = {"prompt": PROMPT, "max_new_tokens": 5, **kwargs}
    with pytest.raises(error, match=message):
        speculative_generate(target, drafts["other"], **kwargs)


def test_draft_with_another_vocabulary(target):
    draft = GPT(GPTConfig(vocab_size=1000, block_size=128, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ValueError, match=r"draft and target must share a vocabulary, got vocab_size 1000 for the draft and 50257 for the target"):
        speculative_generate(target, draft, PROMPT, max_new_tokens=5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(ngram_size=0), ValueError, r"ngram_size must be an integer >= 1, got 0"),
        (dict(num_pred_tokens=0), ValueError, r"num_pred_tokens must be an integer >= 1, got 0"),
        (dict(num_pred_tokens=1.5), TypeError, r"num_pred_tokens must be an integer >= 1, got 1.5"),
        (dict(top_k=-3), ValueError, r"top_k must be an integer >= 1, got -3"),
        (dict(max_new_tokens=125), ValueError,
         r"prompt \(4 tokens\) \+ max_new_tokens \(125\) must fit the model's context of 128 tokens \(block_size\), got 129"),
    ],
)
def test_bad_prompt_lookup_settings(target, kwargs, error, message):
    kwargs = {"max_new_tokens": 5, **kwargs}
    with pytest.raises(error, match=message):
        prompt_lookup_generate(target, PROMPT, **kwargs)


def test_models_in_train_mode_decode_without_dropout_and_keep_their_mode():
    target = GPT(GPTConfig.from_preset("tiny", dropout=0.5))
    draft = GPT(GPTConfig.from_preset("tiny", dropout=0.5))
    expected = speculative_generate(target.eval(), draft.eval(), "Hi there", k=3, max_new_tokens=8).new_tokens
    target.train(), draft.train()
    assert speculative_generate(target, draft, "Hi there", k=3, max_new_tokens=8).new_tokens == expected
    assert prompt_lookup_generate(target, "Hi there", max_new_tokens=8).new_tokens == \
        prompt_lookup_generate(target.eval(), "Hi there", max_new_tokens=8).new_tokens
    target.train()
    prompt_lookup_generate(target, "Hi there", max_new_tokens=2)
    assert target.training and draft.training


def test_end_of_text_in_a_prompt_needs_allow_special():
    model = GPT(GPTConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="allow_special=True"):
        speculative_generate(model, model, "a<|endoftext|>b", max_new_tokens=2)
    out = prompt_lookup_generate(model, "a<|endoftext|>b", max_new_tokens=2, allow_special=True)
    assert len(out.new_tokens[0]) == 2
