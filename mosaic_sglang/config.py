"""`MosaicConfig`: every knob of the cluster cache, in one frozen, validated dataclass.

Invalid values raise `MosaicConfigError` (a `ValueError`) naming the field, what was expected and what
was given, so a bad `--mosaic-config` fails at launch, before any server process starts.

Also here: `ENV_VARS`, the one typed registry of the ``MOSAIC_*`` environment variables the project
reads (nothing else reads ``os.environ`` for a ``MOSAIC_`` name).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping, Optional

__all__ = ["MosaicConfig", "MosaicConfigError", "ONLINE_SHARED", "EnvVar", "ENV_VARS", "MOSAIC_CONFIG", "MOSAIC_DEBUG", "MOSAIC_DUMP_DIR",
           "MOSAIC_CHECK_NO_SYNC", "MOSAIC_FORWARD_LOG_DIR", "MOSAIC_TRITON_ATTENTION",
           "MOSAIC_ATTENTION_RUNNER", "MOSAIC_FAKE_FLASHINFER_LOG", "MOSAIC_EMULATE_DECODE_GRAPHS"]


ONLINE_SHARED = MappingProxyType({"regroup_tokens": 0, "membership": "shared", "selection_heads": "shared"})
"""Options of the online index with one membership and one cluster list per layer (the defaults before
session 19): ``MosaicConfig(**ONLINE_SHARED)``. Cheaper ingest and one list per layer; what decode CUDA
graphs (`graph_text_tokens`), ``fill='whole'`` and cross-layer ``prefetch`` with the host tier need."""


class MosaicConfigError(ValueError):
    """A Mosaic option is unknown, of the wrong type or out of range."""


_CHOICES = {
    "fill": ("exact", "whole"),
    "membership": ("shared", "per_layer"),
    "score": ("centroid", "centroid_radius", "size_weighted"),
    "query_reduce": ("mean", "max"),
    "budget_mode": ("tokens", "mass"),
    "selection_heads": ("shared", "per_kv_head"),
    "spill_backend": ("none", "file"),
}


@dataclass(frozen=True)
class MosaicConfig:
    """Knobs of the Mosaic cluster cache.

    Token accounting (per sequence and per layer): the attended set is
    ``sinks ∪ recent window ∪ text tokens ∪ selected clusters``; ``budget`` bounds only the
    selected-cluster part, the others are always attended.

    Example:
        >>> MosaicConfig(budget=512, recent_window=32).budget
        512
    """

    budget: int = 1024
    """Visual tokens selected from clusters, per sequence and layer (beyond sinks/window/text); per KV head with
    selection_heads='per_kv_head' (the default), so a layer may read up to H times as many distinct positions."""
    sink_tokens: int = 4
    """First tokens of the sequence that are always attended (attention sinks)."""
    recent_window: int = 64
    """Most recent tokens that are always attended."""
    max_cluster_size: int = 64
    """Size cap: a cluster at the cap takes no new tokens; above it, it is marked for splitting."""
    join_threshold: float = 0.2
    """A token joins a cluster only if the cluster's spread after the join stays under this multiple
    of the running key variance (relative, so it transfers across models). 0.2: best recall per
    cluster count on the synthetic trace at 10 % budget (clusters/README.md); 1.0 degenerates to one
    cluster per frame."""
    split_threshold: float = 0.3
    """Clusters whose relative spread drifts past this are marked for deferred splitting."""
    active_frames: int = 4
    """Assignment candidates: clusters that received a token in the last `active_frames` frames."""
    split_work_per_step: int = 16
    """Most clusters split in one maintenance call (bounded work off the critical path)."""
    regroup_tokens: int = 24
    """0: clusters stay as the online assignment made them. > 0: `maintain` replaces the clusters of every
    `regroup_frames` sealed frames by k-means clusters of about this many tokens (clusters/regroup.py; off
    the decode path; offload waits for it). 24: with the other defaults, selected units of 24.5 / 21.7 tokens
    (online clusters: 5.2 / 2.1) at 0.567 / 0.921 mass recall on the synthetic / caption traces (online, one
    list: 0.567 / 0.926), 12.9-28.7x fewer copies than token-level; 16 leaves synthetic units at 15.2 tokens,
    20 only 10.8x fewer copies at 64K (benchmarks/README.md, granularity and offload sections)."""
    regroup_frames: int = 32
    """Sealed frames regrouped together (one k-means per span of this many frames). 32: a span holds more of
    a scene (captions, per-layer, 16 tokens: 0.924 at 15.3 tokens per unit; 16 frames: 0.922 at 14.7). With
    the host tier a sealed frame moves before its span is regrouped and is laid out again on the host once
    its clusters are regrouped and sealed, or when the request ends (offload/planner.py, `stream_groups`), so
    the span does not add to a streamed prefill's device tokens."""
    regroup_tail: bool = True
    """With `regroup_tokens` (no-op at 0): when a request's prompt has been prefilled, its video's frames not
    regrouped yet (the active ones and a partial span) are regrouped too (`ClusterIndex.regroup_tail`, in that
    extend forward, never in decode), and its first decode step selects against them. On: a question mostly
    reads the recent frames, where online clusters are smallest (without it the captions' selected units are
    4.6-4.7 tokens); it costs one k-means per question (163 ms with 30 layers per-layer on a 2-core CPU). A
    forward whose requests are all prefill-only (``max_new_tokens=0``: a streaming session's video chunks)
    skips it, so spans are not cut at every chunk; a chunk batched with another request's question is still
    regrouped at its end (SGLang marks prefill-only per batch) (benchmarks/README.md, granularity section)."""
    membership: str = "per_layer"
    """'shared': one membership for all layers; 'per_layer': one per layer. Per-layer by default: the shared
    membership with regrouping (16 per 32 + tail) and per-head lists misses the captions' recall line by 0.03
    point and copies only 8.9x fewer than token-level at 64K (goal: 10x); per-layer costs 1.1-1.9x the ingest
    time per frame of shared membership with the same regrouping (synthetic / captions; still flat in history)
    and no cross-layer `prefetch` with the host tier. With
    host_store_tokens each extent's plane is ordered by that layer's clusters: one copy per (layer, cluster),
    12.9-28.7x fewer copies than token-level through the served layout (offload/layer_orders.py;
    benchmarks/README.md, offload section)."""
    score: str = "size_weighted"
    """Cluster scoring rule: 'centroid', 'centroid_radius' or 'size_weighted'."""
    share_of_total: bool = True
    """'size_weighted' ranks a cluster by its estimated share of each query's *total* attention mass: the
    positions attended anyway (sinks, text, window, a forward's own tokens) join the softmax's denominator
    exactly, from their keys, so a query whose sinks hold its attention weighs little. False: the share
    among the clusters only. The forward's own tokens count within each query's last `recent_window` (a
    question, a decode step: all of them; a long prefill chunk stays O(Tq · window)). True: +0.5 to +0.8
    point of mass recall on the SmolLM2 captions at 2-25 %, within 0.3 on the synthetic trace
    (benchmarks/README.md, retrieval_quality.py)."""
    fill: str = "exact"
    """Budget fill: 'exact' takes whole clusters by rank and then truncates the boundary cluster (lowest
    positions first), so every layer attends exactly min(budget, eligible) selected tokens (one attention
    plan serves all layers); 'whole' stops at the first cluster that does not fit (measured in
    benchmarks/README.md: exact never recalls less, it attends a superset)."""
    budget_mode: str = "tokens"
    """'tokens': every layer attends min(budget, eligible) selected tokens; 'mass': at each selection, per
    layer, the fewest tokens (whole clusters in score order) that, with the always-attended part, reach
    `mass_target` of the estimated total attention mass, at most `budget` (needs score='size_weighted', the
    rule that estimates mass; clusters/mass.py); per KV head with selection_heads='per_kv_head'. Decode
    keeps the question's selection. Off by default: with the default per-head lists it attends 1.21x fewer
    tokens at the fixed budget's recall on the captions and 1.16x more on the synthetic trace; any rule
    that only sets each list's count on Mosaic's ranking saves at most 1.49x / 1.11x there
    (benchmarks/README.md, mass_budget.py)."""
    mass_target: float = 0.9
    """Share of the estimated total attention mass (always-attended part included) a 'mass' selection
    reaches, in (0, 1]; 1 is the token mode."""
    query_reduce: str = "mean"
    """How the query tokens and the GQA heads of a layer are aggregated into one cluster score."""
    selection_heads: str = "per_kv_head"
    """'shared': one cluster selection per layer, scored by all query heads, attended by every KV head;
    'per_kv_head': each KV head chooses its own clusters (scored by its GQA group, same budget per head),
    attended as one list per (request, KV head) by the same kernels; with budget_mode='mass' each head
    reaches the target on its own. Needs fill='exact' (and graph_text_tokens=0); under tensor parallelism
    every rank chooses all heads' lists and attends its own; with the host tier a layer reads the clusters any
    head chose (cluster cache sized for every head's budget). Per KV head by default: +0.5-1.0 point of mass
    recall on real KV (+6.7-9.1 synthetic), what lets the coarse default clusters keep their recall; it costs up
    to 1.17x per decode step and ~1.75x the distinct positions read and cached (benchmarks/README.md)."""
    reselect_every: int = 0
    """Decode: re-select every k steps with the current query; 0 keeps the question's selection."""
    graph_text_tokens: int = 0
    """0: every step runs eagerly (``--enable-mosaic`` keeps SGLang's decode CUDA graphs off). N > 0:
    decode CUDA graphs stay on; a decode step that keeps its question's selection replays a captured graph
    when each request attends at most ``budget + sink_tokens + recent_window + N`` tokens per layer (N
    covers the text and the tokens not indexed yet), on the FlashInfer route; other steps run eagerly
    (integration/decode_graphs.py). Static buffers: 8 bytes per (layer, request slot, entry) for
    SGLang's largest captured batch, outside --mem-fraction-static. Needs selection_heads='shared' (per-head
    lists are not captured). Off by default: no GPU has run it yet."""
    select_in_prefill: bool = True
    """Video prefill chunks attend sinks + window + clusters selected by the chunk's own queries;
    False makes prefill dense (the attended set is everything before the chunk)."""
    seed: int = 0
    """Seed for the deterministic parts (split initialisation)."""
    host_store_tokens: int = 0
    """Host (CPU, pinned on CUDA) store capacity in tokens across all sequences; 0 disables offload.
    When it is full, clusters that do not fit simply stay on the device (counted as ``full_events``; no
    error, no eviction of other sessions' host pages); host pages are freed when SGLang evicts the prefix
    that owns them or on ``flush_cache``."""
    residency_slack: float = 0.25
    """Device cluster cache per layer = ceil(budget × (1 + slack)) tokens (budget × H KV heads with per-head lists,
    plus the always-attended part: `cluster_cache_videos`); slack keeps recent clusters."""
    prefetch: bool = False
    """Prefetch layer l+1's predicted clusters (= layer l's selection) while layer l computes; with the host
    tier it needs membership='shared' (per-layer clusters differ between layers). Off by
    default: on the synthetic and the SmolLM2 caption traces it moved ~1.3-1.6x the missed bytes for at
    most a few points of hit rate (benchmarks/README.md)."""
    spill_backend: str = "none"
    """The L3 tier below the host store: 'file' spills whole cluster extents to SGLang's HiCache file
    backend when the host store is full (least recently read first) and loads them back when a question
    selects them; 'none': a full host store leaves clusters on the device. Needs host_store_tokens > 0."""
    spill_path: str = ""
    """Directory for the 'file' spill backend (each process writes into its own fresh subdirectory)."""
    spill_tokens: int = 0
    """Tokens the spill tier may hold beyond the host store (the tier's row space is host_store_tokens +
    spill_tokens); >= 1 with a spill backend."""
    cluster_cache_videos: int = 4
    """Videos whose device cluster cache may exist at once. Each cache takes
    ceil((budget + sinks + window) × (1 + slack)) slots of SGLang's KV pool while it exists, ceil((H · budget +
    sinks + window) × (1 + slack)) with per-KV-head lists (the default; H KV heads) (reported as
    protected tokens); a new video takes the least recently used idle one's place."""

    allowed_media_dirs: Optional[tuple] = None
    """Directories a request's local video paths (and ``file://`` URLs) may point into, compared after
    resolving symlinks and ``..``. Unset: the HTTP server allows no local path (its clients are remote),
    ``sgl.Engine`` allows any (its caller runs code in the process); ``[]``: none anywhere."""
    media_max_bytes: int = 2 << 30
    """Largest video item (file, data URL or download) in bytes: 2 GiB, about an hour of 1080p H.264."""
    media_max_frames: int = 1_000_000
    """Most frames a video may declare (about 9 h at 30 fps; SGLang samples far fewer)."""
    media_max_seconds: float = 4 * 3600.0
    """Longest video duration in seconds (4 h)."""
    media_max_side: int = 4096
    """Largest frame width or height in pixels (4K UHD is 3840)."""

    def __post_init__(self) -> None:
        _normalize_dirs(self)
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _type_name(f.type)
            if expected == "Optional[tuple]":
                continue  # checked by _normalize_dirs
            ok = isinstance(value, bool) if expected == "bool" else _is_instance(value, expected)
            if not ok:
                raise MosaicConfigError(
                    f"mosaic config field '{f.name}': expected {expected}, got {value!r} ({type(value).__name__})"
                )
        for name in ("budget", "sink_tokens", "recent_window", "regroup_tokens", "reselect_every", "graph_text_tokens",
                     "seed", "host_store_tokens", "spill_tokens"):
            _at_least(self, name, 0)
        for name in ("max_cluster_size", "active_frames", "split_work_per_step", "regroup_frames", "cluster_cache_videos"):
            _at_least(self, name, 1)
        if self.graph_text_tokens and self.selection_heads == "per_kv_head":
            raise MosaicConfigError("mosaic config field 'graph_text_tokens': expected 0 with selection_heads="
                                    f"'per_kv_head' (per-head lists are not captured; selection_heads='shared' allows it), "
                                    f"got {self.graph_text_tokens}")
        if self.spill_backend != "none" and self.spill_backend in _CHOICES["spill_backend"]:
            if not self.host_store_tokens:
                raise MosaicConfigError(
                    f"mosaic config field 'host_store_tokens': expected an integer >= 1 with spill_backend="
                    f"{self.spill_backend!r} (the spill tier sits below the host store), got 0"
                )
            if self.spill_tokens < 1:
                raise MosaicConfigError(
                    f"mosaic config field 'spill_tokens': expected an integer >= 1 with spill_backend="
                    f"{self.spill_backend!r}, got {self.spill_tokens!r}"
                )
            if self.spill_backend == "file" and not self.spill_path:
                raise MosaicConfigError(
                    "mosaic config field 'spill_path': expected a directory with spill_backend='file', got ''"
                )
        for name in ("media_max_bytes", "media_max_frames", "media_max_side"):
            _at_least(self, name, 1)
        if not self.media_max_seconds > 0:
            raise MosaicConfigError(
                f"mosaic config field 'media_max_seconds': expected a number > 0, got {self.media_max_seconds!r}"
            )
        if not self.residency_slack >= 0:
            raise MosaicConfigError(
                f"mosaic config field 'residency_slack': expected a number >= 0, got {self.residency_slack!r}"
            )
        if not self.join_threshold > 0:
            raise MosaicConfigError(
                f"mosaic config field 'join_threshold': expected a number > 0, got {self.join_threshold!r}"
            )
        if not self.split_threshold >= self.join_threshold:
            raise MosaicConfigError(
                "mosaic config field 'split_threshold': expected a number >= join_threshold "
                f"({self.join_threshold!r}), got {self.split_threshold!r}"
            )
        if not 0 < self.mass_target <= 1:
            raise MosaicConfigError(
                f"mosaic config field 'mass_target': expected a number in (0, 1], got {self.mass_target!r}"
            )
        self._check_combinations()
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise MosaicConfigError(
                    f"mosaic config field '{name}': expected one of {list(choices)}, got {getattr(self, name)!r}"
                )

    def _check_combinations(self) -> None:
        """Fields valid alone but not together: the error names the field, what it needs beside the other, and
        what it got."""
        if self.budget_mode == "mass" and self.score != "size_weighted":
            raise MosaicConfigError(
                "mosaic config field 'score': expected 'size_weighted' with budget_mode='mass' (the rule that "
                f"estimates attention mass), got {self.score!r}"
            )
        if self.membership == "per_layer" and self.host_store_tokens and self.prefetch:
            raise MosaicConfigError(
                "mosaic config field 'prefetch': expected False with membership='per_layer' and the host tier (layer "
                "l's clusters are not layer l + 1's; membership='shared' allows it), got True"
            )
        if self.selection_heads == "per_kv_head" and self.fill != "exact":
            raise MosaicConfigError(
                "mosaic config field 'fill': expected 'exact' with selection_heads='per_kv_head' (one list per KV "
                f"head, each exactly its budget; selection_heads='shared' allows 'whole'), got {self.fill!r}"
            )

    # -- construction from user input -------------------------------------------------------------

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "MosaicConfig":
        """Build from a mapping, rejecting unknown keys (with the list of known ones)."""
        if not isinstance(options, Mapping):
            raise MosaicConfigError(f"mosaic config: expected a JSON object, got {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise MosaicConfigError(
                f"mosaic config: unknown key(s) {unknown}; expected keys from {sorted(known)}"
            )
        return cls(**dict(options))

    @classmethod
    def from_json(cls, text: str) -> "MosaicConfig":
        """Parse `--mosaic-config '{json}'`."""
        try:
            options = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise MosaicConfigError(f"mosaic config: expected a JSON object, got invalid JSON {text!r} ({e})") from e
        return cls.from_dict(options)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes: Any) -> "MosaicConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def always_attended(self) -> int:
        """Sinks + recent window: the part of the attended set that does not depend on the query."""
        return self.sink_tokens + self.recent_window

    @property
    def regroups_tail(self) -> bool:
        """A prompt's end regroups its video's tail: `regroup_tail` with regrouping on (`regroup_tokens` >= 1)."""
        return self.regroup_tail and self.regroup_tokens > 0

    @property
    def weighs_always_part(self) -> bool:
        """A selection reads the always-attended part's attention mass: mass budgets below 1, or
        ``share_of_total`` with the 'size_weighted' rule (`clusters/mass.py`)."""
        mass = self.budget_mode == "mass" and self.mass_target < 1
        return mass or (self.score == "size_weighted" and self.share_of_total)


