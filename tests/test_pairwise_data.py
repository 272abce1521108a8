"""TRL pairwise rows as a drop-in: implicit prompts split per prompt group, `margin` honoured, closure on or off."""

import itertools
import re

import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardcollapse.data import load_rankings, merge_pairs, pair_margins, pair_positions, split_implicit_prompt
from rewardcollapse.data.schema import check_margin, ranking_row

from .conftest import write_jsonl


def load(rows, **kwargs):
    return load_rankings(datasets.Dataset.from_list(rows), **kwargs).to_list()


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


# 1. Implicit text prompts: split per prompt group, at the common word prefix of all its answers.


def question(i):
    return f"Question {i}: which letter comes first?"


def test_answers_that_begin_alike_keep_their_words(tmp_path):
    # Per row, "The answer is" is common to both answers; per prompt it is not (the second pair ends "I am not sure").
    # The per-row split made 20 prompts of these 10, with "The answer is" in half of them.
    first = [
        {"chosen": f"{question(i)} The answer is A because it is first.", "rejected": f"{question(i)} The answer is B."}
        for i in range(10)
    ]
    second = [
        {"chosen": f"{question(i)} The answer is B.", "rejected": f"{question(i)} I am not sure."} for i in range(10)
    ]
    got = load_rankings(write_jsonl(tmp_path / "p.jsonl", first + second)).to_list()
    assert [row["prompt"] for row in got] == [question(i) for i in range(10)]
    for row in got:
        assert row["responses"] == [" The answer is A because it is first.", " The answer is B.", " I am not sure."]
        assert row["ranks"] == [0, 1, 2]


def test_the_shorter_prompt_wins_whichever_row_comes_first():
    rows = [
        {"chosen": "Q: pick one.\nIt is A, clearly.", "rejected": "Q: pick one.\nIt is B, clearly."},
        {"chosen": "Q: pick one.\n\nNo idea.", "rejected": "Q: pick one.\nIt is A, clearly."},
    ]
    for order in (rows, rows[::-1]):
        (row,) = load(order)
        # No trailing whitespace in the prompt, whatever separated it: that whitespace begins each answer.
        assert row["prompt"] == "Q: pick one."
        assert set(row["responses"]) == {"\nIt is A, clearly.", "\nIt is B, clearly.", "\n\nNo idea."}


def test_a_key_that_extends_another_inside_a_word_is_another_prompt():
    rows = [
        {"chosen": "Say hi now", "rejected": "Say hi later"},
        {"chosen": "Say hix now", "rejected": "Say hix later"},
        {"chosen": "Say hi! now", "rejected": "Say hi! later"},
    ]
    assert [row["prompt"] for row in load(rows)] == ["Say hi", "Say hix", "Say hi!"]


def test_an_answer_is_judged_after_the_group_split():
    # Alone, row 1 would split at "P: go? It is" and leave the answer "."; its group's prompt is "P: go?".
    rows = [
        {"chosen": "P: go? Yes.", "rejected": "P: go? It is A."},
        {"chosen": "P: go? It is A.", "rejected": "P: go? It is ."},
    ]
    (row,) = load(rows)
    assert row["prompt"] == "P: go?" and row["responses"] == [" Yes.", " It is A.", " It is ."]


