"""Configuration: bundled defaults, a user YAML file, dotted overrides, strict validation."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from confab.config import bundled_path
from confab.runtime.config import ConfabConfig, ConfigError, load_config, without_password


def overridden(overrides: dict[str, Any], path: Path | None = None) -> ConfabConfig:
    """load_config with dotted overrides (keys like "server.listen" need ** unpacking)."""
    return load_config(path, **overrides)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "confab.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_come_from_bundled_yaml() -> None:
    config = load_config()
    assert config.data_dir == "./var"
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.shutdown_grace_s == 10.0
    assert isinstance(config.server.shutdown_grace_s, float)
    assert config.server.max_message_bytes == 4 * 1024 * 1024
    assert config.server.max_batch_messages == 1000
    assert config.server.stream_idle_timeout_s == 300.0
    assert config.engine.shards == 0
    assert config.engine.resident_conversations_per_shard == 100_000
    assert config.engine.max_commands_per_batch == 512
    assert config.engine.max_batches_in_flight == 2
    assert config.engine.max_queued_per_shard == 20_000
    assert config.engine.shard_timeout_s == 30.0
    assert config.engine.turns_kept == 32
    assert config.store.path == "confab.sqlite3"
    assert config.store.synchronous == "FULL"
    assert config.flows.default == "echo"


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            out.update(_leaves(getattr(value, f.name), f"{prefix}{f.name}."))
        return out
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list):  # lists of records: compare them item by item, as plain data
        return {
            prefix.rstrip("."): [
                dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                for v in value
            ]
        }
    return {prefix.rstrip("."): value}


def test_bundled_yaml_lists_every_key_with_the_dataclass_default() -> None:
    bundled = yaml.safe_load(bundled_path("default.yaml").read_text(encoding="utf-8"))
    assert _leaves(bundled) == _leaves(ConfabConfig())


def test_user_file_overrides_nested_keys(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
data_dir: /srv/confab
server:
  listen: 0.0.0.0:6000
  shutdown_grace_s: 3          # an int is accepted for a float key
engine:
  shards: 4
  turns_kept: 8
store:
  synchronous: NORMAL
""",
    )
    config = load_config(path)
    assert config.data_dir == "/srv/confab"
    assert config.server.listen == "0.0.0.0:6000"
    assert config.server.shutdown_grace_s == 3.0
    assert isinstance(config.server.shutdown_grace_s, float)
    assert config.engine.shards == 4
    assert config.engine.turns_kept == 8
    assert config.store.synchronous == "NORMAL"
    # Keys the file does not name keep their defaults, also inside overridden sections.
    assert config.server.max_batch_messages == 1000
    assert config.engine.max_commands_per_batch == 512
    assert config.store.path == "confab.sqlite3"
    assert config.flows.default == "echo"


def test_empty_user_file_keeps_defaults(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, "# nothing\n")) == load_config()


def test_configs_do_not_share_state(tmp_path: Path) -> None:
    load_config(write_yaml(tmp_path, "engine:\n  shards: 9\n"))
    assert load_config().engine.shards == 0


def test_dotted_overrides() -> None:
    config = overridden(
        {
            "server.listen": "127.0.0.1:7000",
            "engine.shards": 2,
            "data_dir": "/tmp/x",
            "engine.turns_kept": None,
        }
    )
    assert config.server.listen == "127.0.0.1:7000"
    assert config.engine.shards == 2
    assert config.data_dir == "/tmp/x"
    assert config.engine.turns_kept == 32  # None means "not given"


def test_dotted_overrides_win_over_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "server:\n  listen: 1.2.3.4:1\n  max_batch_messages: 5\n")
    config = overridden({"server.listen": "5.6.7.8:2"}, path)
    assert config.server.listen == "5.6.7.8:2"
    assert config.server.max_batch_messages == 5


def test_dotted_override_of_a_section_with_a_mapping() -> None:
    config = overridden({"store": {"path": "other.db"}})
    assert config.store.path == "other.db"
    assert config.store.synchronous == "FULL"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("servr:\n  listen: x\n", "'servr'"),
        ("server:\n  lisen: x\n", "'server.lisen'"),
        ("engine:\n  shard: 3\n", "'engine.shard'"),
    ],
)
def test_unknown_key_in_file_is_an_error(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, text))
    assert named in str(info.value)


def test_unknown_key_lists_the_expected_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected one of .*'shards'"):
        load_config(write_yaml(tmp_path, "engine:\n  shard: 3\n"))


def test_unknown_dotted_leaf_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'server\.lisen'"):
        overridden({"server.lisen": "x"})


def test_unknown_dotted_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="servr"):
        overridden({"servr.listen": "x"})


@pytest.mark.parametrize(
    "text",
    [
        "server:\n  listen: 50051\n",  # int for str
        "engine:\n  shards: four\n",  # str for int
        "engine:\n  shards: 2.5\n",  # float for int
        "engine:\n  shards: true\n",  # bool for int
        "server:\n  shutdown_grace_s: soon\n",  # str for float
        "store:\n  path: null\n",  # null for str
        "server: 3\n",  # scalar for a section
        "data_dir: [a, b]\n",  # list for str
    ],
)
def test_wrong_type_in_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="config key"):
        load_config(write_yaml(tmp_path, text))


def test_wrong_type_names_key_and_type() -> None:
    with pytest.raises(ConfigError) as info:
        overridden({"engine.shards": "4"})
    assert "'engine.shards'" in str(info.value)
    assert "int" in str(info.value)


