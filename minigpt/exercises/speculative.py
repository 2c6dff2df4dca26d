"""Checkers for chapter 8, speculative decoding (``notebooks/exercises/08_speculative_decoding_exercises.ipynb``).

Four exercises: the greedy verification of a round of drafts, the two pieces of the sampling version
(the probability of accepting a draft token, the distribution to draw from after a rejection), and the
whole speculative sampling loop, checked token for token against ``minigpt.speculative`` and by the
chi-square test of chapter 8.

>>> result = check_accept_probability(lambda p_x, q_x: p_x / q_x)
✗ accept_probability: hidden case 2 of 7 fails (the target likes x more than the draft: probability 1, not 2)
  p_x = 0.6, q_x = 0.3
  wrong value
  expected: 1.0
  got:      2.0
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from minigpt.exercises.checking import Case, CheckResult, cases_for, check, compare_values, show
from minigpt.exercises.models import TOY_MODEL, toy_model
from minigpt.model import GPT, GPTConfig
from minigpt.speculative import residual, speculative_generate, verify_greedy


def check_verify_greedy(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``verify_greedy(drafts, target_logits)`` against ``minigpt.speculative``.

    ``drafts`` are the m tokens the draft proposed; ``target_logits`` (m + 1, V) the target's logits after
    the sequence and after each prefix of the drafts (row i scores the token at draft position i). Keep the
    drafts while each is the target's argmax; at the first miss, or after the last draft, add the
    target's own argmax. Return the kept tokens as a list: between 1 and m + 1 of them. A ``seed`` draws
    the drafts and logits instead.

    >>> def verify_greedy(drafts, target_logits):
    ...     best = target_logits.argmax(dim=-1).tolist()
    ...     n = 0
    ...     while n < len(drafts) and drafts[n] == best[n]:
    ...         n += 1
    ...     return drafts[:n] + [best[n]]
    >>> result = check_verify_greedy(verify_greedy)
    ✓ verify_greedy: all 5 hidden cases pass
    """
    return check("verify_greedy", student, verify_greedy, cases_for(seed, _verify_cases, _drawn_verify_cases))


def _verify_cases() -> list[Case]:
    settings = [
        ([3, 1, 2], [3, 1, 2, 0], "every draft is the target's choice: keep them all, plus the target's next "
         "token as a bonus"),
        ([3, 1, 2], [3, 4, 2, 0], "the first miss ends the round: the target's token replaces it, and later "
         "drafts are dropped even when they match"),
        ([5, 1], [2, 1, 0], "the first draft is wrong: the round still yields one token, the target's"),
        ([], [4], "no drafts: one token, the target's greedy choice"),
    ]
    cases = [Case((drafts, _logits_preferring(best)), why) for drafts, best, why in settings]
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(8))
    best = logits.argmax(dim=-1).tolist()
    drafts = best[:2] + [(best[2] + 1) % 8, best[3]]  # the third draft misses
    cases.append(Case((drafts, logits), "random logits: the third draft misses"))
    return cases


def _drawn_verify_cases(g: torch.Generator) -> list[Case]:
    m = _randint(g, 3, 5)
    miss = _randint(g, 1, m - 2)  # a miss with at least one matching draft after it
    best = [_tokens(g, m + 1) for _ in range(3)]
    missed = best[1][:miss] + [(best[1][miss] + 1) % 8] + best[1][miss + 1 : m]  # the close second at the miss
    first_wrong = [(best[2][0] + 1) % 8] + best[2][1:m]
    vocabulary = _randint(g, 8, 12)
    logits = (3 * torch.randn(m + 1, vocabulary, generator=g)).round(decimals=2)
    random_best = logits.argmax(dim=-1).tolist()
    late = _randint(g, 1, m - 1)
    random_drafts = random_best[:late] + [(random_best[late] + 1) % vocabulary] + random_best[late + 1 : m]
    return [
        Case((best[0][:m], _logits_preferring(best[0])), f"every one of the {m} drafts is the target's choice: keep "
             "them all, plus the target's next token as a bonus"),
        Case((missed, _logits_preferring(best[1])), f"draft {miss + 1} is the first miss and ends the round: the "
             "target's token replaces it, and later drafts are dropped even when they match"),
        Case((first_wrong, _logits_preferring(best[2])), "the first draft is wrong: the round still yields one "
             "token, the target's"),
        Case(([], _logits_preferring(_tokens(g, 1))), "no drafts: one token, the target's greedy choice"),
        Case((random_drafts, logits), f"random logits: draft {late + 1} misses"),
    ]


