"""docs/compatibility.md is generated from the matrix and must be current."""

from __future__ import annotations

from tests.matrix.generate import DOC, render


def test_compatibility_doc_is_current() -> None:
    with open(DOC, encoding="utf-8") as fh:
        committed = fh.read()
    assert committed == render(), "docs/compatibility.md is stale: run `python -m tests.matrix.generate`"
