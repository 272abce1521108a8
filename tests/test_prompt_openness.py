"""Openness estimators end to end: the prompt-text classifier and the `rewardcollapse openness` commands."""

import json
import re

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rewardcollapse.cli import main
from rewardcollapse.core import openness_utility, optimal_rewards
from rewardcollapse.estimators import (
    OpennessClassifier,
    embed_prompts,
    fit_openness_classifier,
    prompt_text,
    prompts_and_openness,
)

from .conftest import write_jsonl

TOPICS = [
    "the French revolution",
    "photosynthesis",
    "a binary search tree",
    "the water cycle",
    "inflation",
    "the immune system",
    "black holes",
    "the printing press",
    "plate tectonics",
    "neural networks",
    "the Roman empire",
    "climate change",
    "vaccines",
    "the stock market",
    "volcanoes",
    "electric cars",
    "the moon landing",
    "coral reefs",
    "jazz music",
    "the internet",
]
OPEN = ["Write a poem about {}.", "Share your personal thoughts on {}.", "Imagine a story set around {}."]
CLOSED = ["In which year did {} begin? Give one number.", "What is the exact definition of {}?", "Is {} a noun?"]


def labelled_prompts():
    """60 open-ended and 60 closed prompts in three phrasings each, over the same topics."""
    prompts, openness = [], []
    for topic in TOPICS:
        for template in OPEN:
            prompts.append(template.format(topic))
            openness.append(1.0)
        for template in CLOSED:
            prompts.append(template.format(topic))
            openness.append(0.0)
    return prompts, np.array(openness)


@pytest.fixture(scope="module")
def fitted():
    prompts, openness = labelled_prompts()
    return fit_openness_classifier(prompts, openness, test_fraction=0.25, seed=0)


def test_embeddings_are_unit_mean_pooled_and_order_free():
    prompts = ["A short one.", "A much longer prompt with many more words than the first one has.", "Mid length."]
    embeddings = embed_prompts(prompts, batch_size=2)
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)
    # Length-sorted batches with padding give the same vectors as one prompt at a time.
    alone = np.vstack([embed_prompts([p]) for p in prompts])
    np.testing.assert_allclose(embeddings, alone, atol=1e-5)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer, got 0"):
        embed_prompts(prompts, batch_size=0)


def test_classifier_separates_open_from_closed_prompts(fitted):
    metrics = fitted.metrics
    assert metrics["train_prompts"] == 90 and metrics["test_prompts"] == 30
    assert metrics["majority_accuracy"] == 0.5 and metrics["test_accuracy"] >= 0.9
    assert metrics["test_log_loss"] < 0.5
    unseen = fitted.predict_openness(["Write a poem about autumn leaves.", "In which year did the Cold War begin?"])
    assert unseen[0] > 0.5 > unseen[1]


def test_classifier_matches_scikit_learn_and_survives_saving(tmp_path, fitted):
    prompts, openness = labelled_prompts()
    whole = fit_openness_classifier(prompts, openness, test_fraction=0.0)
    assert whole.metrics == {"train_prompts": 120, "test_prompts": 0, "train_accuracy": 1.0}
    embeddings = embed_prompts(prompts)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    reference.fit(embeddings, openness >= 0.5)
    np.testing.assert_allclose(whole.openness_of_embeddings(embeddings), reference.predict_proba(embeddings)[:, 1])

    path = fitted.save(tmp_path / "clf")
    state = json.loads(path.read_text())
    assert state["format"] == "rewardcollapse.OpennessClassifier/1" and len(state["coef"]) == 384
    assert state["encoder"] is None  # the shipped MiniLM, found wherever the package is installed
    loaded = OpennessClassifier.load(tmp_path / "clf")
    assert loaded.metrics == fitted.metrics and loaded.encoder == fitted.encoder
    np.testing.assert_array_equal(loaded.openness_of_embeddings(embeddings), fitted.openness_of_embeddings(embeddings))
    with pytest.raises(ValueError, match=r"`embeddings` must be \(n, 384\)"):
        loaded.openness_of_embeddings(embeddings[:, :10])
    with pytest.raises(ValueError, match="no openness classifier at"):
        OpennessClassifier.load(tmp_path / "missing")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not an openness classifier file"):
        OpennessClassifier.load(tmp_path / "other.json")


