import json
import math
import re
import warnings

import datasets
import pytest

from rewardcollapse.data import detect_format, load_rankings, merge_pairs, split_implicit_prompt
from rewardcollapse.data.schema import ranking_row

from .conftest import write_jsonl

RANKING_ROWS = [
    {"prompt": "Name a colour.", "responses": ["Red.", "Blue, I think.", "Dunno."], "ranks": [0, 0, 1]},
    {"prompt": "Write a poem.", "responses": ["Roses bloom", "Rain", "A", "Sky"], "utility": "-1/x", "openness": 1.0},
]


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def check_canonical(ds):
    assert ds.column_names == ["prompt", "responses", "ranks", "pairs", "margins", "utility", "openness"]
    rows = ds.to_list()
    assert rows[0]["ranks"] == [0, 0, 1]
    assert rows[1]["ranks"] == [0, 1, 2, 3]  # list order when ranks are absent
    assert rows[1]["utility"] == "-1/x" and rows[1]["openness"] == 1.0
    assert rows[0]["utility"] is None and rows[0]["pairs"] is None and rows[0]["margins"] is None


def test_jsonl_json_parquet_csv_and_disk_sources_agree(tmp_path):
    check_canonical(load_rankings(write_jsonl(tmp_path / "d.jsonl", RANKING_ROWS)))
    (tmp_path / "d.json").write_text(json.dumps(RANKING_ROWS))
    check_canonical(load_rankings(str(tmp_path / "d.json")))
    # from_list takes the columns from the first row, so spell out the missing fields.
    table = datasets.Dataset.from_list([{"ranks": None, "utility": None, "openness": None, **r} for r in RANKING_ROWS])
    table.to_parquet(tmp_path / "d.parquet")
    check_canonical(load_rankings(tmp_path / "d.parquet"))
    table.save_to_disk(tmp_path / "saved")
    check_canonical(load_rankings(tmp_path / "saved"))
    datasets.DatasetDict({"test": table}).save_to_disk(tmp_path / "dict")
    check_canonical(load_rankings(tmp_path / "dict", split="test"))
    with pytest.raises(ValueError, match=r"`split` 'train' is not in .*\['test'\]"):
        load_rankings(tmp_path / "dict")
    data_dir = tmp_path / "files"
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", RANKING_ROWS)
    check_canonical(load_rankings(data_dir))
    check_canonical(load_rankings(table))
    # CSV holds the lists as JSON text.
    csv = tmp_path / "d.csv"
    lines = ["prompt,responses,ranks,utility,openness"]
    for row in RANKING_ROWS:
        cells = [row["prompt"], json.dumps(row["responses"]), json.dumps(row.get("ranks")) if "ranks" in row else ""]
        cells += [row.get("utility", ""), str(row.get("openness", ""))]
        lines.append(",".join('"' + c.replace('"', '""') + '"' if c else "" for c in cells))
    csv.write_text("\n".join(lines) + "\n")
    check_canonical(load_rankings(csv))


