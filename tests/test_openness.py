import itertools

import datasets
import numpy as np
import pytest
import torch
from scipy import stats

import rewardcollapse as rc
from rewardcollapse.loss import ranking_loss

GRID = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0]


def test_named_members_of_the_family():
    names = [rc.openness_utility(o).name for o in (0, 0.2, 0.5, 0.8, 1)]
    assert names == ["x", "x^0.6", "log", "-x^-0.6", "-1/x"]
    assert rc.openness_utility(0.25, eps=0.1).eps == 0.1
    assert [rc.openness_exponent(o) for o in (0, 0.5, 1)] == [1.0, 0.0, -1.0]


@pytest.mark.parametrize("o", GRID)
def test_law_is_beta_o_o_and_matches_the_limit_law_of_the_named_utility(o):
    law = rc.openness_law(o)
    named = rc.limit_distribution(rc.openness_utility(o))
    levels = np.linspace(0.01, 0.99, 99)
    assert np.allclose(law.cdf(levels), named.cdf(levels), atol=1e-12)
    assert law.atoms == named.atoms
    if o > 0:
        assert law.args == (o, o)


def test_spread_moves_monotonically_with_openness():
    # Beta(o, o) has variance 1 / (4 (2o + 1)): from 1/4 (all mass at 0 and 1) down to 1/12 (uniform).
    variances = [rc.openness_law(o).var() for o in GRID]
    assert variances[0] == pytest.approx(0.25) and variances[-1] == pytest.approx(1 / 12)
    assert all(a > b for a, b in itertools.pairwise(variances))


@pytest.mark.parametrize("o", [0.25, 0.5, 0.75])
def test_solver_optimum_follows_the_law(o):
    rewards = rc.optimal_rewards(1000, rc.openness_utility(o)).rewards
    assert rc.ks_distance(rewards, rc.openness_law(o)) < 0.01


