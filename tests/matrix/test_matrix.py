"""The translation matrix: every (client wire × upstream wire × scenario × mode) cell, end to end."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.matrix.harness import Cell, Matrix, cells, check

CELLS = list(cells())


@pytest.fixture(scope="module")
def matrix() -> Iterator[Matrix]:
    m = Matrix()
    yield m
    m.close()


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(matrix: Matrix, cell: Cell) -> None:
    check(matrix.run(cell), matrix.drivers)


def test_every_pair_of_wires_is_covered() -> None:
    pairs = {(c.client, c.upstream) for c in CELLS}
    wires = {c.client for c in CELLS}
    assert pairs == {(a, b) for a in wires for b in wires}