def _normalize_dirs(cfg: "MosaicConfig") -> None:
    dirs = cfg.allowed_media_dirs
    if dirs is None:
        return
    if isinstance(dirs, (list, tuple)) and all(isinstance(d, str) and d for d in dirs):
        object.__setattr__(cfg, "allowed_media_dirs", tuple(dirs))
        return
    raise MosaicConfigError(
        f"mosaic config field 'allowed_media_dirs': expected a list of directory paths or null, got {dirs!r}"
    )


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else annotation.__name__


def _is_instance(value: Any, expected: str) -> bool:
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "str":
        return isinstance(value, str)
    raise AssertionError(f"unhandled field type {expected=}")


def _at_least(cfg: MosaicConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if value < low:
        raise MosaicConfigError(f"mosaic config field '{name}': expected an integer >= {low}, got {value!r}")


# -- environment variables ---------------------------------------------------------------------------

_ENV_KINDS = ("json", "flag", "path", "choice")


@dataclass(frozen=True)
class EnvVar:
    """One ``MOSAIC_*`` environment variable: its name, what it means and how its value reads.

    Kinds: ``'json'`` (a JSON text, returned as given), ``'flag'`` (``'1'`` on, ``''``/``'0'``/unset off;
    anything else is an error naming the variable), ``'path'`` (a directory; unset or empty → None),
    ``'choice'`` (one of ``choices``; unset or empty → the first; anything else is an error naming the variable).
    """

    name: str
    kind: str
    doc: str
    choices: tuple = ()

    def __post_init__(self) -> None:
        assert self.name.startswith("MOSAIC_") and self.kind in _ENV_KINDS, f"{self.name=} {self.kind=}"
        assert (self.kind == "choice") == bool(self.choices), f"{self.name=}: choices go with kind 'choice'"

    def raw(self) -> str:
        return os.environ.get(self.name, "")

    def read(self) -> Any:
        """The typed value: ``str`` (json), ``bool`` (flag) or ``Optional[str]`` (path)."""
        value = self.raw()
        if self.kind == "flag":
            if value not in ("", "0", "1"):
                raise MosaicConfigError(f"environment variable {self.name}: expected '1' or '0', got {value!r}")
            return value == "1"
        if self.kind == "path":
            return value or None
        if self.kind == "choice":
            if value and value not in self.choices:
                raise MosaicConfigError(f"environment variable {self.name}: expected one of {list(self.choices)}, "
                                        f"got {value!r}")
            return value or self.choices[0]
        return value

    def set(self, value: Optional[str]) -> None:
        """Export for the processes started from now on (None removes it)."""
        if value is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = value


MOSAIC_CONFIG = EnvVar("MOSAIC_CONFIG", "json", "The resolved `MosaicConfig` as JSON, exported by the launch "
                       "hooks to SGLang's child processes (which cannot receive new ServerArgs fields).")
MOSAIC_DEBUG = EnvVar("MOSAIC_DEBUG", "flag", "Run the host tier's and cluster caches' check_integrity after "
                      "every change and verify a checksum of every offloaded cluster on every read (tests, soak runs); "
                      "expensive.")
MOSAIC_DUMP_DIR = EnvVar("MOSAIC_DUMP_DIR", "path", "Save every served selection (queries, result) and index "
                         "append (keys, frame ids) here with torch.save, so tests can replay them offline.")
MOSAIC_CHECK_NO_SYNC = EnvVar("MOSAIC_CHECK_NO_SYNC", "flag", "Run every decode layer that keeps its question's "
                              "selection with host-synchronising tensor methods patched to raise (tests).")
MOSAIC_FORWARD_LOG_DIR = EnvVar("MOSAIC_FORWARD_LOG_DIR", "path", "Time every model forward of the scheduler "
                                "(dense or Mosaic) and append one JSON line per forward to "
                                "forward-<pid>.jsonl here (benchmarks/decode_step.py).")
MOSAIC_TRITON_ATTENTION = EnvVar("MOSAIC_TRITON_ATTENTION", "flag", "Run the Mosaic backend's attention through "
                                 "the Triton kernels (decode: sparse_decode; extend: SGLang's extend attention) "
                                 "on CPU too, as on CUDA; with TRITON_INTERPRET=1 (tests).")
MOSAIC_ATTENTION_RUNNER = EnvVar(
    "MOSAIC_ATTENTION_RUNNER", "choice", "The Mosaic backend's attention kernels: 'auto' (FlashInfer's paged "
    "wrappers on CUDA when flashinfer imports, else the Triton kernels on CUDA, the torch reference on CPU), "
    "'flashinfer', 'triton', 'reference', or 'fake-flashinfer' (tests: the FlashInfer route with "
    "mosaic_sglang.testing.fake_flashinfer standing in for flashinfer, on CPU).",
    choices=("auto", "flashinfer", "triton", "reference", "fake-flashinfer"))
MOSAIC_EMULATE_DECODE_GRAPHS = EnvVar("MOSAIC_EMULATE_DECODE_GRAPHS", "flag", "Run every decode step that "
                                      "could replay a CUDA graph (graph_text_tokens > 0, FlashInfer route) through "
                                      "an emulated capture/replay on CPU (tests: integration/decode_graphs.py).")
MOSAIC_FAKE_FLASHINFER_LOG = EnvVar("MOSAIC_FAKE_FLASHINFER_LOG", "path", "Where the fake FlashInfer wrappers "
                                    "(MOSAIC_ATTENTION_RUNNER=fake-flashinfer) append one JSON line per plan and "
                                    "per run (tests read them).")
ENV_VARS = (MOSAIC_CONFIG, MOSAIC_DEBUG, MOSAIC_DUMP_DIR, MOSAIC_CHECK_NO_SYNC, MOSAIC_FORWARD_LOG_DIR,
            MOSAIC_TRITON_ATTENTION, MOSAIC_ATTENTION_RUNNER, MOSAIC_FAKE_FLASHINFER_LOG, MOSAIC_EMULATE_DECODE_GRAPHS)
"""Every ``MOSAIC_*`` variable the project reads."""