def _tokens(g: torch.Generator, n: int) -> list[int]:
    """``n`` token ids of the vocabulary of 8 that ``_logits_preferring`` writes."""
    return torch.randint(0, 8, (n,), generator=g).tolist()


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An int in [low, high], both included, drawn from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _logits_preferring(tokens: list[int]) -> torch.Tensor:
    """Readable (len(tokens), 8) logits: row i's best token is ``tokens[i]``, the next id a close second."""
    logits = torch.zeros(len(tokens), 8)
    rows = torch.arange(len(tokens))
    logits[rows, (torch.tensor(tokens) + 1) % 8] = 1.0
    logits[rows, tokens] = 2.0
    return logits


def check_accept_probability(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``accept_probability(p_x, q_x)``: how likely the target keeps a draft token x.

    ``p_x`` is the target's probability of x, ``q_x`` the draft's (x was drawn from the draft, so q_x > 0).
    Speculative sampling keeps x with probability min(1, p_x / q_x); return it as a float. A ``seed`` draws
    the probabilities instead.

    >>> result = check_accept_probability(lambda p_x, q_x: min(1.0, p_x / q_x))
    ✓ accept_probability: all 7 hidden cases pass
    """
    cases = cases_for(seed, _accept_cases, _drawn_accept_cases)
    return check("accept_probability", student, _accept_probability, cases)


def _accept_cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)
    cases = [
        Case((0.2, 0.5), "the target likes x less than the draft: keep it with probability p/q = 0.4"),
        Case((0.6, 0.3), "the target likes x more than the draft: probability 1, not 2"),
        Case((0.3, 0.3), "target and draft agree: always keep x"),
        Case((0.0, 0.25), "the target would never produce x: always reject it"),
    ]
    return cases + [Case(tuple(torch.rand(2, generator=g).tolist()), "random probabilities") for _ in range(3)]


def _drawn_accept_cases(g: torch.Generator) -> list[Case]:
    low, high = sorted(_percents(g, 2, 5, 95, distinct=True))
    less, more = sorted(_percents(g, 2, 5, 95, distinct=True))
    same = _percents(g, 1, 5, 95)[0]
    never = _percents(g, 1, 5, 95)[0]
    return [
        Case((low, high), f"the target likes x less than the draft: keep it with probability p/q = {low / high:.4g}"),
        Case((more, less), f"the target likes x more than the draft: probability 1, not {more / less:.4g}"),
        Case((same, same), "target and draft agree: always keep x"),
        Case((0.0, never), "the target would never produce x: always reject it"),
        *(Case(tuple(_percents(g, 2, 1, 99)), "random probabilities") for _ in range(3)),
    ]


def _percents(g: torch.Generator, n: int, low: int, high: int, *, distinct: bool = False) -> list[float]:
    """``n`` probabilities in [low %, high %] with 2 decimals, readable in a message; all different if ``distinct``."""
    while True:
        values = [_randint(g, low, high) / 100 for _ in range(n)]
        if not distinct or len(set(values)) == n:
            return values


def _accept_probability(p_x: float, q_x: float) -> float:
    # minigpt.speculative draws u uniform in [0, 1) and keeps x when u * q_x < p_x: P = min(1, p_x / q_x)
    return min(1.0, p_x / q_x)


def check_residual_distribution(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``residual_distribution(p, q)`` against ``minigpt.speculative``: what to draw from after a rejection.

    ``p`` and ``q`` are (V,) probabilities, the target's and the draft's. Return max(p - q, 0), the mass the
    target has and the draft lacks, divided by its sum so it adds up to 1. When nothing is left over (p
    equals q), return ``p``. A ``seed`` draws the distributions instead.

    >>> def residual_distribution(p, q):
    ...     leftover = (p - q).clamp(min=0)
    ...     return leftover / leftover.sum() if leftover.sum() > 0 else p
    >>> result = check_residual_distribution(residual_distribution)
    ✓ residual_distribution: all 6 hidden cases pass
    """
    cases = cases_for(seed, _residual_cases, _drawn_residual_cases)
    return check("residual_distribution", student, _residual_distribution, cases, atol=1e-5)


def _residual_cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)
    cases = [
        Case((torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.3, 0.5, 0.2])), "p - q = [0.2, -0.2, 0.0]: the "
             "negative entry becomes 0, then [0.2, 0, 0] is divided by its sum"),
        Case((torch.tensor([0.4, 0.4, 0.1, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])), "the leftover "
             "[0.3, 0.2, 0, 0] must add up to 1"),
        Case((torch.tensor([0.1, 0.0, 0.9]), torch.tensor([0.0, 0.5, 0.5])), "a token the draft never "
             "proposes keeps all its target probability in the leftover"),
    ]
    cases += [Case((_random_distribution(g), _random_distribution(g)), "random distributions") for _ in range(2)]
    cases.append(Case((torch.tensor([0.25, 0.75]), torch.tensor([0.25, 0.75])), "p equals q: nothing is left "
                      "over, return p"))
    return cases


