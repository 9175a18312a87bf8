"""droplet.settings: defaults, the environment, TOML files, and how values are coerced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from droplet.errors import ConfigurationError
from droplet.settings import DEFAULT_BROKER_URL, DEFAULT_ETCD, Settings


def write_toml(tmp_path: Path, text: str, name: str = "droplet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = Settings()

    assert s.broker_url == DEFAULT_BROKER_URL
    assert s.etcd_endpoints == (DEFAULT_ETCD,)
    assert s.namespace == "droplet"
    assert s.signing_key is None
    assert s.result_timeout_s == 60.0
    assert s.request_timeout_s == 30.0
    assert s.worker_lease_ttl_s == 10
    assert s.function_time_limit_s == 0.0
    assert s.result_ttl_s == 86400
    assert s.max_value_bytes == 128 * 1024 * 1024
    assert s.chunk_bytes == 1024 * 1024


def test_etcd_prefix_is_the_namespace_between_slashes() -> None:
    assert Settings().etcd_prefix == "/droplet/"
    assert Settings(namespace="t42").etcd_prefix == "/t42/"


def test_settings_are_frozen_and_with_returns_a_copy() -> None:
    s = Settings()
    changed = s.with_(namespace="other", result_timeout_s=1.5)

    with pytest.raises(AttributeError):
        s.namespace = "x"  # type: ignore[misc]
    assert s.namespace == "droplet"
    assert (changed.namespace, changed.result_timeout_s) == ("other", 1.5)


def test_from_url_sets_the_broker_url() -> None:
    s = Settings.from_url("amqps://u:p@host:5671/vh", namespace="n")

    assert s.broker_url == "amqps://u:p@host:5671/vh"
    assert s.namespace == "n"


def test_from_env_of_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_droplet_etcd_gives_a_tuple_of_endpoints() -> None:
    s = Settings.from_env({"DROPLET_ETCD": "a:1, b:2,"})

    assert s.etcd_endpoints == ("a:1", "b:2")


def test_from_env_empty_etcd_list_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="etcd_endpoints"):
        Settings.from_env({"DROPLET_ETCD": " , "})


def test_from_env_broker_url_and_namespace() -> None:
    s = Settings.from_env(
        {"DROPLET_BROKER_URL": "amqp://x:y@rabbit:5672/%2F", "DROPLET_NAMESPACE": "ns1"}
    )

    assert s.broker_url == "amqp://x:y@rabbit:5672/%2F"
    assert s.namespace == "ns1"
    assert s.etcd_prefix == "/ns1/"


def test_from_env_coerces_numbers() -> None:
    s = Settings.from_env(
        {
            "DROPLET_RESULT_TIMEOUT_S": "2.5",
            "DROPLET_WORKER_LEASE_TTL_S": "7",
            "DROPLET_MAX_VALUE_BYTES": "2048",
        }
    )

    assert s.result_timeout_s == 2.5
    assert isinstance(s.result_timeout_s, float)
    assert s.worker_lease_ttl_s == 7
    assert isinstance(s.worker_lease_ttl_s, int)
    assert s.max_value_bytes == 2048


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("DROPLET_RESULT_TIMEOUT_S", "soon"),
        ("DROPLET_WORKER_LEASE_TTL_S", "2.5"),
        ("DROPLET_MAX_VALUE_BYTES", ""),
    ],
)
def test_from_env_bad_number_is_a_configuration_error(var: str, raw: str) -> None:
    field = var[len("DROPLET_"):].lower()
    with pytest.raises(ConfigurationError, match=field):
        Settings.from_env({var: raw})


def test_from_env_ignores_unrelated_and_unknown_variables() -> None:
    s = Settings.from_env({"HOME": "/root", "DROPLET_NO_SUCH_SETTING": "1", "PATH": "/bin"})

    assert s == Settings()


def test_from_env_empty_optional_string_means_none() -> None:
    s = Settings.from_env({"DROPLET_SIGNING_KEY": "", "DROPLET_ETCD_USER": "root"})

    assert s.signing_key is None
    assert s.etcd_user == "root"


def test_from_env_empty_required_string_is_refused_or_defaulted() -> None:
    try:
        s = Settings.from_env({"DROPLET_NAMESPACE": ""})
    except ConfigurationError:
        return
    assert isinstance(s.namespace, str)


def test_from_env_keyword_overrides_win_and_none_overrides_are_ignored() -> None:
    s = Settings.from_env(
        {"DROPLET_NAMESPACE": "from-env", "DROPLET_RESULT_TIMEOUT_S": "3"},
        namespace="from-kwarg",
        result_timeout_s=None,
    )

    assert s.namespace == "from-kwarg"
    assert s.result_timeout_s == 3.0


def test_from_env_without_a_mapping_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DROPLET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DROPLET_NAMESPACE", "from-os-environ")

    assert Settings.from_env().namespace == "from-os-environ"


def test_from_file_reads_the_droplet_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [droplet]
        broker_url = "amqp://file:pw@mq:5672/%2F"
        etcd_endpoints = ["e1:2379", "e2:2379"]
        namespace = "fromfile"
        result_timeout_s = 12
        worker_lease_ttl_s = 4

        [other]
        namespace = "ignored"
        """,
    )

    s = Settings.from_file(path)

    assert s.broker_url == "amqp://file:pw@mq:5672/%2F"
    assert s.etcd_endpoints == ("e1:2379", "e2:2379")
    assert s.namespace == "fromfile"
    assert s.result_timeout_s == 12.0
    assert isinstance(s.result_timeout_s, float)
    assert s.worker_lease_ttl_s == 4


