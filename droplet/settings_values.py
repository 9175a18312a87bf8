"""Reading setting values from text: environment variables and TOML files give strings (or
TOML values) that become the types the Settings dataclass declares, refused with a
ConfigurationError naming the setting. Apart from settings.py, which says what each setting
is, because turning words into values is a concern of its own."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from droplet.errors import ConfigurationError


def coerce(name: str, type_name: str, raw: Any) -> Any:
    try:
        if name == "broker_url" and not isinstance(raw, str):
            return ",".join(str(url).strip() for url in raw)
        if name == "etcd_endpoints":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            endpoints = tuple(item.strip() for item in items if item.strip())
            if not endpoints:
                raise ValueError("no endpoint")
            return endpoints
        if name == "worker_resources" and raw not in ("", None):
            from droplet import resources

            if isinstance(raw, Mapping):
                raw = resources.describe(resources.checked(raw, name))
            resources.parse(str(raw))  # refused here, not when a worker starts
            return str(raw)
        if type_name.startswith("int"):
            number = float(raw) if isinstance(raw, float) else int(raw)
            if number != int(number):
                raise ValueError("a whole number is needed")
            return int(number)
        if type_name.startswith("float"):
            return float(raw)
        if type_name.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError("expected true or false")
            return text in ("1", "true", "yes", "on")
        if raw in ("", None):
            if "None" not in type_name:
                raise ValueError("must not be empty")
            return None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"setting {name!r}: bad value {raw!r} ({exc})") from None


# Settings whose TOML value may be a table (worker_resources = {gpu = 1}).
_TABLE_SETTINGS = {"worker_resources"}


def read_toml(path: Path) -> dict[str, Any]:
    """The [droplet] table of a TOML file (or the whole file when it has none)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration {path}: {exc}") from None
    table = data.get("droplet", data)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [droplet] must be a table of settings")
    nested = sorted(k for k, v in table.items()
                    if isinstance(v, dict) and k not in _TABLE_SETTINGS)
    if nested:
        raise ConfigurationError(
            f"{path}: unexpected table(s) {nested}; settings go in one [droplet] table"
        )
    return dict(table)