def _drawn_residual_cases(g: torch.Generator) -> list[Case]:
    three = _different_pair(g, 3)
    four = _different_pair(g, 4)
    p, q = _different_pair(g, _randint(g, 3, 5))
    never = _randint(g, 0, p.numel() - 1)
    q[(never + 1) % q.numel()] += q[never]  # the draft never proposes this token: its mass moves to the next
    q[never] = 0.0
    same = _readable_distribution(g, _randint(g, 2, 4))
    return [
        Case(three, f"p - q = {show(three[0] - three[1])}: the negative entries become 0, then the rest is divided "
             "by its sum"),
        Case(four, f"the leftover {show((four[0] - four[1]).clamp(min=0))} must add up to 1"),
        Case((p, q), f"token {never}, which the draft never proposes, keeps all its target probability in the "
             "leftover"),
        *(Case((_random_distribution(g), _random_distribution(g)), "random distributions") for _ in range(2)),
        Case((same, same.clone()), "p equals q: nothing is left over, return p"),
    ]


def _readable_distribution(g: torch.Generator, n: int) -> torch.Tensor:
    """(n,) probabilities in hundredths that sum to 1, none of them 0."""
    cuts = torch.randperm(99, generator=g)[: n - 1].add(1).sort().values.tolist()  # n - 1 cuts in 1 … 99
    return torch.tensor([b - a for a, b in zip([0, *cuts], [*cuts, 100])]) / 100


