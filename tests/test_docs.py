"""The docs cannot drift: the site builds strictly and every code block runs.

Every fenced ```bash and ```python block of README.md and docs/*.md is executed, in document
order, by tests/docs_runner.py in one process (see its docstring for the stand-ins and the tiny
overrides); each block is one test here, failing with the block's output. A block preceded on
the line just above by ``<!-- docs-test: skip (reason) -->`` is skipped with that reason
(tests/README.md describes the convention). The site is built with ``mkdocs build --strict``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
RUN_LANGS = ("bash", "python")
RUNNER_TIMEOUT = 1800  # one process runs every block; generous for a loaded machine


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[dict]:
    """The fenced blocks of a Markdown file: {id, lang, code, skip} in order."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group("lang")
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        skip = SKIP.match(lines[start - 1]) if start else None
        out.append({"id": f"{path.relative_to(ROOT)}:{start + 1}", "lang": lang, "code": "\n".join(body) + "\n",
                    "skip": skip.group("reason") if skip else None})
    return out


def runnable() -> list[dict]:
    return [b for f in doc_files() for b in blocks_of(f) if b["lang"] in RUN_LANGS]


BLOCKS = runnable()


@pytest.fixture(scope="session")
def docs_results(tmp_path_factory) -> dict:
    """Every runnable block's result, from one run of tests/docs_runner.py."""
    work = tmp_path_factory.mktemp("docs_work")
    plan, results = work / "plan.json", work / "results.jsonl"
    plan.write_text(json.dumps({"blocks": [b for b in BLOCKS if not b["skip"]]}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "GPT_LIGHTNING_CACHE": str(work / "cache"), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run([sys.executable, str(ROOT / "tests/docs_runner.py"), str(plan), str(results)],
                              cwd=work, env=env, capture_output=True, text=True, timeout=RUNNER_TIMEOUT)
        crash = None if done.returncode == 0 else f"docs_runner exited with {done.returncode}:\n{done.stderr[-4000:]}"
    except subprocess.TimeoutExpired:
        crash = f"docs_runner ran past {RUNNER_TIMEOUT} s"
    found = {}
    if results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            found[row["id"]] = row
    return {"rows": found, "crash": crash}


def test_docs_setup(docs_results):
    """The stand-ins and the tiny runs the blocks use were made."""
    row = docs_results["rows"].get("setup")
    assert row is not None, docs_results["crash"]
    assert row["error"] is None, row["error"]


@pytest.mark.parametrize("block", BLOCKS, ids=[b["id"] for b in BLOCKS])
def test_block_runs(block, docs_results):
    if block["skip"]:
        pytest.skip(block["skip"])
    row = docs_results["rows"].get(block["id"])
    assert row is not None, f"not run: {docs_results['crash'] or 'an earlier block stopped the runner'}"
    assert row["error"] is None, f"{row['error']}\n--- output ---\n{row['output']}"


def test_skip_marks_name_a_reason_and_sit_above_a_block():
    """``<!-- docs-test: skip (...) -->`` needs a reason and must be right above a fenced block."""
    for path in doc_files():
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if line.lstrip().startswith("<!--") and "docs-test" in line:
                assert SKIP.match(line), f"{path.name}:{n + 1}: write <!-- docs-test: skip (reason) -->"
                assert n + 1 < len(lines) and FENCE.match(lines[n + 1]), f"{path.name}:{n + 1}: not above a block"


def _slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text))


def test_readme_links_reach_existing_files_and_headings():
    """README.md is not part of the site, so its links are checked here: files and anchors exist."""
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", text)
    assert any(target.startswith("docs/") for target, _ in links)
    for target, anchor in links:
        if target.startswith(("http://", "https://")):
            continue
        path = ROOT / target
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, f"README.md links to {target}#{anchor}: no such heading"


def test_readme_layout_names_every_module():
    """The README's Layout section lists every module of the package (a new module fails this
    until the Layout says where it lives), and every package folder."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1]
    words = set(re.findall(r"[\w.]+", layout))
    package = ROOT / "gpt_lightning"
    missing = sorted(str(p.relative_to(ROOT)) for p in package.rglob("*.py")
                     if p.stem != "__init__" and p.stem not in words and p.name not in words)
    assert not missing, f"README.md's Layout does not name {missing}"
    folders = sorted(p.name + "/" for p in package.iterdir() if p.is_dir() and any(p.glob("*.py")))
    assert all(f in layout for f in folders), folders


def test_named_modules_objects_and_files_exist():
    """Every ``gpt_lightning.x.y`` the docs name imports (or is an attribute of what does), and
    every repository path they name (``gpt_lightning/...py``, ``tests/...``, ``conf/...``) exists."""
    import importlib

    text = "\n".join(f.read_text() for f in doc_files())
    for dotted in sorted(set(re.findall(r"\bgpt_lightning(?:\.\w+)+(?![\w/])", text))):
        parts, obj = dotted.split("."), None
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for name in parts[cut:]:
                obj = getattr(obj, name, None)
            break
        assert obj is not None, f"the docs name {dotted}, which does not exist"
    for path in sorted(set(re.findall(r"\b(?:gpt_lightning|tests|benchmarks|conf|docs)/[\w/.-]+\.(?:py|yaml|sh|md|html)\b", text))):
        assert (ROOT / path).exists(), f"the docs name {path}, which does not exist"


def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: no broken link, anchor or nav entry; the config reference is generated."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-4000:]
    page = (tmp_path / "site/configuration/index.html").read_text()
    assert "optim.lr" in page and "trainer.max_steps" in page and "<code>int | None</code>" in page
    for option in (ROOT / "conf").glob("*/*.yaml"):  # every option of every group has its table
        if option.parent.name != "hydra":
            assert f"{option.parent.name}={option.stem}" in page, option
