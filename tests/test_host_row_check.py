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


@pytest.fixture
def host(monkeypatch):
    tier = SimpleNamespace(live_rows=0)
    monkeypatch.setattr(runtime_module, "_RUNTIME", SimpleNamespace(host=tier))
    return tier


def test_equal_counts_pass_and_a_difference_is_reported_with_both(host):
    values = torch.tensor([5, -1, -2, 7, -3])  # three tree positions encode host rows
    host.live_rows = 3
    checker = _Checker(values)
    assert check_host_rows_hook("result", checker) == "result" and checker.reports == []
    host.live_rows = 5  # two rows the tree no longer encodes were never given back
    check_host_rows_hook(None, checker)
    assert checker.reports == ["mosaic host tier memory leak detected! the radix tree encodes 3 host rows but the "
                               "host tier holds 5 live rows (+2 leaked)"]
    host.live_rows = 1  # given back while the tree still encodes them (a double release)
    check_host_rows_hook(None, checker)
    assert "(-2 leaked)" in checker.reports[-1]


def test_nothing_is_checked_without_offload_or_for_other_caches(monkeypatch):
    monkeypatch.setattr(runtime_module, "_RUNTIME", SimpleNamespace(host=None))
    checker = _Checker(torch.tensor([-1]))
    check_host_rows_hook(None, checker)
    other = SimpleNamespace(tree_cache=object(), _report_leak=lambda *a: pytest.fail("not ours"))
    monkeypatch.setattr(runtime_module, "_RUNTIME", SimpleNamespace(host=SimpleNamespace(live_rows=9)))
    check_host_rows_hook(None, other)
    assert checker.reports == []
    empty = _Checker(torch.empty(0, dtype=torch.int64))
    monkeypatch.setattr(runtime_module, "_RUNTIME", SimpleNamespace(host=SimpleNamespace(live_rows=0)))
    check_host_rows_hook(None, empty)
    assert empty.reports == []