def test_scored_rows_rank_by_score_with_ties(tmp_path):
    rows = [{"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [1.0, 7.5, 1.0, 3]}]
    ds = load_rankings(write_jsonl(tmp_path / "s.jsonl", rows))
    assert ds[0]["ranks"] == [2, 0, 2, 1]


def test_pairwise_pairs_merge_into_one_partial_order(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "other", "chosen": "x", "rejected": "y"},
        {"prompt": "q", "chosen": "b", "rejected": "c"},
        {"prompt": "s", "chosen": "1", "rejected": "2"},
        {"prompt": "s", "chosen": "3", "rejected": "4"},
    ]
    ds = load_rankings(write_jsonl(tmp_path / "p.jsonl", rows))
    got = ds.to_list()
    assert [r["prompt"] for r in got] == ["q", "other", "s"]  # first appearance order, nothing lost
    assert got[0]["responses"] == ["a", "b", "c"] and got[0]["ranks"] == [0, 1, 2]  # closure: a above c
    assert got[1]["ranks"] == [0, 1]
    # Two unrelated pairs are no weak order: kept as pairs.
    assert got[2]["ranks"] is None and got[2]["pairs"] == [[0, 1], [2, 3]]


def test_pairwise_contradiction_names_its_rows(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "fine", "chosen": "x", "rejected": "y"},
        {"prompt": "q", "chosen": "b", "rejected": "c"},
        {"prompt": "q", "chosen": "c", "rejected": "a"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(ValueError, match=r"rows 0, 2, 3: the chosen/rejected pairs of prompt 'q' contradict"):
        load_rankings(path)
    with pytest.warns(UserWarning, match=r"dropped 1 of 2 prompts: 1 contradictory pairs"):
        ds = load_rankings(path, skip_invalid=True)
    assert ds["prompt"] == ["fine"]


def test_implicit_prompt_text_and_conversational(tmp_path):
    rows = [
        {"chosen": "Human: hi there\n\nAssistant: hello friend", "rejected": "Human: hi there\n\nAssistant: go away"},
        {"chosen": "Human: hi there\n\nAssistant: hey", "rejected": "Human: hi there\n\nAssistant: hello friend"},
    ]
    ds = load_rankings(write_jsonl(tmp_path / "implicit.jsonl", rows))
    assert ds.num_rows == 1
    row = ds[0]
    assert row["prompt"] == "Human: hi there\n\nAssistant:"
    assert row["responses"] == [" hello friend", " go away", " hey"]
    assert row["ranks"] == [1, 2, 0]  # hey above hello friend above go away

    user = {"role": "user", "content": "What is 2+2?"}
    conversational = [
        {
            "chosen": [user, {"role": "assistant", "content": "4"}],
            "rejected": [user, {"role": "assistant", "content": "5"}],
        }
    ]
    ds = load_rankings(write_jsonl(tmp_path / "conv.jsonl", conversational))
    assert ds[0]["prompt"] == [user]
    assert ds[0]["responses"] == [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "5"}]]
    assert ds[0]["ranks"] == [0, 1]


def test_split_implicit_prompt_never_cuts_a_word():
    assert split_implicit_prompt("Q: hi A: yes", "Q: hi A: yeah") == ("Q: hi A:", " yes", " yeah")
    # No whole word in common: no prompt (it used to come back as "", which merged unrelated rows).
    with pytest.raises(ValueError, match=r"the pair: `chosen` and `rejected` have no common prompt"):
        split_implicit_prompt("abc", "abd")


def test_merge_pairs_is_transitive():
    row, error = merge_pairs("p", [("a", "b"), ("b", "c"), ("c", "d")], [0, 1, 2], {})
    assert error is None and row["ranks"] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "p", "responses": ["only one"]}, r"row 1: `responses` has 1 entry; .* at least 2"),
        ({"prompt": "p", "responses": "not a list"}, r"row 1: `responses` must be a list"),
        ({"prompt": "p", "responses": ["a", "  "]}, r"row 1: response 1 is empty"),
        ({"prompt": "p", "responses": ["a", "b", "a"]}, r"row 1: responses 0 and 2 are identical"),
        ({"prompt": "p", "responses": ["a", 3]}, r"row 1: response 1 must be a string or a list of chat messages"),
        ({"prompt": 5, "responses": ["a", "b"]}, r"row 1: `prompt` must be a string or a list of chat messages"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [0]}, r"row 1: `ranks` must be a list of 2 integers"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 0.5]}, r"row 1: `ranks\[1\]` must be an integer"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}, r"row 1: all 2 responses have rank 1"),
        ({"prompt": "p", "responses": ["a", "b"], "utility": "cubic"}, r"row 1: `utility` 'cubic' is not a utility"),
        ({"prompt": "p", "responses": ["a", "b"], "openness": 1.5}, r"row 1: `openness` must be a number in \[0, 1\]"),
    ],
)
def test_each_validation_branch_names_row_and_field(row, match):
    # Rows whose types Arrow could not put in one column are checked directly; the loader path adds the source.
    canonical, error = ranking_row(row, "row 1")
    assert canonical is None
    assert re.search(match, error.message), error.message