def _different_pair(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two readable (n,) distributions that differ: p - q has a negative entry and a positive one."""
    while True:
        p, q = _readable_distribution(g, n), _readable_distribution(g, n)
        if (p - q).abs().max() >= 0.05:
            return p, q


def _residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    leftover = residual(p, q)  # unnormalised, as torch.multinomial takes it
    return leftover / leftover.sum()


def _random_distribution(g: torch.Generator) -> torch.Tensor:
    return (torch.randn(8, generator=g) * 2).softmax(-1)


# ---- exercise 4: the whole speculative sampling loop ----

RUNS = 150  # runs of the loop whose first new tokens the chi-square test counts (chapter 8 ran 400)
P_VALUE = 1e-6  # below it the counts are not the target's: a correct loop fails with this probability
TINY = GPTConfig(vocab_size=6, block_size=8, n_layer=1, n_head=1, n_embd=8)  # for the chi-square cases
TINY_MODEL = "a random GPT (vocabulary of 6 tokens, 1 layer, 1 head, width 8, context of 8 tokens)"


def check_speculative_sample(student: Callable, *, seed: int | None = None) -> CheckResult:
    """Check ``speculative_sample(target, draft, prompt_ids, max_new_tokens, k, generator)`` against the library.

    Continue the (1, T) ``prompt_ids`` by speculative sampling until ``max_new_tokens`` new tokens, drawing
    every random number from ``generator`` in ``minigpt.speculative.speculative_generate``'s order. Each
    round drafts m = min(k, tokens still to make - 1) tokens, one ``torch.multinomial(q_i, 1,
    generator=generator)`` each from the draft's softmax q_i; one target pass gives p (m + 1, V); each draft
    x_i in turn is kept when ``torch.rand((), generator=generator) * q_i[x_i] < p_i[x_i]`` (probability
    min(1, p/q)); the first rejected one is replaced by a draw from max(p_i - q_i, 0) and ends the round;
    when all m are kept, a bonus token is drawn from p_m. Return the (1, T + max_new_tokens) ids.

    Two kinds of case: the first new token of ``RUNS`` runs must follow the target's distribution (the
    chi-square test of chapter 8, on two tiny models with 6 tokens), and each single run must give the
    library's tokens. A ``seed`` draws the models, prompts and generator seeds instead.

    >>> def always_keep(target, draft, prompt_ids, max_new_tokens, k, generator):
    ...     ids = prompt_ids  # the draft's own samples, never checked by the target: q, not p
    ...     for _ in range(max_new_tokens):
    ...         q = draft(ids)[0, -1].softmax(dim=-1)
    ...         ids = torch.cat([ids, torch.multinomial(q, 1, generator=generator)[None]], dim=1)
    ...     return ids
    >>> result = check_speculative_sample(always_keep)  # doctest: +ELLIPSIS
    ✗ speculative_sample: hidden case 1 of 6 fails (the first new token of 150 runs must follow the target's p, ...
    ...
    """
    cases = cases_for(seed, _speculative_cases, _drawn_speculative_cases)
    return check("speculative_sample", _counting(student), _counting(_speculative_sample), cases,
                 compare=_compare_speculative)


def _speculative_sample(
    target: GPT, draft: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, k: int, generator: torch.Generator
) -> torch.Tensor:
    return speculative_generate(target, draft, prompt_ids, k=k, max_new_tokens=max_new_tokens, do_sample=True,
                                generator=generator).ids


def _counting(sampler: Callable) -> Callable:
    """``sampler``, or with ``runs``, how often each token came first in that many runs (the chi-square cases).

    The reference's answer for such a case is the target's own distribution of the first new token.
    """

    def run(
        target: GPT, draft: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, k: int, generator: torch.Generator,
        runs: int | None = None,
    ) -> torch.Tensor:
        if runs is None:
            return sampler(target, draft, prompt_ids, max_new_tokens, k, generator)
        if sampler is _speculative_sample:
            with torch.no_grad():
                return target(prompt_ids)[0, -1].double().softmax(dim=-1)  # (V,) the target's p
        firsts = [int(sampler(target, draft, prompt_ids, max_new_tokens, k, generator)[0, prompt_ids.size(1)])
                  for _ in range(runs)]
        return torch.bincount(torch.tensor(firsts), minlength=target.config.vocab_size)

    return run


def _compare_speculative(expected: torch.Tensor, got: object, atol: float) -> str | None:
    """A chi-square verdict when ``expected`` is the target's distribution (float64), else token equality."""
    if expected.dtype != torch.float64:
        problem = compare_values(expected, got, atol)
        if problem is None:
            return None
        return (f"{problem}: not the library's tokens. Draw in its order, all from the generator: the m drafts, "
                "then one torch.rand per draft checked, then one multinomial (the residual, or the bonus)")
    p_value = chi_square_p_value(got, expected)
    if p_value >= P_VALUE:
        return None
    return (f"the first new tokens of {int(got.sum())} runs are not drawn from the target's p: chi-square p-value "
            f"{p_value:.1e} < {P_VALUE:g}. Keep a draft x with probability min(1, p(x)/q(x)); after a rejection "
            "draw from max(p - q, 0), not from p or q")


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """P-value of Pearson's chi-square test that ``counts`` (V,) were drawn from ``probs`` (V,), as chapter 8 runs it.

    Rare tokens are pooled, least likely first, until each bin expects at least 5 draws; a token of
    probability 0 that was drawn at all gives 0.

    >>> chi_square_p_value(torch.tensor([50, 50]), torch.tensor([0.5, 0.5]))
    1.0
    >>> chi_square_p_value(torch.tensor([90, 10]), torch.tensor([0.5, 0.5])) < 1e-6
    True
    """
    n = counts.sum().item()
    if (counts[probs == 0] > 0).any():
        return 0.0
    order = torch.argsort(probs)
    observed, expected, o, e = [], [], 0, 0.0  # o, e: the bin being filled
    for count, prob in zip(counts[order].tolist(), probs[order].tolist()):
        o, e = o + count, e + n * prob
        if e >= 5:
            observed, expected, o, e = observed + [o], expected + [e], 0, 0.0
    observed[-1], expected[-1] = observed[-1] + o, expected[-1] + e  # what is left joins the last bin
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    df = torch.tensor((len(expected) - 1) / 2, dtype=torch.float64)  # the chi-square survival function
    return torch.special.gammaincc(df, torch.tensor(statistic / 2, dtype=torch.float64)).item()


def _speculative_cases() -> list[Case]:
    target = toy_model(seed=7)
    g = torch.Generator().manual_seed(8)
    settings = [
        (target, _noisy_copy(target, g, 0.3), [[1, 2, 3, 4]], 12, 3, 0, "a draft close to the target: some drafts "
         "kept, some rejected and replaced from the residual"),
        (target, target, [[1, 2, 3, 4]], 12, 4, 1, "the draft is the target: every draft is kept, and each round "
         "ends with a bonus token drawn from the target's last row"),
        (target, toy_model(seed=8), [[5, 6]], 10, 2, 2, "a draft unlike the target: most drafts are rejected"),
        (target, _noisy_copy(target, g, 0.3), [[9]], 6, 8, 3, "k = 8 but only 6 new tokens: a round drafts at "
         "most (tokens still to make - 1), so the last round drafts none and draws from p"),
        (target, _noisy_copy(target, g, 0.2), [[1, 2, 3, 4]], 20, 1, 4, "k = 1: one draft per round"),
    ]
    return [_chi_square_case(*_tiny_pair(torch.Generator().manual_seed(6)), 0),
            *(_speculative_case(*setting) for setting in settings)]


def _drawn_speculative_cases(g: torch.Generator) -> list[Case]:
    target = toy_model(seed=_randint(g, 0, 2**31))
    new, k = _randint(g, 10, 14), _randint(g, 2, 4)
    short = _randint(g, 4, 6)
    settings = [
        (target, _noisy_copy(target, g, 0.3), _prompt(g), new, k, "a draft close to the target: some drafts kept, "
         "some rejected and replaced from the residual"),
        (target, target, _prompt(g), new, k + 1, "the draft is the target: every draft is kept, and each round ends "
         "with a bonus token drawn from the target's last row"),
        (target, toy_model(seed=_randint(g, 0, 2**31)), _prompt(g), new, k, "a draft unlike the target: most drafts "
         "are rejected"),
        (target, _noisy_copy(target, g, 0.3), _prompt(g), short, short + 2, f"k = {short + 2} but only {short} new "
         "tokens: a round drafts at most (tokens still to make - 1), so the last round drafts none and draws from p"),
        (target, _noisy_copy(target, g, 0.2), _prompt(g), 20, 1, "k = 1: one draft per round"),
    ]
    seeds = [_randint(g, 0, 2**31) for _ in settings]
    chi_square = _chi_square_case(*_tiny_pair(g), _randint(g, 0, 2**31))
    return [chi_square, *(_speculative_case(*setting[:5], seed, setting[5]) for setting, seed in zip(settings, seeds))]


def _prompt(g: torch.Generator) -> list[list[int]]:
    return torch.randint(0, 64, (1, _randint(g, 1, 6)), generator=g).tolist()


def _noisy_copy(model: GPT, g: torch.Generator, scale: float) -> GPT:
    """A draft that mostly agrees with ``model``: its weights plus noise of standard deviation ``scale``."""
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return draft


def _speculative_case(
    target: GPT, draft: GPT, prompt: list[list[int]], new: int, k: int, seed: int, why: str
) -> Case:
    ids = torch.tensor(prompt)
    shown = (f"target = {TOY_MODEL}, draft = {'the target' if draft is target else 'another one'}, prompt_ids = "
             f"{show(ids)}, max_new_tokens = {new}, k = {k}, generator seeded with {seed}")
    return Case((target, draft, ids, new, k, torch.Generator().manual_seed(seed)), why, shown=shown)


def _tiny_pair(g: torch.Generator) -> tuple[GPT, GPT, torch.Tensor]:
    """A tiny target and draft, and a prompt after which their next-token distributions p and q differ a lot.

    The target's weights are smaller than the draft's, so p is flatter than q. Far enough apart that keeping
    every draft (which gives q) is expected to score a chi-square statistic of at least 150 in ``RUNS`` runs,
    far past the cut-off, while every token keeps some probability under p.
    """
    while True:
        target, draft = _tiny_model(g, 0.5), _tiny_model(g, 1.5)
        ids = torch.randint(0, TINY.vocab_size, (1, _randint(g, 1, 4)), generator=g)
        with torch.no_grad():
            p, q = (model(ids)[0, -1].double().softmax(dim=-1) for model in (target, draft))
        if p.min() > 0.01 and RUNS * ((q - p) ** 2 / p).sum() >= 150:
            return target, draft, ids


def _tiny_model(g: torch.Generator, std: float) -> GPT:
    with torch.random.fork_rng(devices=[]):  # GPT's own init draws from the global generator: give it back
        model = GPT(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std, generator=g)
    return model


def _chi_square_case(target: GPT, draft: GPT, ids: torch.Tensor, seed: int) -> Case:
    shown = (f"target = {TINY_MODEL}, draft = another one, prompt_ids = {show(ids)}, max_new_tokens = 2, k = 1, "
             f"generator seeded with {seed}, {RUNS} runs")
    why = (f"the first new token of {RUNS} runs must follow the target's p, whatever the draft's q: with k = 1 and "
           "2 new tokens, the first round drafts one token, which goes through accept-or-resample")
    return Case((target, draft, ids, 2, 1, torch.Generator().manual_seed(seed)), why, shown=shown,
                kwargs={"runs": RUNS})
