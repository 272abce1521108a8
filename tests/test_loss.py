import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardcollapse import utility
from rewardcollapse.loss import RankingLoss, centering_penalty, loss_items, pair_matrix, ranking_loss

SPECS = ["x", "log", "-1/x", "x^0.5", "-x^-0.5", "logsigmoid"]


def reference_loss(rewards, ranks, mask, specs, *, normalize="sigmoid", eps=0.1):
    """The loss written out with Python loops over prompts and pairs, in float64 numpy."""
    per_prompt = []
    for b in range(rewards.shape[0]):
        s = 1 / (1 + np.exp(-rewards[b])) if normalize == "sigmoid" else rewards[b]
        spec = specs[b]
        u = utility(spec, eps=0.0 if spec in ("x", "logsigmoid") else eps)
        terms = [
            float(u(s[i] - s[j]))
            for i in range(rewards.shape[1])
            for j in range(rewards.shape[1])
            if mask[b, i] and mask[b, j] and ranks[b, i] < ranks[b, j]
        ]
        if terms:
            per_prompt.append(-sum(terms) / len(terms))
    return float(np.mean(per_prompt))


def random_batch(rng, batch=6, k=5):
    rewards = rng.normal(scale=2.0, size=(batch, k))
    ranks = rng.integers(0, 3, size=(batch, k))  # many ties
    mask = rng.random((batch, k)) > 0.25
    mask[:, :2] = True
    return rewards, ranks, mask


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("normalize", ["sigmoid", "none"])
def test_matches_numpy_reference_with_ties_and_masks(spec, normalize):
    rng = np.random.default_rng(0)
    rewards, ranks, mask = random_batch(rng)
    got = ranking_loss(
        torch.tensor(rewards),
        utility=spec,
        ranks=torch.tensor(ranks),
        mask=torch.tensor(mask),
        normalize=normalize,
    )
    want = reference_loss(rewards, ranks, mask, [spec] * len(rewards), normalize=normalize)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_per_prompt_specs_match_reference_and_separate_calls():
    rng = np.random.default_rng(1)
    rewards, ranks, mask = random_batch(rng, batch=8)
    specs = ["x", "-1/x", "log", "x", "-1/x", "x^0.5", "logsigmoid", "x"]
    args = {"ranks": torch.tensor(ranks), "mask": torch.tensor(mask)}
    got = ranking_loss(torch.tensor(rewards), utilities=specs, **args, reduction="none")
    for b, spec in enumerate(specs):
        alone = ranking_loss(
            torch.tensor(rewards[b : b + 1]),
            utility=spec,
            ranks=args["ranks"][b : b + 1],
            mask=args["mask"][b : b + 1],
            reduction="none",
        )
        assert got[b].item() == pytest.approx(alone.item(), abs=1e-14)
    mean = ranking_loss(torch.tensor(rewards), utilities=specs, **args)
    assert mean.item() == pytest.approx(reference_loss(rewards, ranks, mask, specs), rel=1e-12)


@pytest.mark.parametrize(("family", "spec_of"), [("x^a", "x^{}"), ("-x^-a", "-x^-{}"), ("logsigmoid", None)])
def test_per_prompt_parameter_tensor(family, spec_of):
    rng = np.random.default_rng(2)
    rewards, ranks, mask = random_batch(rng, batch=4)
    values = [0.2, 0.5, 0.9, 0.7] if family != "logsigmoid" else [0.5, 1.0, 2.0, 4.0]
    got = ranking_loss(
        torch.tensor(rewards),
        utilities=torch.tensor(values, dtype=torch.float64),
        family=family,
        ranks=torch.tensor(ranks),
        mask=torch.tensor(mask),
        reduction="none",
    )
    for b, value in enumerate(values):
        spec = utility("logsigmoid", scale=value) if spec_of is None else spec_of.format(value)
        one = ranking_loss(
            torch.tensor(rewards[b : b + 1]),
            utility=spec,
            ranks=torch.tensor(ranks[b : b + 1]),
            mask=torch.tensor(mask[b : b + 1]),
            reduction="none",
        )
        assert got[b].item() == pytest.approx(one.item(), rel=1e-12, abs=1e-14)