def test_bool_for_float_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(write_yaml(tmp_path, "server:\n  shutdown_grace_s: true\n"))


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(write_yaml(tmp_path, "server: [unclosed\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_shard_count() -> None:
    assert overridden({"engine.shards": 3}).shard_count == 3
    assert load_config().shard_count == (os.cpu_count() or 1)


def test_shard_count_without_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert load_config().shard_count == 1


def test_store_path_relative_to_data_dir() -> None:
    config = overridden({"data_dir": "/data/confab", "store.path": "db/c.sqlite3"})
    assert config.store_path == Path("/data/confab/db/c.sqlite3")
    assert load_config().store_path == Path("./var") / "confab.sqlite3"


def test_store_path_absolute_ignores_data_dir(tmp_path: Path) -> None:
    absolute = tmp_path / "abs.sqlite3"
    config = overridden({"data_dir": "/elsewhere", "store.path": str(absolute)})
    assert config.store_path == absolute


def test_a_postgresql_url_is_the_store_as_given_not_a_file_under_data_dir() -> None:
    url = "postgresql://confab:s3cret@db.internal:5432/confab?sslmode=require"
    config = overridden({"data_dir": "/data/confab", "store.path": url})
    assert config.store_is_database
    assert config.store_location == url
    assert config.store_shown == "postgresql://confab:***@db.internal:5432/confab?sslmode=require"
    assert config.store_dir == Path("/data/confab")
    assert overridden({"store.path": "postgres://db/confab"}).store_location == "postgres://db/confab"


def test_an_sqlite_store_is_located_by_its_absolute_path(tmp_path: Path) -> None:
    config = overridden({"data_dir": str(tmp_path), "store.path": "db/c.sqlite3"})
    assert not config.store_is_database
    assert config.store_location == str((tmp_path / "db" / "c.sqlite3").resolve())
    assert config.store_shown == str(tmp_path / "db" / "c.sqlite3")
    assert config.store_dir == tmp_path / "db"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p%40ss@h:5/db", "postgresql://u:***@h:5/db"),
        (
            "postgresql://u@h/db?password=x&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql:///db?host=/run/pg&password=x", "postgresql:///db?host=/run/pg&password=***"),
        ("postgresql://u:pw@h1:1,h2:2", "postgresql://u:***@h1:1,h2:2"),
        ("postgres://h/db", "postgres://h/db"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


# The data plane between hosts ----------------------------------------------------------------

A_CLUSTER = {"cluster.advertise": "10.0.0.11", "store.path": "postgresql://confab@10.0.0.5/confab"}


def test_a_cluster_shares_a_postgresql_store_and_advertises_one_address() -> None:
    with pytest.raises(ConfigError, match="must be a postgresql:// URL"):
        overridden({"cluster.advertise": "10.0.0.11", "cluster.insecure_plaintext": True})
    with pytest.raises(ConfigError, match="never all interfaces"):
        overridden({**A_CLUSTER, "cluster.advertise": "0.0.0.0", "cluster.insecure_plaintext": True})


@pytest.fixture
def cluster_files(tmp_path: Path) -> dict[str, str]:
    from confab.tools.cluster_certs import make_certs

    (host,) = make_certs(tmp_path / "certs", "confab", [("h1", "10.0.0.11")])
    return {
        "cluster.ca_file": str(tmp_path / "certs" / "ca.pem"),
        "cluster.cert_file": str(host.cert_file),
        "cluster.key_file": str(host.key_file),
    }


def test_a_cluster_needs_its_tls_files_or_an_explicit_insecure_plaintext() -> None:
    with pytest.raises(ConfigError, match=r"cluster.advertise\) needs cluster.ca_file"):
        overridden(A_CLUSTER)
    config = overridden({**A_CLUSTER, "cluster.insecure_plaintext": True})
    assert config.cluster.insecure_plaintext and config.cluster.name == "confab"


def test_the_cluster_tls_files_are_loaded_at_start(cluster_files: dict[str, str], tmp_path: Path) -> None:
    config = overridden({**A_CLUSTER, "cluster.name": "prod", **cluster_files})
    assert config.cluster.cert_file == cluster_files["cluster.cert_file"] and config.cluster.name == "prod"
    with pytest.raises(ConfigError, match=r"cluster\.key_file missing"):
        overridden({**cluster_files, "cluster.key_file": ""})
    with pytest.raises(ConfigError, match=r"cluster\.ca_file: no such file"):
        overridden({**cluster_files, "cluster.ca_file": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match=r"cluster\.ca_file .*not a PEM CA"):
        overridden({**cluster_files, "cluster.ca_file": cluster_files["cluster.key_file"]})
    with pytest.raises(ConfigError, match="do not load as a certificate and its key"):
        overridden({**cluster_files, "cluster.key_file": str(tmp_path / "certs" / "ca.key")})
    with pytest.raises(ConfigError, match="would not be used"):
        overridden({**cluster_files, "cluster.insecure_plaintext": True})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cluster.name", " ", "cluster.name must be 1-64 characters"),
        ("data_plane.max_frame_bytes", 1024, "data_plane.max_frame_bytes must be at least 65536"),
        ("data_plane.max_connections", 0, "data_plane.max_connections must be >= 1"),
        ("data_plane.idle_timeout_s", 0.0, "data_plane.idle_timeout_s must be > 0"),
        ("data_plane.handshake_timeout_s", 0.0, "data_plane.handshake_timeout_s must be > 0"),
        ("data_plane.max_inbound_frames", 0, "data_plane.max_inbound_frames must be >= 1"),
    ],
)
def test_data_plane_limits_are_checked(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        overridden({key: value})
