"""What each service reads from the environment, taken from its pydantic Settings class."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping

import pytest
from pydantic_settings import BaseSettings

#: Read by boto3 in every service (the store may be S3).
AWS_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"})


def settings_class(module: str) -> type[BaseSettings]:
    """The Settings class defined in `<module>.settings` (the service started by `python -m module`)."""
    namespace = importlib.import_module(f"{module}.settings")
    found = [obj for obj in vars(namespace).values() if inspect.isclass(obj)
             and issubclass(obj, BaseSettings) and obj.__module__ == namespace.__name__]
    assert len(found) == 1, f"{module}.settings should define one Settings class, found {found}"
    return found[0]


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every variable `cls` reads: env prefix + field name, or the field's validation alias."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def load_with_env(cls: type[BaseSettings], env: Mapping[str, str],
                  monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    """`cls()` built with exactly `env` as this process's DERMASCAN_/AWS_ variables (raises
    pydantic's ValidationError on a value the service would refuse at start)."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("DERMASCAN_", "AWS_")):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return cls()
