"""Pool sizing: the per-process math and the capacity warning."""

from __future__ import annotations

import warnings

import pytest

from plain_pool.sizing import PoolCapacityWarning, ServerLimits, check_capacity, recommend_max_size


def test_seed_example_fits():
    # 8 workers x 4 = 32 against a 60-connection limit (seed 000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_capacity(8, 4, 60, reserve=3) == 60 - 3 - 32


def test_recommend():
    assert recommend_max_size(8, 60, reserve=3) == 7
    assert recommend_max_size(8, 60, reserve=3, other_clients=10) == 5
    assert recommend_max_size(1, 100, reserve=0) == 100
    for workers in range(1, 20):
        size = recommend_max_size(workers, 97, reserve=3)
        assert workers * size <= 94 < workers * (size + 1)


def test_recommend_impossible_names_numbers():
    with pytest.raises(ValueError, match="10 workers"):
        recommend_max_size(10, 12, reserve=3)
    with pytest.raises(ValueError):
        recommend_max_size(0, 60)


def test_warning_names_the_numbers():
    with pytest.warns(PoolCapacityWarning) as record:
        headroom = check_capacity(16, 4, 60, reserve=3)
    assert headroom == 57 - 64
    message = str(record[0].message)
    for number in ("16", "4", "64", "60", "57", "3"):
        assert number in message
    assert issubclass(PoolCapacityWarning, UserWarning)


def test_server_limits_available():
    assert ServerLimits(100, 3, 2).available == 95