def test_classifier_input_errors():
    prompts, openness = labelled_prompts()
    with pytest.raises(ValueError, match="one value per prompt"):
        fit_openness_classifier(prompts, openness[:-1])
    with pytest.raises(ValueError, match=r"`openness\[\d+\]` must be a number in \[0, 1\] \(0 closed, 1 open-ended\)"):
        fit_openness_classifier(prompts, openness * 2)
    with pytest.raises(ValueError, match="`test_fraction` must be in"):
        fit_openness_classifier(prompts, openness, test_fraction=1.0)
    with pytest.raises(ValueError, match="`c` must be > 0"):
        fit_openness_classifier(prompts, openness, c=0)
    with pytest.raises(ValueError, match="at least 2 open and 2 closed prompts, got 1 open"):
        fit_openness_classifier(prompts[:4], [0, 0, 0, 1])


def test_prompt_rows():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}]
    assert prompt_text("Hi") == "Hi" and prompt_text(chat) == "Be brief.\nName a prime."
    with pytest.raises(ValueError, match="must be a string or a list of chat messages"):
        prompt_text(3)
    rows = [{"prompt": "a", "openness": 0}, {"prompt": chat, "openness": 1}]
    prompts, labels = prompts_and_openness(rows)
    assert prompts == ["a", "Be brief.\nName a prime."] and labels.tolist() == [0.0, 1.0]
    assert prompts_and_openness([{"prompt": "a"}, {"prompt": "b", "openness": 1}])[1] is None
    assert prompts_and_openness(rows, labels=False)[1] is None
    with pytest.raises(ValueError, match=r"f.jsonl: row 1, field 'openness' must be a number in \[0, 1\].*got None"):
        prompts_and_openness([{"prompt": "a", "openness": 0}, {"prompt": "b"}], source="f.jsonl", labels=True)
    with pytest.raises(ValueError, match=r"row 0, field 'openness'.*got 1.5"):
        prompts_and_openness([{"prompt": "a", "openness": 1.5}])
    with pytest.raises(ValueError, match=r"row 0 has no 'prompt' field \(it has \['text'\]\)"):
        prompts_and_openness([{"text": "a"}])
    with pytest.raises(ValueError, match="row 1, field 'prompt', must be a string"):
        prompts_and_openness([{"prompt": "a"}, {"prompt": None}])


