"""Shared fixtures: a headless matplotlib backend, the closed-form test utilities, and a tiny reward model."""

import matplotlib
import pytest

matplotlib.use("Agg")

BUILTIN_SPECS = ["x", "log", "-1/x", "x^0.5", "x^0.2", "-x^-0.5", "logsigmoid"]
SMOOTH_SPECS = ["log", "-1/x", "x^0.5", "-x^-0.5", "logsigmoid"]


@pytest.fixture(params=SMOOTH_SPECS)
def smooth_spec(request):
    return request.param


@pytest.fixture(scope="session")
def tokenizer():
    """The shipped MiniLM tokenizer (torch and transformers imported only by tests that ask for it)."""
    from transformers import AutoTokenizer

    from rewardcollapse.training import default_backbone

    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """Build a randomly initialised 2-layer BERT on the MiniLM vocabulary, without dropout (deterministic steps)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    def build(seed=0):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            num_labels=1,
        )
        return BertForSequenceClassification(config)

    return build


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer, tiny_model):
    """The tiny model and the tokenizer saved to a folder, as a user's model path."""
    path = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