def test_pairs_without_a_common_prompt_are_refused_not_merged(tmp_path):
    rows = [
        {"chosen": "Sunny today.", "rejected": "Paris is big."},
        {"chosen": "Q: 2+2? 4", "rejected": "Q: 2+2? 5"},
        {"chosen": "Cats purr.", "rejected": "Dogs bark."},
        {"chosen": "abc", "rejected": "abd"},  # a common prefix, but no whole word
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(
        ValueError, match=r"row 0: `chosen` and `rejected` have no common prompt .*; give a `prompt` column"
    ):
        load_rankings(path)
    with pytest.warns(UserWarning, match=r"dropped 3 of 4 prompts: 3 no common prompt \(first: row 0"):
        ds = load_rankings(path, skip_invalid=True)
    assert ds["prompt"] == ["Q: 2+2?"]  # the unrelated rows did not become one prompt ''


@pytest.mark.parametrize(
    ("chosen", "rejected", "match"),
    [
        ("Q: why? Because.", "Q: why? .", r"row 0: the `rejected` answer after the implicit prompt 'Q: why\?' is '\.'"),
        ("Q: why? ?!", "Q: why? Because.", r"row 0: the `chosen` answer .* is '\?!', punctuation only"),
        ("Q: why? ", "Q: why? Because.", r"row 0: the `chosen` answer after the implicit prompt 'Q: why\?' is empty"),
    ],
)
def test_an_empty_or_punctuation_answer_is_refused(tmp_path, chosen, rejected, match):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"chosen": chosen, "rejected": rejected}, {"chosen": "x y", "rejected": "x z"}]
    )
    with pytest.raises(ValueError, match=f"{match}.*give a `prompt` column"):
        load_rankings(path)
    with pytest.warns(UserWarning, match=r"dropped 1 of 2 prompts: 1 empty answer \(first: row 0"):
        assert load_rankings(path, skip_invalid=True)["prompt"] == ["x"]


def test_a_bad_row_leaves_the_rest_of_its_prompt():
    rows = [
        {"chosen": "P: go? Yes.", "rejected": "P: go? No."},
        {"chosen": "P: go? Yes.", "rejected": "P: go? ..."},
        {"chosen": "P: go? Maybe.", "rejected": "P: go? No."},
    ]
    with pytest.warns(UserWarning, match=r"dropped 1 of 2 prompts: 1 empty answer \(first: row 1"):
        (row,) = load(rows, skip_invalid=True)
    assert row["responses"] == [" Yes.", " No.", " Maybe."] and row["ranks"] == [0, 2, 0]


def test_identical_chosen_and_rejected_are_named():
    with pytest.raises(ValueError, match=r"row 0: `chosen` and `rejected` are identical; drop the pair"):
        load([{"chosen": "Q: a b", "rejected": "Q: a b"}])


def test_split_implicit_prompt_for_one_pair():
    assert split_implicit_prompt("Q: hi\n\nA: yes", "Q: hi\n\nA: yeah") == ("Q: hi\n\nA:", " yes", " yeah")
    with pytest.raises(ValueError, match=r"the pair: the `rejected` answer .* is '!', punctuation only"):
        split_implicit_prompt("Q: hi A", "Q: hi !")
    with pytest.raises(ValueError, match=r"`chosen` and `rejected` must both be texts or both lists of chat messages"):
        split_implicit_prompt("Q: hi", [{"role": "assistant", "content": "hi"}])


IMPLICIT_PAIRS = [
    ("Beautiful is better than ugly.", "Beautiful is better than beautiful."),  # words
    ("Q: why? Because, of course!", "Q: why? No; never."),  # punctuation
    ("Name a colour:   red  and blue", "Name a colour:   green"),  # several spaces, inside the answers too
    ("Q: hi\n\nA: yes\nreally", "Q: hi\n\nA:\tno"),  # newlines and a tab
    (
        "Größe des Baums?\u00a0Zwölf Meter — ungefähr.",
        "Größe des Baums?\u00a0日本語の答え",
    ),  # unicode, a no-break space
]


@pytest.mark.parametrize(
    ("chosen", "rejected"), IMPLICIT_PAIRS, ids=["words", "punctuation", "spaces", "newlines", "unicode"]
)
def test_an_implicit_prompt_and_its_answer_give_back_the_text(chosen, rejected):
    # TRL tokenises an implicit-prompt row as the whole text, so prompt + answer must be that text exactly.
    prompt, first, second = split_implicit_prompt(chosen, rejected)
    assert (prompt + first, prompt + second) == (chosen, rejected)
    (row,) = load([{"chosen": chosen, "rejected": rejected}])
    assert [row["prompt"] + answer for answer in row["responses"]] == [chosen, rejected]


def test_implicit_prompts_give_back_every_text_of_their_group():
    rows = [{"chosen": c, "rejected": r} for c, r in IMPLICIT_PAIRS]
    rows += [  # a second pair of the first prompt, whose answers begin alike
        {"chosen": "Beautiful is better than  ugly, they say.", "rejected": "Beautiful is better than ugly."}
    ]
    texts = {row["prompt"] + answer for row in load(rows) for answer in row["responses"]}
    assert texts == {text for row in rows for text in (row["chosen"], row["rejected"])}