@pytest.mark.parametrize("o", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_box_cox_form_has_the_named_optimum(o):
    # A positive affine transform of U leaves the optimum unchanged: the Box-Cox member and the named one agree.
    boxcox = rc.optimal_rewards(60, rc.openness_family(o))
    named = rc.optimal_rewards(60, rc.openness_utility(o))
    assert boxcox.success
    assert np.max(np.abs(boxcox.rewards - named.rewards)) < 1e-9
    assert rc.limit_distribution(rc.openness_family(o)).cdf(0.3) == pytest.approx(rc.openness_law(o).cdf(0.3))


def test_box_cox_values_derivatives_and_continuity():
    x = np.array([0.01, 0.3, 1.0, 2.5])
    for o in (0.0, 0.2, 0.7, 1.0):
        lam = 1 - 2 * o
        u = rc.openness_family(o)
        assert np.allclose(u(x), (x**lam - 1) / lam, rtol=1e-12)
        assert np.allclose(u.derivative(x), x ** (lam - 1), rtol=1e-12)
        assert np.allclose(u.second_derivative(x), (lam - 1) * x ** (lam - 2), rtol=1e-12)
        h = 1e-6
        assert np.allclose((u(x + h) - u(x - h)) / (2 * h), u.derivative(x), rtol=1e-6)
    # Continuous through o = 1/2, where it is the log; U'(1) = 1 for every o.
    for o in (0.5 - 1e-9, 0.5, 0.5 + 1e-9):
        assert np.allclose(rc.openness_family(o)(x), np.log(x), atol=1e-8)
    assert all(float(rc.openness_family(o).derivative(1.0)) == 1.0 for o in GRID)


def test_box_cox_on_torch_matches_numpy_and_broadcasts_per_prompt():
    x = np.array([[0.05, 0.4, 0.9]] * 3)
    o = np.array([[0.1], [0.5], [0.9]])
    want = np.stack([rc.openness_family(float(v))(x[0]) for v in o[:, 0]])
    assert np.allclose(rc.openness_family(o)(x), want, rtol=1e-12)
    got = rc.openness_family(torch.tensor(o))(torch.tensor(x))
    assert np.allclose(got.numpy(), want, rtol=1e-12)


def test_openness_errors():
    with pytest.raises(
        ValueError, match=r"`openness` must be a number in \[0, 1\] \(0 closed, 1 open-ended\), got 1.5"
    ):
        rc.openness_utility(1.5)
    with pytest.raises(TypeError, match="`openness` must be a number"):
        rc.openness_law("open")
    with pytest.raises(TypeError, match="`openness` must be a number"):
        rc.openness_exponent(True)


def loss_of(rewards, spec):
    return ranking_loss(rewards, utility=spec, reduction="none")


def test_loss_with_per_prompt_openness_is_the_named_loss_rescaled():
    torch.manual_seed(0)
    rewards = torch.randn(5, 8, dtype=torch.float64) * 2
    openness = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    got = ranking_loss(rewards, utilities=openness, family="openness", reduction="none")
    for b, spec in enumerate(["x", "x^0.6", "log", "-x^-0.6", "-1/x"]):
        lam = 1 - 2 * openness[b].item()
        # U_o = U_named / |lambda| (after the eps shift), so the loss is the named loss over |lambda|.
        want = loss_of(rewards[b : b + 1], spec).item() / (abs(lam) if lam != 0 else 1.0)
        assert got[b].item() == pytest.approx(want, rel=1e-12)


def test_loss_with_openness_has_finite_gradients_and_checks_its_input():
    rewards = torch.tensor([[40.0, 40.0, -40.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], requires_grad=True)
    openness = torch.tensor([0.0, 0.5, 1.0])
    ranking_loss(rewards, utilities=openness, family="openness", eps=1e-6).backward()
    assert torch.isfinite(rewards.grad).all()
    with pytest.raises(ValueError, match=r"values for 'openness' must lie in \[0, 1\], got 1.5"):
        ranking_loss(rewards, utilities=torch.tensor([0.0, 1.5, 1.0]), family="openness")
    with pytest.raises(ValueError, match="`eps` must be > 0 for the openness family"):
        ranking_loss(rewards, utilities=openness, family="openness", eps=0.0)


def test_trainer_with_openness_utility(tmp_path, tokenizer, tiny_model):
    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingCollator, RankingRewardConfig, RankingRewardTrainer, score_batch

    rows = [
        {"prompt": f"prompt {p}", "responses": ["a b c d", "a b c", "a b", "a"], "openness": p / 5} for p in range(6)
    ]
    data = load_rankings(datasets.Dataset.from_list(rows))
    args = RankingRewardConfig(
        output_dir=str(tmp_path),
        utility="openness",
        max_length=64,
        max_steps=3,
        per_device_train_batch_size=3,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    model = tiny_model()
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator(data.to_list()))
    assert torch.equal(batch["utilities"].cpu(), torch.tensor([p / 5 for p in range(6)], dtype=torch.float32))
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        rewards = score_batch(model, batch)
    want = ranking_loss(rewards, utilities=batch["utilities"], family="openness", pairs=batch["pairs"])
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    trainer.train()
    assert trainer.state.global_step == 3

    with pytest.raises(ValueError, match="needs `openness` on every row"):
        RankingCollator(tokenizer, utility="openness")([{"prompt": "p", "responses": ["a", "b"]}])
    no_openness = load_rankings(datasets.Dataset.from_list([{"prompt": "p", "responses": ["a", "b"]}]))
    with pytest.raises(ValueError, match="`train_dataset` row 0: utility='openness' needs `openness` on every row"):
        RankingRewardTrainer(model=model, args=args, train_dataset=no_openness, processing_class=tokenizer)


def test_openness_limit_agrees_with_scipy_beta():
    assert rc.openness_law(0.3).cdf(0.2) == pytest.approx(stats.beta(0.3, 0.3).cdf(0.2))


@pytest.mark.parametrize("o", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_openness_from_scores_recovers_the_family(o):
    # Scores on any scale: an affine image of the 8-answer optimum of openness o.
    scores = 3.0 + 7.0 * rc.optimal_rewards(8, rc.openness_utility(o)).rewards
    assert rc.openness_from_scores(scores) == pytest.approx(o, abs=2e-3)


def test_openness_from_scores_extremes_large_samples_and_errors():
    assert rc.openness_from_scores([0, 0, 0, 10, 10, 10]) == 0.0
    assert rc.openness_from_scores(np.arange(1, 11)) == 1.0
    # Above 200 answers the reference is the limit law: the 500-answer optimum of log gives about 1/2.
    assert rc.openness_from_scores(rc.optimal_rewards(500, "log").rewards) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="all equal"):
        rc.openness_from_scores([3, 3, 3])
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        rc.openness_from_scores([1.0, np.nan])


def test_openness_from_rankings_is_one_minus_kendalls_w():
    assert rc.openness_from_rankings([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]) == 0.0
    assert rc.openness_from_rankings([[1, 2, 3, 4], [4, 3, 2, 1]]) == 1.0
    assert rc.openness_from_rankings([[1, 1, 2, 3], [1, 1, 2, 3]]) == pytest.approx(0.0, abs=1e-12)  # ties
    # Independent reference: without ties, the mean pairwise Spearman correlation is (m W - 1) / (m - 1).
    rng = np.random.default_rng(0)
    for m, n in [(3, 5), (5, 8), (10, 4)]:
        ranks = np.array([rng.permutation(n) for _ in range(m)])
        w = 1.0 - rc.openness_from_rankings(ranks)
        rho = np.mean([stats.spearmanr(ranks[a], ranks[b])[0] for a in range(m) for b in range(a + 1, m)])
        assert rho == pytest.approx((m * w - 1) / (m - 1), abs=1e-12)
    with pytest.raises(ValueError, match=r"must be \(raters >= 2, answers >= 2\)"):
        rc.openness_from_rankings([[1, 2, 3]])
    with pytest.raises(ValueError, match="every rater tied all answers"):
        rc.openness_from_rankings([[1, 1], [2, 2]])


def test_openness_estimators_name_the_bad_rater_or_entry_instead_of_numpys_message():
    # Ragged rankings: numpy said "inhomogeneous shape after 1 dimensions"; the message names the rater and the fix.
    with pytest.raises(ValueError, match="`rankings` rater 2 ranks 3 answers but rater 0 ranks 4; every rater must"):
        rc.openness_from_rankings([[1, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3]])
    with pytest.raises(TypeError, match="`rankings` rater 1: entry 2 must be a number, got 'c'"):
        rc.openness_from_rankings([[1, 2, 3], [1, 2, "c"]])
    with pytest.raises(TypeError, match="`rankings` rater 1: entry 0 must be a number, got True"):
        rc.openness_from_rankings([[1, 2, 3], [True, 2, 3]])  # numpy read True as 1
    with pytest.raises(TypeError, match="`rankings` rater 1 must be a list of numbers, got NoneType"):
        rc.openness_from_rankings([[1, 2, 3], None])
    with pytest.raises(ValueError, match="rater 1 gives nan for answer 1"):
        rc.openness_from_rankings([[1, 2, 3], [1, np.nan, 3]])
    assert rc.openness_from_rankings(np.array([[1, 2], [2, 1]])) == 1.0  # arrays and tuples as before
    assert rc.openness_from_rankings(((1, 2), np.array([1, 2]))) == 0.0
    with pytest.raises(TypeError, match="`scores`: entry 1 must be a number, got \\[2, 3\\]"):
        rc.openness_from_scores([1, [2, 3]])
    with pytest.raises(TypeError, match="`scores`: entry 2 must be a number, got '3'"):
        rc.openness_from_scores([1, 2, "3"])  # numpy read "3" as 3.0
    with pytest.raises(TypeError, match="`quantiles_or_sample` must be a list of numbers, got dict"):
        rc.fit_beta_shape({"a": 0.5})