def test_fit_and_predict_commands(tmp_path, capsys):
    prompts, openness = labelled_prompts()
    data = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": p, "openness": o} for p, o in zip(prompts, openness, strict=True)]
    )
    assert main(["openness", "fit", "--data", str(data), "--output", str(tmp_path / "clf")]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and re.search(r"majority accuracy +0.5\n", printed)
    assert (tmp_path / "clf" / "openness_classifier.json").exists()

    new = [{"prompt": "Write a poem about rivers.", "id": 7}, {"prompt": "Is a whale a mammal?", "id": 8}]
    out = tmp_path / "pred.jsonl"
    args = ["openness", "predict", "--model", str(tmp_path / "clf"), "--output", str(out)]
    assert main([*args, "--data", str(write_jsonl(tmp_path / "new.jsonl", new))]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == [7, 8]  # every row kept, with its fields
    assert written[0]["predicted_openness"] > 0.5 > written[1]["predicted_openness"]
    assert "accuracy" not in capsys.readouterr().out  # no labels, nothing to compare
    assert main([*args, "--data", str(data)]) == 0
    assert "accuracy, open = openness >= 0.5" in capsys.readouterr().out

    assert main(["openness", "fit", "--data", str(tmp_path / "new.jsonl"), "--output", str(tmp_path / "x")]) == 2
    assert "row 0, field 'openness' must be a number" in capsys.readouterr().err


def test_scores_and_rankings_commands_on_known_openness(tmp_path, capsys):
    rng = np.random.default_rng(0)
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = []
    for o in levels:
        # Judge scores on a 1-10 scale whose shape is the 12-answer optimum of openness o, shuffled.
        scores = 1 + 9 * optimal_rewards(12, openness_utility(o)).rewards
        rows.append({"prompt": f"p{o}", "scores": rng.permutation(scores).tolist(), "openness": o})
    data = write_jsonl(tmp_path / "scores.jsonl", rows)
    out = tmp_path / "est.jsonl"
    assert main(["openness", "scores", "--data", str(data), "--output", str(out)]) == 0
    estimates = [json.loads(line)["estimated_openness"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(estimates, levels, atol=0.01)
    printed = capsys.readouterr().out
    assert re.search(r"Spearman rho with labels +1\n", printed) and re.search(r"open = openness >= 0.5 +1\n", printed)

    # Ten raters who agree (a closed prompt) and ten who rank independently at random (an open one).
    agree = [list(range(6))] * 10
    independent = [rng.permutation(6).tolist() for _ in range(10)]
    rows = [{"prompt": "closed", "rankings": agree}, {"prompt": "open", "rankings": independent}]
    data = write_jsonl(tmp_path / "rankings.jsonl", rows)
    assert main(["openness", "rankings", "--data", str(data), "--output", str(out)]) == 0
    estimates = [json.loads(line)["estimated_openness"] for line in out.read_text().splitlines()]
    assert estimates[0] == 0.0 and estimates[1] > 0.7

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "scores": [1, 2]}, {"prompt": "b", "scores": [3, 3]}])
    assert main(["openness", "scores", "--data", str(bad), "--output", str(out)]) == 2
    assert "bad.jsonl: row 1, field 'scores': `scores` are all equal" in capsys.readouterr().err
    assert main(["openness", "rankings", "--data", str(bad), "--output", str(out)]) == 2
    assert "row 0 has no 'rankings' field" in capsys.readouterr().err


def test_openness_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["openness", "--help"])
    assert exit_info.value.code == 0 and "fit" in capsys.readouterr().out


@pytest.fixture
def classifier_file(tmp_path):
    import numpy as np

    from rewardcollapse.estimators import OpennessClassifier

    classifier = OpennessClassifier(None, 32, mean=np.zeros(4), scale=np.ones(4), coef=np.ones(4), intercept=0.0)
    return classifier.save(tmp_path / "clf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(coef=[float("nan")] * 4), "`coef` must be a non-empty list of finite numbers"),
        (lambda s: s.update(scale=[0.0] * 4), "every `scale` entry must be > 0"),
        (lambda s: s.update(coef=[1.0] * 3), "mean, scale and coef must have one length"),
        (lambda s: s.pop("mean"), r"missing \['mean'\]"),
        (lambda s: s.update(encoder=5), "`encoder` must be null"),
        (lambda s: s.update(intercept="0"), "`intercept` must be a finite number"),
    ],
)
def test_corrupt_classifier_files_are_refused(classifier_file, change, message):
    from rewardcollapse.estimators import OpennessClassifier

    state = json.loads(classifier_file.read_text())
    change(state)
    classifier_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=message):
        OpennessClassifier.load(classifier_file)


def test_classifier_files_that_are_no_classifier(classifier_file):
    from rewardcollapse.estimators import OpennessClassifier

    classifier_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an openness classifier file \\(format 'a JSON list'\\)"):
        OpennessClassifier.load(classifier_file)
    classifier_file.write_text('{"format": "rewardcollapse.Openn')
    with pytest.raises(ValueError, match="is not valid JSON"):
        OpennessClassifier.load(classifier_file)