def test_from_file_without_a_droplet_table_reads_top_level_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'namespace = "top"\netcd_endpoints = "h:1,h:2"\n')

    s = Settings.from_file(path)

    assert s.namespace == "top"
    assert s.etcd_endpoints == ("h:1", "h:2")


def test_from_file_overrides_win(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[droplet]\nnamespace = "file"\nchunk_bytes = 100\n')

    s = Settings.from_file(path, namespace="kwarg")

    assert s.namespace == "kwarg"
    assert s.chunk_bytes == 100


def test_from_file_unknown_key_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[droplet]\nnamespace = "x"\nnamespcae = "typo"\n')

    with pytest.raises(ConfigurationError, match="namespcae"):
        Settings.from_file(path)


def test_from_file_bad_value_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[droplet]\nmax_value_bytes = "lots"\n')

    with pytest.raises(ConfigurationError, match="max_value_bytes"):
        Settings.from_file(path)


def test_from_file_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        Settings.from_file(tmp_path / "absent.toml")


def test_from_file_invalid_toml_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[droplet\nnamespace = \n")

    with pytest.raises(ConfigurationError, match="cannot read"):
        Settings.from_file(path)


def test_from_file_droplet_key_that_is_not_a_table_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    path = write_toml(tmp_path, 'droplet = "oops"\n')

    with pytest.raises(ConfigurationError):
        Settings.from_file(path)


def test_from_file_fractional_value_for_an_int_setting_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[droplet]\nworker_lease_ttl_s = 2.9\n")

    with pytest.raises(ConfigurationError, match="worker_lease_ttl_s"):
        Settings.from_file(path)


def test_droplet_config_file_is_read_and_env_overrides_it(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [droplet]
        namespace = "file-ns"
        broker_url = "amqp://file@mq/%2F"
        result_timeout_s = 9.0
        """,
    )
    env = {
        "DROPLET_CONFIG": str(path),
        "DROPLET_NAMESPACE": "env-ns",
        "DROPLET_ETCD": "env-etcd:2379",
    }

    s = Settings.from_env(env)

    assert s.namespace == "env-ns", "the environment overrides the file"
    assert s.broker_url == "amqp://file@mq/%2F", "the file fills what the env leaves out"
    assert s.result_timeout_s == 9.0
    assert s.etcd_endpoints == ("env-etcd:2379",)


def test_droplet_config_keyword_overrides_beat_env_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[droplet]\nnamespace = "file-ns"\n')

    s = Settings.from_env(
        {"DROPLET_CONFIG": str(path), "DROPLET_NAMESPACE": "env-ns"}, namespace="kw-ns"
    )

    assert s.namespace == "kw-ns"


def test_droplet_config_with_unknown_key_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[droplet]\nbogus = 1\n")

    with pytest.raises(ConfigurationError, match="bogus"):
        Settings.from_env({"DROPLET_CONFIG": str(path)})


def test_droplet_config_pointing_nowhere_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({"DROPLET_CONFIG": str(tmp_path / "missing.toml")})


def test_a_misspelled_or_nested_table_is_a_configuration_error(tmp_path: Path) -> None:
    misspelled = write_toml(tmp_path, '[dropplet]\nnamespace = "x"\n')
    with pytest.raises(ConfigurationError, match="dropplet"):
        Settings.from_file(misspelled)
    nested = tmp_path / "nested.toml"
    nested.write_text('[droplet]\nnamespace = "x"\n[droplet.extra]\na = 1\n')
    with pytest.raises(ConfigurationError, match="extra"):
        Settings.from_file(nested)


# -- secure by default ------------------------------------------------------------------------


def test_an_unsigned_fleet_is_exposed_only_off_loopback() -> None:
    local = Settings(broker_url="amqp://u:p@127.0.0.1:5672/%2F",
                     etcd_endpoints=("localhost:2379", "[::1]:2379"))
    assert local.unsigned_exposure() == []
    remote = Settings(broker_url="amqps://u:p@rabbit.example:5671/vh",
                      etcd_endpoints=("127.0.0.1:2379", "10.0.0.5:2379"))
    assert remote.unsigned_exposure() == ["broker rabbit.example", "etcd 10.0.0.5:2379"]
    assert remote.with_(signing_key="s").unsigned_exposure() == []
    assert remote.with_(allow_unsigned=True).unsigned_exposure() == []
    assert Settings.from_env({"DROPLET_ALLOW_UNSIGNED": "true"}).allow_unsigned is True
    with pytest.raises(ConfigurationError, match="true or false"):
        Settings.from_env({"DROPLET_ALLOW_UNSIGNED": "maybe"})


def test_the_secret_droplet_up_made_is_found_by_clients_on_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from droplet.cli.up import ensure_fleet_secret

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert Settings().with_local_fleet_secret().signing_key is None, "none made yet"
    made = ensure_fleet_secret(Settings(), tmp_path / "droplet")
    assert made.signing_key and (tmp_path / "droplet" / "fleet.key").stat().st_mode & 0o777 == 0o600
    assert ensure_fleet_secret(Settings(), tmp_path / "droplet").signing_key == made.signing_key
    assert Settings().with_local_fleet_secret().signing_key == made.signing_key
    assert Settings(local_fleet_secret=False).with_local_fleet_secret().signing_key is None
    assert Settings(signing_key="own").with_local_fleet_secret().signing_key == "own"
    with pytest.raises(ConfigurationError, match="cannot read"):
        Settings(signing_key_file=str(tmp_path / "missing")).with_secret_file()


def test_the_example_configuration_names_every_setting_and_parses() -> None:
    import dataclasses
    import re

    example = Path(__file__).resolve().parents[2] / "deploy" / "droplet.toml.example"
    text = example.read_text()
    named = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.M))
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields - named == set(), "settings the example does not mention"
    assert named - fields == set(), "keys the example names that are no setting"
    Settings.from_file(example)


def test_connect_refuses_a_settings_object_given_as_the_broker_url() -> None:
    import droplet
    from droplet.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="settings="):
        droplet.connect(Settings())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="etcd must be a string"):
        droplet.connect(etcd=2379)  # type: ignore[arg-type]


@pytest.mark.parametrize(("env", "setting"), [
    ({"DROPLET_NAMESPACE": "bad ns!"}, "namespace"),
    ({"DROPLET_MAX_PRIORITY": "500"}, "max_priority"),
    ({"DROPLET_MAX_PRIORITY": "-1"}, "max_priority"),
    ({"DROPLET_RESULT_TIMEOUT_S": "-5"}, "result_timeout_s"),
    ({"DROPLET_RESULT_TIMEOUT_S": "0"}, "result_timeout_s"),
    ({"DROPLET_RESULT_TIMEOUT_S": "nan"}, "result_timeout_s"),
    ({"DROPLET_REQUEST_TIMEOUT_S": "-1"}, "request_timeout_s"),
    ({"DROPLET_WORKER_LEASE_TTL_S": "0"}, "worker_lease_ttl_s"),
    ({"DROPLET_BROKER_HEARTBEAT_S": "-1"}, "broker_heartbeat_s"),
    ({"DROPLET_SPECULATIVE_COPIES": "-3"}, "speculative_copies"),
])
def test_values_that_cannot_work_are_refused_naming_the_setting(
        env: dict[str, str], setting: str) -> None:
    # Each of these once went through: a bad namespace was a bare ValueError, max_priority
    # 500 was blamed on queues "declared by an older Droplet", a negative heartbeat was
    # "RabbitMQ connect failed: argument out of range", result_timeout_s <= 0 made every
    # get() time out at once.
    with pytest.raises(ConfigurationError, match=f"setting '{setting}'"):
        Settings.from_env(env)


def test_the_edges_of_those_ranges_are_taken() -> None:
    s = Settings.from_env({"DROPLET_MAX_PRIORITY": "0", "DROPLET_BROKER_HEARTBEAT_S": "0",
                           "DROPLET_SPECULATIVE_COPIES": "1", "DROPLET_NAMESPACE": "a.b:c-d_1"})
    assert (s.max_priority, s.broker_heartbeat_s, s.speculative_copies) == (0, 0, 1)
    assert Settings(max_priority=255, result_timeout_s=0.001).max_priority == 255