def test_the_pair_format_gives_an_encoder_the_words_of_an_implicit_answer(tokenizer):
    # The whitespace that begins an implicit answer is no token for a WordPiece encoder (the shipped backbone): its
    # text pair is that of the same row given with an explicit prompt and the bare answers.
    from rewardcollapse.training.collator import encode_rows

    rows = [{"chosen": c, "rejected": r} for c, r in IMPLICIT_PAIRS]
    implicit = load(rows, transitive_closure=False)
    explicit = [{**row, "responses": [answer.lstrip() for answer in row["responses"]]} for row in implicit]
    assert implicit != explicit
    encoded = [encode_rows(data, tokenizer, max_length=128)["input_ids"] for data in (implicit, explicit)]
    assert encoded[0] == encoded[1]


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.lists(
            st.lists(st.sampled_from(["the", "answer", "is", "a", "b", "so"]), min_size=1, max_size=4), min_size=2
        ),
        min_size=1,
        max_size=5,
    )
)
def test_prompts_come_back_whole_whatever_their_answers_share(answer_words):
    # Each prompt's answers: distinct word lists, two of which differ at their first word, chained best first; the
    # other pairs may share leading words.
    prompts, rows, expected = [], [], []
    for p, candidates in enumerate(answer_words):
        answers = list(dict.fromkeys(" ".join(words) for words in candidates))
        if len({answer.split()[0] for answer in answers}) < 2:
            answers.append("unsure")
        prompts.append(f"Prompt {p}: say something.")
        expected.append([f" {answer}" for answer in answers])
        rows += [
            {"chosen": f"{prompts[p]} {a}", "rejected": f"{prompts[p]} {b}"} for a, b in itertools.pairwise(answers)
        ]
    got = load(rows[::-1])  # the order of the rows does not matter
    assert sorted(row["prompt"] for row in got) == sorted(prompts)
    for row in got:
        best_first = [answer for _, answer in sorted(zip(row["ranks"], row["responses"], strict=True))]
        assert best_first == expected[prompts.index(row["prompt"])]


def test_implicit_prompts_group_across_batches(tmp_path):
    # 3,000 prompts; each prompt's rows are 3,000 apart, in different conversion batches, the longer key first.
    n = 3_000
    first = [{"chosen": f"Q{i}? It is {i}.", "rejected": f"Q{i}? It is {i + 1}."} for i in range(n)]
    second = [{"chosen": f"Q{i}? It is {i + 1}.", "rejected": f"Q{i}? No."} for i in range(n)]
    ds = load_rankings(write_jsonl(tmp_path / "many.jsonl", first + second))
    assert ds.num_rows == n and ds["prompt"][:2] == ["Q0?", "Q1?"]
    assert ds[1234]["responses"] == [" It is 1234.", " It is 1235.", " No."] and ds[1234]["ranks"] == [0, 1, 2]


# 2. Implicit conversational prompts: everything before the final assistant message(s).

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "What is 2+2?"}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_conversations_split_before_the_last_assistant_turn():
    history = [SYSTEM, {"role": "user", "content": "Hi"}, assistant("Hello!"), USER]
    rows = [
        {"chosen": [*history, assistant("4")], "rejected": [*history, assistant("5")]},
        # Both answers open with the same message: it stays in the answers, as shared words do in texts.
        {"chosen": [*history, assistant("Let me see."), assistant("4")], "rejected": [*history, assistant("5")]},
        {
            "chosen": [*history, assistant("Let me see."), assistant("4")],
            "rejected": [*history, assistant("Let me see."), assistant("22")],
        },
    ]
    (row,) = load(rows)
    assert row["prompt"] == history
    assert row["responses"] == [
        [assistant("4")],
        [assistant("5")],
        [assistant("Let me see."), assistant("4")],
        [assistant("Let me see."), assistant("22")],
    ]
    assert split_implicit_prompt(rows[2]["chosen"], rows[2]["rejected"])[0] == history


