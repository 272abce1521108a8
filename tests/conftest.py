"""Shared fixtures: a headless matplotlib backend, the closed-form test utilities, tiny reward models, and what the
multi-process tests need (a free port, the one-step worker, a subprocess stopped at a known point)."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on a 2-core machine: one thread each (set before numpy or torch is imported), so
    # they do not oversubscribe the cores. A single-process run keeps every library's own default.
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

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


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def decoder_tokenizer():
    """A byte-level BPE tokenizer trained on the spot (no download), GPT-style: end-of-text token, no padding token,
    and a small chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        f"Question {i}: explain topic {i}. The answer is {word} because of reason {i}."
        for i in range(200)
        for word in ("yes", "no", "maybe", "short", "a long and careful one")
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


DECODERS = ("llama", "qwen2", "mistral", "gpt2")


@pytest.fixture(scope="session")
def tiny_decoder(decoder_tokenizer):
    """Build a randomly initialised 2-layer decoder classifier (one output) of an architecture in DECODERS."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        MistralConfig,
        MistralForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    vocab = len(decoder_tokenizer)
    eos = decoder_tokenizer.eos_token_id

    def build(arch="llama", seed=0):
        torch.manual_seed(seed)
        if arch == "gpt2":
            config = GPT2Config(
                vocab_size=vocab,
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=256,
                num_labels=1,
                bos_token_id=eos,
                eos_token_id=eos,
            )
            model = GPT2ForSequenceClassification(config)
        else:
            config_class, model_class = {
                "llama": (LlamaConfig, LlamaForSequenceClassification),
                "qwen2": (Qwen2Config, Qwen2ForSequenceClassification),
                "mistral": (MistralConfig, MistralForSequenceClassification),
            }[arch]
            config = config_class(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                num_labels=1,
            )
            model = model_class(config)
        model.config.pad_token_id = eos
        model.config.eos_token_id = eos
        return model

    return build


@pytest.fixture
def free_port() -> int:
    """A TCP port free on this machine now, for a launcher's rendezvous (a fixed port collides with a parallel run)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ddp_worker():
    """tests/ddp_worker.py as a module: its ``run`` is the one-process reference of the parallel tests, run in the
    test's own process (a second Python start-up with torch and transformers costs more than the step)."""
    path = Path(__file__).with_name("ddp_worker.py")
    spec = importlib.util.spec_from_file_location("ddp_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_and_two_processes(ddp_worker, free_port):
    """Train SGD steps of ddp_worker.py on a model folder and a data file twice: in this process on the whole batch of
    4 (into ``folder/one``) and in two gloo processes on half a batch each (into ``folder/two``), CPU only also on a
    machine with one GPU (two processes cannot share it with NCCL). With ``cases`` (``{name: config overrides}``)
    each case trains into ``one/name`` and ``two/name``, the two processes in one launch, and ``accumulation`` has
    each process take its half in that many micro-batches."""

    def run(model_dir: Path, data: Path, folder: Path, cases: dict | None = None, *, accumulation: int = 1) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
        common = [str(model_dir), str(data)]
        two = [str(folder / "two"), str(2 // accumulation)]
        if cases is None:
            ddp_worker.run(*common, str(folder / "one"), 4, use_cpu=True)
        else:
            for name, overrides in cases.items():
                ddp_worker.run(*common, str(folder / "one" / name), 4, use_cpu=True, **overrides)
            accumulated = {name: {**o, "gradient_accumulation_steps": accumulation} for name, o in cases.items()}
            two.append(json.dumps(accumulated))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port}"]
        double = subprocess.run(
            [*launcher, ddp_worker.__file__, *common, *two],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert double.returncode == 0, double.stderr[-3000:]

    return run


# Helpers the test files import (``from .conftest import ...``). Kills are real: a subprocess is stopped with SIGKILL
# (or SIGINT) at a known point (it prints ``ready`` there and waits), and the files it leaves are checked.


def run_until_ready(script: str, cwd: Path) -> subprocess.Popen:
    """Start ``script`` in a Python subprocess and return once it prints ``ready`` (it then waits to be killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.strip() == "ready":
            return process
    process.wait()
    raise AssertionError(f"the subprocess ended before it was ready: {process.stderr.read()[-2000:]}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