def test_loader_raises_on_the_first_invalid_row(tmp_path):
    rows = [{"prompt": "ok", "responses": ["a", "b"]}, {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}]
    with pytest.raises(ValueError, match=r"r.jsonl: row 1: all 2 responses have rank 1.*skip_invalid=True"):
        load_rankings(write_jsonl(tmp_path / "r.jsonl", rows))


def test_scored_validation(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b"], "scores": [1.0, None]},
        {"prompt": "q", "responses": ["a", "b"], "scores": [1.0]},
        {"prompt": "r", "responses": ["a", "b"], "scores": [2.0, 1.0]},
    ]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(ValueError, match=r"row 0: `scores\[1\]` must be a number \(not NaN\).*\(1 more invalid rows\)"):
        load_rankings(path)
    nan_row = [{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, math.nan]}]
    with pytest.raises(ValueError, match="not NaN"):
        load_rankings(datasets.Dataset.from_list(nan_row))
    with pytest.warns(UserWarning, match=r"dropped 2 of 3 prompts: 2 bad scores \(first: row 0"):
        ds = load_rankings(path, skip_invalid=True)
    assert ds["prompt"] == ["r"]


def test_skip_invalid_reports_each_reason(tmp_path):
    rows = [
        {"prompt": "a", "responses": ["x"]},
        {"prompt": "b", "responses": ["x", "y"]},
        {"prompt": "c", "responses": ["x", "x"]},
        {"prompt": "d", "responses": ["x"]},
        {"prompt": "e", "responses": ["x", "y"], "openness": 2.0},
    ]
    with pytest.warns(UserWarning) as caught:
        ds = load_rankings(write_jsonl(tmp_path / "r.jsonl", rows), skip_invalid=True)
    message = str(caught[0].message)
    assert "dropped 4 of 5 prompts" in message
    assert "2 fewer than 2 responses (first: row 0" in message
    assert "1 duplicate response (first: row 2" in message
    assert "1 openness out of range (first: row 4" in message
    assert ds["prompt"] == ["b"]


def test_source_and_format_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the data format from the columns"):
        load_rankings(datasets.Dataset.from_list([{"text": "hi"}]))
    with pytest.raises(ValueError, match="`input_format` must be"):
        load_rankings(datasets.Dataset.from_list(RANKING_ROWS), input_format="listwise")
    with pytest.raises(ValueError, match=r"scored data needs columns .*\['scores'\] missing"):
        load_rankings(datasets.Dataset.from_list(RANKING_ROWS), input_format="scored")
    with pytest.raises(ValueError, match="pairwise data needs columns"):
        load_rankings(datasets.Dataset.from_list(RANKING_ROWS), input_format="pairwise")
    with pytest.raises(ValueError, match="does not exist"):
        load_rankings(str(tmp_path / "missing.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown extension"):
        load_rankings(tmp_path / "d.txt")
    with pytest.raises(TypeError, match="`source` must be"):
        load_rankings(42)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "responses": ["a", "b"]}\n{not json\n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 2 is not valid JSON"):
        load_rankings(tmp_path / "broken.jsonl")


def test_hub_name_goes_through_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(
            [{"ranks": None, "utility": None, "openness": None, **r} for r in RANKING_ROWS]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    check_canonical(load_rankings("someone/rankings", split="test"))
    assert calls == [("someone/rankings", "test")]


def test_detect_format():
    assert detect_format(["prompt", "responses", "scores"]) == "scored"
    assert detect_format(["prompt", "responses"]) == "ranking"
    assert detect_format(["chosen", "rejected"]) == "pairwise"


def test_pairwise_grouping_across_batches(tmp_path):
    # 20,000 pair rows; each prompt's two pairs are 10,000 rows apart, so they fall in different conversion batches.
    n = 10_000
    first = [{"prompt": f"p{i}", "chosen": f"best {i}", "rejected": f"middle {i}"} for i in range(n)]
    second = [{"prompt": f"p{i}", "chosen": f"middle {i}", "rejected": f"worst {i}"} for i in range(n)]
    ds = load_rankings(write_jsonl(tmp_path / "many.jsonl", first + second))
    assert ds.num_rows == n
    assert ds["prompt"][:3] == ["p0", "p1", "p2"] and ds["prompt"][-1] == f"p{n - 1}"
    assert ds[1234]["responses"] == ["best 1234", "middle 1234", "worst 1234"]
    assert all(ranks == [0, 1, 2] for ranks in ds["ranks"])


def test_pairs_column_is_honoured(tmp_path):
    data = load_rankings(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), "pairs": [[2, 0], [2, 1]]}])
    )
    row = data[0]
    assert row["pairs"] == [[2, 0], [2, 1]] and row["ranks"] is None
    from rewardcollapse.data import ranked_pairs

    assert ranked_pairs(row).tolist() == [[False] * 3, [False] * 3, [True, True, False]]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ranks": [0, 1, 2], "pairs": [[2, 0]]}, "has both `ranks` and `pairs`; give one"),
        ({"pairs": [[0, 3]]}, r"`pairs\[0\]` must be \[i, j\] with i != j in 0..2, got \[0, 3\]"),
        ({"pairs": [[1, 1]]}, r"`pairs\[0\]` must be \[i, j\] with i != j"),
        ({"pairs": [[0, 1], [0, 1]]}, "lists a pair twice"),
        ({"pairs": [[0, 1], [1, 2], [2, 0]]}, r"contradict each other \((\d) above \d above \d above \1\)"),
        ({"pairs": []}, "got an empty list"),
    ],
)
def test_bad_pairs_are_refused_naming_the_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), **row}])
    with pytest.raises(ValueError, match=f"row 0: .*{message}"):
        load_rankings(path)


