"""The configuration table of docs/operations.md, made from the settings classes (the one source
of truth): printed, or written between the page's settings-table markers.

    .venv/bin/python scripts/settings_table.py                 # print it
    .venv/bin/python scripts/settings_table.py --write         # rewrite docs/operations.md's block

`tests/docs/` checks that the page's block is exactly what this prints.
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
from scripts.generated_block import GeneratedBlock
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


DOC = REPO_ROOT / "docs" / "operations.md"


def table() -> str:
    """The markdown table, one row per variable, ending with a newline."""
    rows = ["| variable | service | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {services} | {default} | {text} |"
             for name, (services, default, text) in variables().items()]
    return "\n".join(rows) + "\n"


GENERATED = GeneratedBlock("settings-table", DOC, table, "The configuration table of docs/operations.md.")
block, write, main = GENERATED.block, GENERATED.write, GENERATED.main
START, END = GENERATED.start, GENERATED.end


if __name__ == "__main__":
    main()
