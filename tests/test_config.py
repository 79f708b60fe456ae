import pytest

from mosaic_sglang import MosaicConfig, MosaicConfigError
from mosaic_sglang.config import ONLINE_SHARED
from mosaic_sglang.integration.options import resolve_config


def test_defaults_are_valid_and_round_trip_json():
    cfg = MosaicConfig()
    assert MosaicConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "options, field, expected, got",
    [
        ({"budget": -1}, "budget", "integer >= 0", "-1"),
        ({"budget": "big"}, "budget", "expected int", "'big'"),
        ({"budget": True}, "budget", "expected int", "True"),
        ({"recent_window": 1.5}, "recent_window", "expected int", "1.5"),
        ({"max_cluster_size": 0}, "max_cluster_size", "integer >= 1", "0"),
        ({"join_threshold": 0}, "join_threshold", "number > 0", "0"),
        ({"join_threshold": 2.0, "split_threshold": 1.0}, "split_threshold", ">= join_threshold", "1.0"),
        ({"score": "cosine"}, "score", "one of", "'cosine'"),
        ({"membership": "global"}, "membership", "one of", "'global'"),
        ({"cluster_cache_videos": 0}, "cluster_cache_videos", "integer >= 1", "0"),
        ({"residency_slack": -0.5}, "residency_slack", "number >= 0", "-0.5"),
        ({"prefetch": "yes"}, "prefetch", "expected bool", "'yes'"),
        ({"spill_backend": "mooncake"}, "spill_backend", "one of", "'mooncake'"),
        ({"spill_backend": "file", "spill_tokens": 8, "spill_path": "/s"}, "host_store_tokens", "integer >= 1", "got 0"),
        ({"spill_backend": "file", "host_store_tokens": 8, "spill_path": "/s"}, "spill_tokens", "integer >= 1", "got 0"),
        ({"spill_backend": "file", "host_store_tokens": 8, "spill_tokens": 8}, "spill_path", "a directory", "got ''"),
        ({"spill_tokens": -1}, "spill_tokens", "integer >= 0", "-1"),
        ({"membership": "per_layer", "host_store_tokens": 64, "prefetch": True}, "prefetch",
         "False with membership='per_layer'", "True"),
        # the defaults select per KV head with one membership per layer: what conflicts with them says how to go on
        ({"fill": "whole"}, "fill", "selection_heads='shared' allows 'whole'", "'whole'"),
        ({"graph_text_tokens": 64}, "graph_text_tokens", "selection_heads='shared' allows it", "64"),
        ({"host_store_tokens": 64, "prefetch": True}, "prefetch", "membership='shared' allows it", "True"),
    ],
)
def test_invalid_values_name_field_expected_and_got(options, field, expected, got):
    with pytest.raises(MosaicConfigError) as err:
        MosaicConfig.from_dict(options)
    message = str(err.value)
    assert f"'{field}'" in message and expected in message and got in message


def test_unknown_keys_are_rejected_with_the_known_list():
    with pytest.raises(MosaicConfigError, match=r"unknown key\(s\) \['bugdet'\].*'budget'"):
        MosaicConfig.from_dict({"bugdet": 3})


def test_resolve_config_merges_budget_flag_and_json():
    cfg = resolve_config("128", '{"recent_window": 16}')
    assert (cfg.budget, cfg.recent_window) == (128, 16)
    assert resolve_config("128", '{"budget": 128}').budget == 128  # the same value twice is no conflict
    with pytest.raises(MosaicConfigError, match=r"budget given twice: --mosaic-budget 128 and --mosaic-config budget 5"):
        resolve_config("128", '{"budget": 5, "recent_window": 16}')
    with pytest.raises(MosaicConfigError, match="--mosaic-budget: expected an integer >= 0, got 'x'"):
        resolve_config("x", None)
    with pytest.raises(MosaicConfigError, match="expected a JSON object"):
        resolve_config(None, "[1, 2]")
    with pytest.raises(MosaicConfigError, match="invalid JSON"):
        resolve_config(None, "{budget: 3}")


def test_online_shared_allows_what_per_head_lists_and_per_layer_membership_refuse():
    cfg = MosaicConfig(**ONLINE_SHARED, fill="whole", graph_text_tokens=8, host_store_tokens=64, prefetch=True)
    assert (cfg.regroups_tail, cfg.membership, cfg.selection_heads) == (False, "shared", "shared")
    with pytest.raises(TypeError):
        ONLINE_SHARED["regroup_tokens"] = 8  # read-only: a caller cannot change every user's preset


def test_offload_options_resolve():
    assert MosaicConfig.from_dict({"prefetch": True}).prefetch
    cfg = resolve_config(None, '{"host_store_tokens": 4096, "prefetch": true, "residency_slack": 0.5, "membership": "shared"}')
    assert (cfg.host_store_tokens, cfg.prefetch, cfg.residency_slack) == (4096, True, 0.5)
    with pytest.raises(MosaicConfigError, match="prefetch"):
        resolve_config(None, '{"prefetch": 1}')
