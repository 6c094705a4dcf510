"""Comments cite what a reader can open: upstream files or docs/official-behaviour.md sections.

The developer specs are not part of the repository, so a comment pointing at them is a dead end.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "official-behaviour.md"
SEARCHED = ("flashocc", "tests", "benchmarks", "docs", "README.md")
# Names are split so that this file itself does not match a plain grep for them.
SPEC_CITATION = re.compile("|".join([r"flashocc\.md", r"metrics_and_data\.md", "effocc_trt" + "_variants",
                                     "sparse_panoptic" + "_lidar", "\u00a7"]))
# Files whose comments another change is rewriting; drop entries as they are cleaned.
PENDING: tuple[str, ...] = ()  # paths still being converted; none left


def _text_files():
    for entry in SEARCHED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.suffix in (".py", ".md") and "__pycache__" not in f.parts:
                yield f, f.relative_to(ROOT).as_posix()


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_doc_anchors_exist():
    anchors = {_github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", DOC.read_text(encoding="utf-8"), re.M)}
    broken = []
    for f, rel in _text_files():
        for anchor in re.findall(r"official-behaviour\.md#([A-Za-z0-9_-]+)", f.read_text(encoding="utf-8")):
            if anchor not in anchors:
                broken.append(f"{rel}: #{anchor}")
    assert not broken, f"links to missing sections of {DOC.name}: {broken}"


def test_no_citations_of_unpublished_specs():
    offenders = []
    for f, rel in _text_files():
        if rel.startswith(PENDING):
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if SPEC_CITATION.search(line):
                offenders.append(f"{rel}:{n}")
    assert not offenders, f"cite the upstream file/function or docs/official-behaviour.md instead: {offenders}"