def test_bradley_terry_equivalence_with_trl_loss():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(64) * 3, torch.randn(64) * 3
    ours = ranking_loss(torch.stack([chosen, rejected], dim=1), utility="logsigmoid", normalize="none")
    trl = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    assert abs(ours.item() - trl.item()) < 1e-6


def test_module_matches_function():
    rng = np.random.default_rng(3)
    rewards, ranks, mask = random_batch(rng)
    r, k, m = torch.tensor(rewards), torch.tensor(ranks), torch.tensor(mask)
    module = RankingLoss("-1/x", eps=0.05, reduction="sum")
    assert "utility='-1/x'" in repr(module)
    assert module(r, k, m).item() == ranking_loss(r, utility="-1/x", ranks=k, mask=m, eps=0.05, reduction="sum").item()
    specs = ["x"] * 3 + ["log"] * 3
    assert module(r, k, m, utilities=specs).item() == pytest.approx(
        ranking_loss(r, utilities=specs, ranks=k, mask=m, eps=0.05, reduction="sum").item()
    )


def test_pairs_give_partial_orders_and_match_ranks():
    rewards = torch.tensor([[0.3, -1.0, 2.0, 0.1]], dtype=torch.float64)
    ranks = torch.tensor([[0, 1, 1, 2]])
    from_ranks = ranking_loss(rewards, utility="log", ranks=ranks)
    from_pairs = ranking_loss(rewards, utility="log", pairs=pair_matrix(ranks))
    assert from_pairs.item() == from_ranks.item()
    # A partial order: 0 above 1 and 2 above 3 only.
    pairs = torch.zeros(1, 4, 4, dtype=torch.bool)
    pairs[0, 0, 1] = pairs[0, 2, 3] = True
    s = torch.sigmoid(rewards[0])
    u = utility("log", eps=0.1)
    want = -(u(s[0] - s[1]) + u(s[2] - s[3])) / 2
    assert ranking_loss(rewards, utility="log", pairs=pairs).item() == pytest.approx(want.item(), rel=1e-14)


def test_default_order_is_column_order_and_reductions():
    rewards = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    none = ranking_loss(rewards, utility="x", normalize="none", reduction="none")
    assert none.tolist() == pytest.approx([-4 / 3, 0.0])
    assert ranking_loss(rewards, utility="x", normalize="none", reduction="sum").item() == pytest.approx(-4 / 3)
    assert ranking_loss(rewards, utility="x", normalize="none").item() == pytest.approx(-2 / 3)


def test_prompts_without_pairs_are_left_out_of_the_mean():
    rewards = torch.tensor([[2.0, 0.0], [5.0, -5.0]], requires_grad=True)
    ranks = torch.tensor([[0, 1], [0, 0]])  # prompt 1 all tied
    loss = ranking_loss(rewards, utility="x", ranks=ranks)
    assert loss.item() == pytest.approx(-(torch.sigmoid(torch.tensor(2.0)) - 0.5).item())
    all_tied = ranking_loss(rewards, utility="x", ranks=torch.zeros(2, 2, dtype=torch.long))
    all_tied.backward()
    assert all_tied.item() == 0.0 and rewards.grad is not None


