"""The examples in the docstrings of otcal's optimal-transport API run and print what they show."""

from __future__ import annotations

import doctest

import pytest

import otcal
import otcal.ot


def test_docstring_examples_run():
    pytest.importorskip("anndata")  # PointCloud.from_anndata's example
    results = doctest.testmod(otcal.ot, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 20 and results.failed == 0


def test_every_public_name_has_an_example():
    for name in otcal.ot.__all__:
        obj = getattr(otcal, name)
        assert obj.__doc__ and "Example" in obj.__doc__, name
    for method in ("apply", "marginal", "sparsify", "transport_matrix"):
        assert "Example" in getattr(otcal.SinkhornOutput, method).__doc__, method
    assert "Example" in otcal.PointCloud.from_anndata.__doc__
