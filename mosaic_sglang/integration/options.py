"""Mosaic's launch options: parsing, validation, and the environment channel to SGLang's children.

SGLang's ``ServerArgs`` cannot take new fields from a plugin, and its scheduler runs in spawned
processes. So the launch hooks validate ``--enable-mosaic`` / ``--mosaic-budget`` / ``--mosaic-config``
in the parent (failing before anything starts) and export the resolved config as JSON in
``MOSAIC_CONFIG``; every child inherits it and reads it back with `config_from_env`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..config import MOSAIC_CONFIG, MosaicConfig, MosaicConfigError

__all__ = ["resolve_config", "with_media_default", "export_config", "config_from_env", "MOSAIC_BACKEND"]

MOSAIC_BACKEND = "mosaic"


def resolve_config(budget: Optional[Any] = None, config: Optional[Any] = None) -> MosaicConfig:
    """Merge ``--mosaic-config`` (a JSON string or a mapping) with ``--mosaic-budget``.

    Raises:
        MosaicConfigError: unknown key, wrong type or out-of-range value (the message names the key,
            what was expected and what was given), or a budget given by both with different values.
    """
    if config is None or config == "":
        options: dict = {}
    elif isinstance(config, str):
        try:
            options = json.loads(config)
        except json.JSONDecodeError as e:
            raise MosaicConfigError(
                f"--mosaic-config: expected a JSON object, got invalid JSON {config!r} ({e.msg})"
            ) from None
        if not isinstance(options, dict):
            raise MosaicConfigError(f"--mosaic-config: expected a JSON object, got {config!r}")
    elif isinstance(config, dict):
        options = dict(config)
    else:
        raise MosaicConfigError(f"mosaic_config: expected a JSON string or dict, got {type(config).__name__}")
    if budget is not None:
        if isinstance(budget, str):
            try:
                budget = int(budget)
            except ValueError:
                raise MosaicConfigError(f"--mosaic-budget: expected an integer >= 0, got {budget!r}") from None
        if "budget" in options and options["budget"] != budget:
            raise MosaicConfigError(
                f"budget given twice: --mosaic-budget {budget!r} and --mosaic-config budget {options['budget']!r}; "
                "expected one value (drop one of them), got two different ones"
            )
        options["budget"] = budget
    return MosaicConfig.from_dict(options)


def with_media_default(config: MosaicConfig, *, server: bool) -> MosaicConfig:
    """``allowed_media_dirs`` resolved for how Mosaic was launched: unset means no local path for the
    HTTP server (remote clients) and any local path for ``sgl.Engine`` (the caller's own process)."""
    if config.allowed_media_dirs is None and server:
        return config.replace(allowed_media_dirs=())
    return config


def export_config(config: MosaicConfig) -> None:
    """Make ``config`` the one every process started from now on reads."""
    MOSAIC_CONFIG.set(config.to_json())


def config_from_env() -> MosaicConfig:
    """The config exported by the launch hooks, or the defaults."""
    text = MOSAIC_CONFIG.read()
    return MosaicConfig.from_json(text) if text else MosaicConfig()