def test_bf16_rewards_are_computed_in_float32():
    rewards = torch.tensor([[1.0, 0.5, -0.25]], dtype=torch.bfloat16)
    assert ranking_loss(rewards, utility="log").dtype == torch.float32


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("eps", [0.1, 1e-6])
def test_gradients_finite_at_extremes(spec, eps):
    # Saturated sigmoids, exactly equal scores, misordered pairs, and a tiny eps.
    rewards = torch.tensor([[60.0, 60.0, -60.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-30.0, 30.0, 1e-7, 0.0]])
    rewards.requires_grad_(True)
    loss = ranking_loss(rewards, utility=spec, eps=eps, mask=torch.ones(3, 4, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(rewards.grad).all()


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(2, 6),
    scale=st.floats(0.01, 50.0),
    spec=st.sampled_from(SPECS),
    seed=st.integers(0, 10_000),
)
def test_loss_finite_and_improves_when_order_is_respected(k, scale, spec, seed):
    torch.manual_seed(seed)
    raw = torch.randn(3, k, dtype=torch.float64) * scale
    ordered = raw.sort(dim=1, descending=True).values
    reversed_ = ordered.flip(1)
    good = ranking_loss(ordered, utility=spec, reduction="none")
    bad = ranking_loss(reversed_, utility=spec, reduction="none")
    assert torch.isfinite(good).all() and torch.isfinite(bad).all()
    # U is increasing, so respecting the ranking never costs more than reversing it.
    assert (good <= bad + 1e-12).all()


def test_descending_loss_moves_scores_into_order():
    rewards = torch.zeros(1, 4, requires_grad=True)
    optimizer = torch.optim.SGD([rewards], lr=1.0)
    for _ in range(200):
        optimizer.zero_grad()
        ranking_loss(rewards, utility="log").backward()
        optimizer.step()
    assert (rewards[0, :-1] > rewards[0, 1:]).all()


def test_matches_the_optimal_rewards_of_the_solver():
    # With free rewards in [0, 1] (normalize="none"), minimising the loss with eps -> 0 gives the solver's optimum.
    from rewardcollapse import optimal_rewards

    logits = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = ranking_loss(logits.sigmoid(), utility="-1/x", normalize="none", eps=1e-9)
        loss.backward()
        return loss

    ramp = torch.linspace(2.0, -2.0, 5, dtype=torch.float64)
    with torch.no_grad():
        logits += ramp
    optimizer.step(closure)
    got = logits.sigmoid().detach().numpy()[0]
    want = optimal_rewards(5, "-1/x").rewards
    assert np.max(np.abs(got - want)) < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"utility": "log", "normalize": "softmax"}, ValueError, "`normalize` must be"),
        ({"utility": "log", "normalize": None}, ValueError, "got None; write 'none' for raw scores"),
        ({"utility": "log", "reduction": "max"}, ValueError, "`reduction` must be"),
        ({"utility": "log", "eps": 0.0}, ValueError, "`eps` must be > 0 for utility 'log'"),
        ({"utility": "cubic"}, ValueError, "unknown utility spec"),
        ({"utilities": ["x"]}, ValueError, "has 1 entries but the batch has 2"),
        ({"utility": 3}, TypeError, "`utility` must be a spec"),
        ({"utility": ["x", "log"]}, TypeError, "`utility` must be a spec.*give one per prompt as `utilities`"),
        ({"utilities": "x"}, TypeError, "`utilities` must be a sequence.*give one utility for every prompt as"),
        ({"utility": "x", "utilities": ["x", "x"]}, ValueError, "give `utility`.* or `utilities`.*got both"),
        ({}, ValueError, "give `utility`.* or `utilities`.*got neither"),
        ({"utilities": ["x", 1]}, TypeError, "each utility must be"),
        ({"utilities": torch.tensor([0.5, 0.5])}, ValueError, "needs `family`"),
        ({"utility": "x", "family": "x^a"}, ValueError, "only used with a per-prompt tensor"),
        ({"utilities": ["x", "x"], "family": "x^a"}, ValueError, "only used with a per-prompt tensor"),
        ({"utilities": torch.tensor([0.5, 0.5]), "family": "log"}, ValueError, "`family` must be one of"),
        ({"utilities": torch.tensor([0.5, 1.5]), "family": "x^a"}, ValueError, r"must lie in \(0, 1\), got 1.5"),
        ({"utilities": torch.tensor([0.5]), "family": "x^a"}, ValueError, r"shape \(2,\)"),
        ({"utility": "x", "ranks": torch.tensor([[0.0, 1.0], [0.0, 1.0]])}, ValueError, "`ranks` must be an integer"),
        ({"utility": "x", "mask": torch.ones(2, 3, dtype=torch.bool)}, ValueError, "`mask` must be a bool"),
        ({"utility": "x", "pairs": torch.ones(2, 2)}, ValueError, "`pairs` must be a bool"),
        (
            {"utility": "x", "pairs": torch.ones(2, 2, 2, dtype=torch.bool), "ranks": torch.zeros(2, 2, dtype=int)},
            ValueError,
            "not both",
        ),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        ranking_loss(torch.zeros(2, 2), **kwargs)


