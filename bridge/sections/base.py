"""What every section of the configuration is: a frozen model that refuses unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section of the configuration file: frozen once loaded; an unknown key is an error
    (a misspelt key must not fall back to its default unnoticed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