@pytest.mark.parametrize(
    ("chosen", "rejected", "match"),
    [
        (
            [USER, assistant("4"), {"role": "user", "content": "Sure?"}, assistant("Yes")],
            [USER, assistant("5"), {"role": "user", "content": "Sure?"}, assistant("Yes")],
            r"row 0: `chosen` and `rejected` differ before their final assistant turn \(`chosen\[2\]` is a 'user' "
            r"message after the first difference, at message 1\)",
        ),
        (
            [{"role": "user", "content": "2+2?"}, assistant("4")],
            [USER, assistant("4")],
            r"row 0: `chosen` and `rejected` have no common prompt \(they share no message before their final",
        ),
        ([assistant("4")], [assistant("5")], r"row 0: `chosen` and `rejected` have no common prompt"),
        ([USER, assistant("...")], [USER, assistant("4")], r"row 0: the `chosen` answer .* is '\.\.\.', punctuation"),
        ([USER], [USER, assistant("4")], r"row 0: the `chosen` answer after the implicit prompt .* is empty"),
    ],
)
def test_conversations_that_do_not_split_are_refused(chosen, rejected, match):
    with pytest.raises(ValueError, match=match):
        load([{"chosen": chosen, "rejected": rejected}])


# 3. TRL's `margin`: kept per pair as `margins`, which give TRL's loss.


def trl_loss(rewards, rows):
    """TRL's RewardTrainer loss, -log sigmoid(r_chosen - r_rejected - margin), averaged over the pair rows."""
    return np.mean([np.logaddexp(0, -(rewards[r["chosen"]] - rewards[r["rejected"]] - r["margin"])) for r in rows])


def test_margins_reproduce_trl_loss_without_the_closure():
    rng = np.random.default_rng(0)
    answers = [f"answer {k}" for k in range(6)]
    rows = [
        {"prompt": f"p{i % 3}", "chosen": answers[i % 6], "rejected": answers[(i + 1 + i // 6) % 6], "margin": m}
        for i, m in enumerate(rng.uniform(0, 2, size=9).round(3))
    ]
    rewards = dict(zip(answers, rng.normal(size=6), strict=True))
    merged = load(rows, transitive_closure=False)
    assert all(row["ranks"] is None for row in merged)
    losses = []
    for row in merged:
        r = np.array([rewards[a] for a in row["responses"]])
        margins = pair_margins(row)
        losses += [np.logaddexp(0, -(r[i] - r[j] - margins[i, j])) for i, j in row["pairs"]]
    assert sum(len(row["pairs"]) for row in merged) == len(rows)
    np.testing.assert_allclose(np.mean(losses), trl_loss(rewards, rows), rtol=1e-12)


def test_margins_with_the_closure_give_implied_pairs_margin_zero():
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0},
        {"prompt": "q", "chosen": "b", "rejected": "c", "margin": 0.5},
    ]
    (row,) = load(rows)
    # A chain is a weak order, but with margins the row keeps pairs (never ranks); a above c is implied: margin 0.
    assert row["ranks"] is None and row["pairs"] == [[0, 1], [0, 2], [1, 2]] and row["margins"] == [1.0, 0.0, 0.5]
    np.testing.assert_array_equal(pair_margins(row), [[0, 1.0, 0], [0, 0, 0.5], [0, 0, 0]])
    (row,) = load(rows, transitive_closure=False)
    assert row["pairs"] == [[0, 1], [1, 2]] and row["margins"] == [1.0, 0.5]


def test_without_group_pairs_each_pair_row_is_its_own_ranking_in_order():
    rows = [
        {"chosen": "Question 1: the answer is yes", "rejected": "Question 1: the answer is no", "margin": 1.0},
        {"chosen": "Question 2: short", "rejected": "Question 2: long", "margin": 0.5},
        {"chosen": "Question 1: the answer is yes", "rejected": "Question 1: maybe", "margin": 0.25},
    ]
    assert len(load(rows)) == 2  # question 1's two pairs merged
    kept = load(rows, group_pairs=False)
    assert [row["prompt"] + row["responses"][0] for row in kept] == [row["chosen"] for row in rows]
    assert [row["prompt"] + row["responses"][1] for row in kept] == [row["rejected"] for row in rows]
    assert [row["pairs"] for row in kept] == [[[0, 1]]] * 3 and [row["margins"] for row in kept] == [
        [1.0],
        [0.5],
        [0.25],
    ]
    assert kept[0]["prompt"] == kept[2]["prompt"] == "Question 1:"  # split at its prompt group's prompt as merged
    with pytest.raises(TypeError, match="`group_pairs` must be True or False, got str"):
        load(rows, group_pairs="no")


MARGIN_MESSAGE = r"row 1: `margin` must be a finite number \(TRL's loss .*\), got {}; give every row a margin"


@pytest.mark.parametrize(("margin", "got"), [(None, "None"), (float("nan"), "nan"), (float("-inf"), "-inf")])
def test_a_row_without_a_finite_margin_is_refused(margin, got):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0},
        {"prompt": "r", "chosen": "a", "rejected": "b"},
    ]
    rows[1]["margin"] = margin
    with pytest.raises(ValueError, match=MARGIN_MESSAGE.format(got)):
        load(rows)
    with pytest.warns(UserWarning, match=r"dropped 1 of 2 prompts: 1 bad margin \(first: row 1"):
        assert [row["prompt"] for row in load(rows, skip_invalid=True)] == ["q"]