def test_rewards_must_be_2d():
    with pytest.raises(ValueError, match=r"`rewards` must be a \(batch, K\) tensor"):
        ranking_loss(torch.zeros(3), utility="x")
    with pytest.raises(ValueError, match="got list"):
        ranking_loss([[0.0, 1.0]], utility="x")


def test_pair_matrix_is_strict_order():
    ranks = torch.tensor([[2, 0, 1, 0]])
    above = pair_matrix(ranks, torch.tensor([[True, True, True, False]]))[0]
    assert above.sum().item() == 3  # 1 above 2, 1 above 0, 2 above 0; answer 3 is masked
    assert not (above & above.T).any()
    assert math.isclose(above.float().trace().item(), 0.0)


@pytest.mark.parametrize("pair_weighting", ["pair", "prompt"])
def test_sums_over_split_batches_divided_by_their_items_are_the_whole_batchs_mean(pair_weighting):
    # What data parallelism and gradient accumulation rely on: parts of a batch holding unequal numbers of pairs
    # (rankings of 2 to 4 answers, one prompt with none) give the whole batch's mean as sum over parts / items.
    torch.manual_seed(0)
    rewards = torch.randn(5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    pairs = pair_matrix(torch.tensor([[0, 1, 2, 3]] * 5), mask)
    margins = torch.rand(5, 4, 4, dtype=torch.float64)
    settings = {"utility": "logsigmoid", "normalize": "none", "pair_weighting": pair_weighting}
    whole_loss = ranking_loss(rewards, pairs=pairs, mask=mask, margins=margins, **settings)
    whole_centring = centering_penalty(rewards, pairs, pair_weighting=pair_weighting)
    parts = [slice(0, 1), slice(1, 4), slice(4, 5)]
    items = sum(loss_items(pairs[p], mask=mask[p], pair_weighting=pair_weighting) for p in parts)
    assert int(items) == {"pair": 1 + 6 + 3 + 0 + 6, "prompt": 4}[pair_weighting]
    summed = [
        ranking_loss(rewards[p], pairs=pairs[p], mask=mask[p], margins=margins[p], reduction="sum", **settings)
        for p in parts
    ]
    assert float(sum(summed) / items) == pytest.approx(float(whole_loss), abs=1e-12)
    centring = [centering_penalty(rewards[p], pairs[p], pair_weighting=pair_weighting, reduction="sum") for p in parts]
    assert float(sum(centring) / items) == pytest.approx(float(whole_centring), abs=1e-12)


def test_centering_penalty_and_loss_items_name_bad_arguments():
    pairs = pair_matrix(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="`reduction` must be 'mean' or 'sum', got 'none'"):
        centering_penalty(torch.zeros(1, 2), pairs, reduction="none")
    with pytest.raises(ValueError, match="`pair_weighting` must be one of"):
        centering_penalty(torch.zeros(1, 2), pairs, pair_weighting="row")
    with pytest.raises(ValueError, match="`pair_weighting` must be one of"):
        loss_items(pairs, pair_weighting="row")