def test_text_where_a_number_belongs_is_refused(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "p", "responses": ["a", "b"], "openness": 0.5},
            {"prompt": "q", "responses": ["a", "b"], "openness": "NaN"},
        ],
    )
    with pytest.raises(ValueError, match="row 1: `openness` is NaN, not a number"):
        load_rankings(path)
    alone = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "q", "responses": ["a", "b"], "openness": "NaN"}])
    with pytest.raises(ValueError, match="row 0: `openness` must be a number in \\[0, 1\\]"):
        load_rankings(alone)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "responses": ["a", "b"]}\n{"prompt": x}\n',
            "line 3 is not valid JSON",
        ),
        (b"", "is empty: no rows to read"),
        (b'{"prompt": "\xff", "responses": ["a", "b"]}\n', "line 1 is not UTF-8 text"),
        (
            b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "chosen": "a", "rejected": "b"}\n',
            "mixes ranking rows",
        ),
    ],
)
def test_broken_data_files_are_named_with_their_line(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_rankings(path)


def test_blank_lines_between_rows_are_fine(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a", "b"]}\n\n{"prompt": "q", "responses": ["a", "b"]}\n')
    assert len(load_rankings(path)) == 2


def test_a_chat_message_without_role_is_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"content": "hi"}], "responses": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"row 0: `prompt` must be .*; message 0 has no 'role'"):
        load_rankings(path)


def test_text_that_looks_like_json_stays_text_outside_csv(tmp_path):
    chat_text = json.dumps([{"role": "user", "content": "hi"}])
    rows_ = [{"prompt": chat_text, "responses": ["a", "b"]}, {"prompt": "[3, 1, 2]", "responses": ["[1]", "b"]}]
    data = load_rankings(write_jsonl(tmp_path / "d.jsonl", rows_))
    assert data["prompt"] == [chat_text, "[3, 1, 2]"] and data[1]["responses"] == ["[1]", "b"]
    csv = tmp_path / "d.csv"
    csv.write_text('prompt,responses\n[3 1 2],"[""a"", ""b""]"\n')  # a CSV cell holds the answer list as JSON
    assert load_rankings(csv)[0]["responses"] == ["a", "b"]


def test_ranks_beyond_int64_are_a_row_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "responses": ["a", "b"], "ranks": [0, 10**20]}])
    with pytest.raises(ValueError, match=r"row 0: `ranks\[1\]` must be an integer"):
        load_rankings(path)