def test_a_file_row_without_its_margin_is_refused(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1},
        {"prompt": "r", "chosen": "a", "rejected": "b"},
    ]
    with pytest.raises(ValueError, match=r"p.jsonl: " + MARGIN_MESSAGE.format("None")):
        load_rankings(write_jsonl(tmp_path / "p.jsonl", rows))


@pytest.mark.parametrize("margin", ["1.0", True, [1.0]])
def test_a_margin_that_is_no_number_is_refused(margin):
    _, error = check_margin(margin, "row 1")
    assert error.reason == "bad margin" and re.search(MARGIN_MESSAGE.format(re.escape(repr(margin))), error.message)


def test_a_pair_given_twice_counts_once_unless_its_margins_differ():
    same = [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0}] * 2
    (row,) = load(same, transitive_closure=False)
    assert row["pairs"] == [[0, 1]] and row["margins"] == [1.0]
    differ = [same[0], {**same[0], "margin": 2.0}]
    with pytest.raises(ValueError, match=r"rows 0, 1: prompt 'q' has the pair 'a' above 'b' twice, with margins 1.0"):
        load(differ)


def test_ranking_rows_carry_pairs_with_margins(tmp_path):
    rows = [{"prompt": "p", "responses": list("abc"), "pairs": [[2, 0], [2, 1]], "margins": [0.5, 1]}]
    (row,) = load_rankings(write_jsonl(tmp_path / "r.jsonl", rows)).to_list()
    assert row["pairs"] == [[2, 0], [2, 1]] and row["margins"] == [0.5, 1.0]
    np.testing.assert_array_equal(pair_margins(row), [[0, 0, 0], [0, 0, 0], [0.5, 1.0, 0]])
    assert not pair_margins({"responses": list("ab"), "ranks": [0, 1], "pairs": None, "margins": None}).any()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"margins": [1.0]}, r"`margins` gives one margin per pair of `pairs`, but the row has no `pairs`"),
        ({"ranks": [0, 1, 2], "margins": [1.0]}, r"`margins` .* no `pairs`; list the pairs \(with `ranks` null\)"),
        ({"pairs": [[0, 1], [1, 2]], "margins": [1.0]}, r"`margins` must be a list of 2 numbers .*, got 1 values"),
        ({"pairs": [[0, 1]], "margins": 1.0}, r"`margins` must be a list of 1 numbers .*, got float"),
        ({"pairs": [[0, 1]], "margins": [float("inf")]}, r"`margins\[0\]` must be a finite number .*`pairs\[0\]`"),
        ({"pairs": [[0, 1]], "margins": ["big"]}, r"`margins\[0\]` must be a finite number .*got 'big'"),
    ],
)
def test_bad_margins_name_row_and_field(extra, match):
    canonical, error = ranking_row({"prompt": "p", "responses": list("abc"), **extra}, "row 3")
    assert canonical is None and error.reason == "bad margins"
    assert re.search(f"row 3: {match}", error.message), error.message


