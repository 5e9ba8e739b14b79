"""Print the README's configuration table from the settings classes (the one source of truth).

    .venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from embedded.__main__ import EmbeddedSettings
from gateway.settings import GatewaySettings
from inference_worker.settings import WorkerSettings
from ingest_service.settings import IngestSettings
from shared.settings import REPO_ROOT, CommonSettings
from trainer_service.settings import TrainerSettings

SERVICES: dict[str, type[BaseSettings]] = {
    "all": CommonSettings,
    "gateway": GatewaySettings,
    "inference_worker": WorkerSettings,
    "ingest_service": IngestSettings,
    "trainer_service": TrainerSettings,
    "embedded": EmbeddedSettings,
}


def env_name(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None and info.default is PydanticUndefined:
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        return str(extra.get("default_text", "generated"))
    default = info.get_default()
    return "unset" if default is None else str(default).replace(str(REPO_ROOT), ".")


def variables() -> dict[str, tuple[str, str, str]]:
    """Variable -> (services, default(s), description), in first-seen order."""
    rows: dict[str, tuple[list[str], list[str], str]] = {}
    for service, cls in SERVICES.items():
        inherited = set(CommonSettings.model_fields) if service != "all" else set()
        for field, info in cls.model_fields.items():
            if field in inherited:
                continue
            name = env_name(cls, field)
            services, defaults, _ = rows.setdefault(name, ([], [], info.description or ""))
            services.append(service)
            defaults.append(_default(info))
    table = {}
    for name, (services, defaults, text) in rows.items():
        if len(set(defaults)) == 1:
            shown = f"`{defaults[0]}`"
        else:
            shown = ", ".join(f"`{d}` ({s})" for s, d in zip(services, defaults, strict=True))
        table[name] = (", ".join(services), shown, text)
    return table


def main() -> None:
    print("| variable | service | default | meaning |")
    print("|---|---|---|---|")
    for name, (services, default, text) in variables().items():
        print(f"| `{name}` | {services} | {default} | {text} |")


if __name__ == "__main__":
    main()
