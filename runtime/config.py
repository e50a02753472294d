"""Configuration: bundled defaults (``config/default.yaml``), a user file over them,
then command-line flags over both.

Unknown keys are errors: a typo in a config file must not be silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import bundled_path


class ConfigError(ValueError):
    pass


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # Seconds in-flight RPCs get to finish after SIGTERM/SIGINT.
    shutdown_grace_s: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch_messages: int = 1000
    # A stream with no request (heartbeat included) for this long is closed.
    stream_idle_timeout_s: float = 300.0


@dataclass(slots=True)
class EngineConfig:
    # 0 means one shard per CPU.
    shards: int = 0
    # Conversations kept in memory per shard; the least recently used beyond it are passivated.
    resident_conversations_per_shard: int = 100_000
    # Most commands carried by one edge→shard message.
    max_commands_per_batch: int = 512
    # Most commands waiting per shard before new requests get RESOURCE_EXHAUSTED.
    max_queued_per_shard: int = 20_000
    # How long the edge waits for a shard before declaring it unavailable.
    shard_timeout_s: float = 30.0
    # Message ids (with replies) remembered per conversation, for at-most-once retries.
    turns_kept: int = 32


@dataclass(slots=True)
class StoreConfig:
    # Relative paths are under --data-dir.
    path: str = "confab.sqlite3"
    # FULL: a commit survives power loss; NORMAL: it survives any process crash.
    synchronous: str = "FULL"


@dataclass(slots=True)
class FlowsConfig:
    default: str = "echo"


@dataclass(slots=True)
class ConfabConfig:
    data_dir: str = "./var"
    server: ServerConfig = field(default_factory=ServerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)

    @property
    def shard_count(self) -> int:
        return self.engine.shards or os.cpu_count() or 1

    @property
    def store_path(self) -> Path:
        path = Path(self.store.path)
        return path if path.is_absolute() else Path(self.data_dir) / path


def load_config(path: str | Path | None = None, **overrides: Any) -> ConfabConfig:
    """Bundled defaults, then the file at ``path``, then ``overrides`` ("server.listen": ...)."""
    config = ConfabConfig()
    _merge(config, _read_yaml(bundled_path("default.yaml")), "")
    if path is not None:
        _merge(config, _read_yaml(Path(path)), "")
    for dotted, value in overrides.items():
        if value is None:
            continue
        nested: Any = value
        for name in reversed(dotted.split(".")):
            nested = {name: nested}
        _merge(config, nested, "")
    _validate(config)
    return config


def _validate(config: ConfabConfig) -> None:
    checks = [
        (config.engine.shards >= 0, "engine.shards must be 0 (one per CPU) or more"),
        (
            config.engine.resident_conversations_per_shard >= 1,
            "engine.resident_conversations_per_shard must be >= 1",
        ),
        (config.engine.max_commands_per_batch >= 1, "engine.max_commands_per_batch must be >= 1"),
        (config.engine.max_queued_per_shard >= 1, "engine.max_queued_per_shard must be >= 1"),
        (config.engine.shard_timeout_s > 0, "engine.shard_timeout_s must be > 0"),
        (config.engine.turns_kept >= 1, "engine.turns_kept must be >= 1"),
        (config.server.shutdown_grace_s >= 0, "server.shutdown_grace_s must be >= 0"),
        (config.server.max_batch_messages >= 1, "server.max_batch_messages must be >= 1"),
        (config.server.stream_idle_timeout_s > 0, "server.stream_idle_timeout_s must be > 0"),
        (
            config.store.synchronous.upper() in SYNCHRONOUS_MODES,
            f"store.synchronous must be one of {SYNCHRONOUS_MODES}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _merge(target: Any, data: dict[str, Any], prefix: str) -> None:
    for key, value in data.items():
        _set(target, key, value, f"{prefix}{key}")


def _set(target: Any, key: str, value: Any, where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(target)}
    if key not in names:
        raise ConfigError(f"unknown config key {where!r}; expected one of {sorted(names)}")
    current = getattr(target, key)
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} must be a mapping")
        _merge(current, value, f"{where}.")
        return
    kind = type(current)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config key {where!r} must be {kind.__name__}, got {value!r}")
    setattr(target, key, value)