# 4. The transitive closure, on (the default) or off.


def test_without_the_closure_the_given_pairs_are_kept():
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "b", "rejected": "c"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ]
    assert load(rows)[0]["ranks"] == [0, 1, 2]  # the default: closed, a weak order
    (row,) = load(rows, transitive_closure=False)
    assert row["ranks"] is None and row["pairs"] == [[0, 1], [1, 2]] and row["margins"] is None


@pytest.mark.parametrize("closure", [True, False])
def test_a_cycle_rejects_the_prompt_either_way(closure):
    rows = [{"prompt": "q", "chosen": a, "rejected": b} for a, b in ("ab", "bc", "ca")]
    with pytest.raises(ValueError, match=r"rows 0, 1, 2: the chosen/rejected pairs of prompt 'q' contradict"):
        load(rows, transitive_closure=closure)


def test_merge_pairs_options():
    row, _ = merge_pairs("p", [("a", "b"), ("b", "c")], [0, 1], {}, margins=[2.0, 1.0], transitive_closure=False)
    assert row["pairs"] == [[0, 1], [1, 2]] and row["margins"] == [2.0, 1.0] and row["ranks"] is None
    row, error = merge_pairs("p", [("a", "b")], [4], {}, margins=[None])
    assert row is None and error.message.startswith("row 4: `margin` must be a finite number")
    with pytest.raises(TypeError, match=r"`transitive_closure` must be True or False, got str"):
        load([{"prompt": "q", "chosen": "a", "rejected": "b"}], transitive_closure="no")


def test_pairwise_rows_of_one_prompt_must_agree_and_carry_no_ranking_columns(tmp_path):
    rows_ = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "openness": 0.0},
        {"prompt": "p", "chosen": "a", "rejected": "c", "openness": 1.0},
    ]
    with pytest.raises(ValueError, match="rows 0, 1: the pairs of one prompt disagree on `openness`"):
        load_rankings(write_jsonl(tmp_path / "d.jsonl", rows_))
    rows_ = [{"prompt": "p", "chosen": "a", "rejected": "b", "pairs": [[1, 0]]}]
    with pytest.raises(ValueError, match=r"with \['pairs'\] columns: each row is one pair"):
        load_rankings(write_jsonl(tmp_path / "e.jsonl", rows_))


def test_pair_positions_find_each_rows_answers_in_the_merged_rankings():
    rows = [
        {"chosen": "Q1 is it? yes it is", "rejected": "Q1 is it? no"},
        {"chosen": "Q2 why? because", "rejected": "Q2 why? because"},  # identical answers: dropped
        {"chosen": "Q1 is it? maybe", "rejected": "Q1 is it? no"},
        {"chosen": "Q3 how? well", "rejected": "Q3 how? badly"},
    ]
    table = datasets.Dataset.from_list(rows)
    with pytest.warns(UserWarning, match="dropped 1 of"):
        rankings = load_rankings(table, skip_invalid=True)
    positions = pair_positions(table, rankings)
    assert positions[1] is None
    for row, position in zip(rows, positions, strict=True):
        if position is not None:
            p, chosen, rejected = position
            prompt, responses = rankings[p]["prompt"], rankings[p]["responses"]
            assert (prompt + responses[chosen], prompt + responses[rejected]) == (row["chosen"], row["rejected"])
    assert positions[0][0] == positions[2][0] and positions[0][2] == positions[2][2]  # one prompt, one "no"
    # An explicit prompt finds the answers in that very prompt's ranking, not in one whose texts join alike.
    explicit = datasets.Dataset.from_list(
        [{"prompt": "Q", "chosen": " a b", "rejected": " a c"}, {"prompt": "Q a", "chosen": " b", "rejected": " c"}]
    )
    assert pair_positions(explicit, load_rankings(explicit)) == [(0, 0, 1), (1, 0, 1)]
