"""Faults print as valid Python in Hypothesis' failing programs (the public ``_repr_pretty_``)."""

from __future__ import annotations

import pytest
from hypothesis.vendor.pretty import pretty

import chaos.faults.network as network
import chaos.faults.server as server
from chaos.faults.base import Fault
from chaos.faults.catalogue import CATALOGUE
from chaos.faults.network import HalfOpen, Latency
from chaos.faults.server import RestartFast


def _every_fault_class() -> list[type[Fault]]:
    """The shipped catalogue's classes (not faults other tests define for themselves)."""
    return sorted(
        {cls for cls in CATALOGUE.values() if cls.__module__.startswith("chaos.faults.")},
        key=lambda cls: cls.name,
    )


@pytest.mark.parametrize(
    "fault", [Latency(ms=30, jitter=10), HalfOpen(), RestartFast(), [Latency(ms=5)]]
)
def test_a_fault_prints_as_its_repr(fault):
    assert pretty(fault) == repr(fault)


@pytest.mark.parametrize("cls", _every_fault_class(), ids=lambda cls: cls.name)
def test_every_catalogued_fault_prints_without_its_class_variables(cls):
    """Hypothesis' default for a dataclass lists ClassVars as arguments (name=, target_kind=)."""
    try:
        fault = cls()
    except TypeError:
        pytest.skip(f"{cls.__name__} needs arguments")
    text = pretty(fault)
    assert "name=" not in text and "target_kind=" not in text
    assert eval(text, {**vars(network), **vars(server)}) == fault
