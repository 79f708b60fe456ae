"""SGLang's idle leak check covers the host tier: the hook compares the radix tree's host encodings with
the rows the host tier holds live and reports a difference through SGLang's own checker (which raises
under its strict idle check). Through engines: every offload test runs with it (a scheduler dies on a
report); here, the rule on its own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mosaic_sglang.integration import runtime as runtime_module
from mosaic_sglang.integration.host_row_check import check_host_rows_hook
from mosaic_sglang.integration.radix_cache import MosaicRadixCache


class _Checker:
    def __init__(self, values: torch.Tensor) -> None:
        self.tree_cache = object.__new__(MosaicRadixCache)
        self.tree_cache.all_values_flatten = lambda: values
        self.reports = []

    def _report_leak(self, pool_name: str, token_msg: str) -> None:
        self.reports.append(f"{pool_name} memory leak detected! {token_msg}")


class _Runtime:
    def __init__(self, host) -> None:
        self.host, self.releases, self.counters = host, 0, SimpleNamespace(forwards=0)


@pytest.fixture
def runtime(monkeypatch):
    runtime = _Runtime(SimpleNamespace(live_rows=0))
    monkeypatch.setattr(runtime_module, "_RUNTIME", runtime)
    return runtime


def test_equal_counts_pass_and_a_difference_is_reported_with_both(runtime):
    values = torch.tensor([5, -1, -2, 7, -3])  # three tree positions encode host rows
    runtime.host.live_rows = 3
    checker = _Checker(values)
    assert check_host_rows_hook("result", checker) == "result" and checker.reports == []
    runtime.host.live_rows, runtime.counters.forwards = 5, 1  # two rows the tree no longer encodes, never given back
    check_host_rows_hook(None, checker)
    assert checker.reports == ["mosaic host tier memory leak detected! the radix tree encodes 3 host rows but the "
                               "host tier holds 5 live rows (+2 leaked)"]
    runtime.host.live_rows, runtime.releases = 1, 1  # given back while the tree still encodes them (twice)
    check_host_rows_hook(None, checker)
    assert "(-2 leaked)" in checker.reports[-1]


def test_it_runs_once_per_idle_period(runtime):
    """SGLang's idle loop calls its check on every pass: the tree is walked only after a forward or a
    release since the last walk."""
    walks = []
    checker = _Checker(torch.tensor([-1]))
    checker.tree_cache.all_values_flatten = lambda: walks.append(1) or torch.tensor([-1])
    runtime.host.live_rows = 1
    for _ in range(3):
        check_host_rows_hook(None, checker)
    assert len(walks) == 1
    runtime.releases += 1
    check_host_rows_hook(None, checker)
    check_host_rows_hook(None, checker)
    runtime.counters.forwards += 1
    check_host_rows_hook(None, checker)
    assert len(walks) == 3 and checker.reports == []


def test_nothing_is_checked_without_offload_or_for_other_caches(monkeypatch):
    monkeypatch.setattr(runtime_module, "_RUNTIME", _Runtime(None))
    checker = _Checker(torch.tensor([-1]))
    check_host_rows_hook(None, checker)
    other = SimpleNamespace(tree_cache=object(), _report_leak=lambda *a: pytest.fail("not ours"))
    monkeypatch.setattr(runtime_module, "_RUNTIME", _Runtime(SimpleNamespace(live_rows=9)))
    check_host_rows_hook(None, other)
    assert checker.reports == []
    empty = _Checker(torch.empty(0, dtype=torch.int64))
    monkeypatch.setattr(runtime_module, "_RUNTIME", _Runtime(SimpleNamespace(live_rows=0)))
    check_host_rows_hook(None, empty)
    assert empty.reports == []
