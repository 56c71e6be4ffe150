"""otcal's Python parse_bytes reads sizes as strictly as the command line's --memory-budget
(src/core/memory.cpp): whole bytes in [1, 2**64), no sign, hex, inf, nan, spaces around, fractions
of a byte, or units the C++ reader does not know; InvalidArgument names the argument."""

from __future__ import annotations

import pytest

from otcal._context import parse_bytes
from otcal.errors import InvalidArgument


def test_valid_sizes_are_read_exactly_like_the_command_line(rng):
    n = int(rng.integers(1, 2**62))
    assert parse_bytes(str(n)) == n  # exact, beyond float's 2**53
    assert parse_bytes(n) == n
    assert parse_bytes(str(2**64 - 1)) == 2**64 - 1
    k = int(rng.integers(1, 1000))
    assert parse_bytes(f"{k}MiB") == k * 1024**2
    assert parse_bytes(f"{k} GiB") == k * 1024**3
    assert parse_bytes(f"{k}G") == k * 1024**3  # as the C++ reader: G is GiB
    assert parse_bytes(f"{k}MB") == k * 1000**2
    assert parse_bytes("1.5KiB") == 1536
    assert parse_bytes("1e9") == 10**9
    assert parse_bytes(None) == 0  # the default budget


@pytest.mark.parametrize(
    "text",
    ["0", "0MiB", "-5", "+5", " 5", "0x10", "1e-400", "0.5", "1.5B", "1.0000001KiB", "1e400",
     str(2**64), "18446744073709551616B", "inf", "nan", "5 mib", "5gb", "5XB", "", "MiB", ".", "1.2.3", "e5"],
)
def test_bad_sizes_are_refused_naming_the_argument(text):
    with pytest.raises(InvalidArgument, match="memory_budget"):
        parse_bytes(text)


@pytest.mark.parametrize("value", [0, -1, 2**64, 0.5, float("nan"), float("inf"), True])
def test_bad_numbers_are_refused(value):
    with pytest.raises(InvalidArgument, match="budget"):
        parse_bytes(value, "budget")
