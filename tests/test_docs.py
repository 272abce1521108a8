"""The README and docs/ pages: links resolve, every Python block runs as printed, and the files they name exist."""

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
EXAMPLE_PATH = re.compile(r"examples/[\w.-]+")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), flags=re.M)}


def local_links(page: Path) -> list[str]:
    return [link for link in LINK.findall(page.read_text()) if not link.startswith(("http://", "https://"))]


def python_blocks() -> list:
    """Every ```python block of the pages, with the line of the page where its code starts."""
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in PYTHON_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start(1)) + 1
            blocks.append(pytest.param(page, line, match.group(1), id=f"{page.name}:{line}"))
    return blocks


def run_block(page: Path, line: int, code: str, folder: Path) -> dict:
    """Run one block in ``folder`` (holding a copy of examples/) as a reader would; tracebacks give the page's lines."""
    shutil.copytree(ROOT / "examples", folder / "examples")
    namespace: dict = {"__name__": "__main__"}
    exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    broken = []
    for link in local_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_anchor_rule():
    assert github_anchor("`make demo`: the paper's finding on a CPU") == "make-demo-the-papers-finding-on-a-cpu"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_example_files_are_shipped(page):
    missing = sorted({path for path in EXAMPLE_PATH.findall(page.read_text()) if not (ROOT / path).is_file()})
    assert not missing, f"{page.name} names files that examples/ does not hold: {missing}"


def test_every_page_with_code_is_collected():
    """The block pattern finds the blocks: a page's count of python fences equals the blocks collected from it."""
    collected = [param.values[0] for param in python_blocks()]
    for page in PAGES:
        assert collected.count(page) == page.read_text().count("```python\n"), page.name
    assert ROOT / "README.md" in collected


@pytest.mark.parametrize(("page", "line", "code"), python_blocks())
def test_python_block_runs(page, line, code, tmp_path, monkeypatch):
    """Each block runs as printed, in a fresh namespace, from a folder where the shipped examples/ resolve."""
    monkeypatch.chdir(tmp_path)
    run_block(page, line, code, tmp_path)


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    """The README's first Python block (the maths, numpy and scipy only) runs as printed and gives the stated values."""
    blocks = python_blocks()
    page, line, code = next(param.values for param in blocks if param.values[0].name == "README.md")
    monkeypatch.chdir(tmp_path)
    namespace = run_block(page, line, code, tmp_path)
    assert namespace["res"].success
    assert namespace["law"].args == (0.5, 0.5)


def test_examples_load_in_their_formats():
    """The shipped examples are what the README says: 12 ranked prompts of 4 answers, half closed; TRL pairs."""
    from rewardcollapse.data import detect_format, load_rankings, read_table

    rankings = load_rankings(ROOT / "examples" / "rankings.jsonl")
    assert len(rankings) == 12 and {len(r) for r in rankings["responses"]} == {4}
    assert sorted(rankings["openness"]) == [0.0] * 6 + [1.0] * 6
    pairwise = ROOT / "examples" / "pairwise.jsonl"
    assert detect_format(list(read_table(pairwise).column_names)) == "pairwise"
    assert len(load_rankings(pairwise)) == 4
    assert len(load_rankings(ROOT / "examples" / "scored.jsonl")) == 4
