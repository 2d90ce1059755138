"""One config system: OmegaConf structured dataclasses, YAML files, dotlist overrides.

Each module owns a dataclass for its part (`areal_mega/<module>/config.py`)
and validates it in `__post_init__`; `load_config` merges YAML + CLI overrides
onto a schema and returns the real dataclass objects, so `__post_init__`
checks run. Every error names the key and the file it came from.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem; the message names the key and where it came from."""


def _merge(base, layer, source: str):
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{source}: bad config key '{key}': {e.msg if hasattr(e, 'msg') else e}") from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build `schema` from defaults <- YAML file `path` <- `overrides` ("a.b=1").

    Unknown keys and wrong types raise ConfigError naming the key and the file
    (or "command line"); `__post_init__` validation errors are re-raised as
    ConfigError naming the file.
    """
    cfg = OmegaConf.structured(schema)
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layer = OmegaConf.load(path)
        except Exception as e:  # YAML syntax errors carry line numbers
            raise ConfigError(f"{path}: cannot parse YAML: {e}") from None
        cfg = _merge(cfg, layer, str(path))
        source = str(path)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"command line: override '{item}' is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
        source = f"{source} + command line"
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (ValueError, OmegaConfBaseException) as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(cfg) -> dict:
    """Plain nested dict of a config dataclass (for logging and checkpoints)."""
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
