"""The checker's answer for one property: how many things it looked at, what broke, and what is
worth knowing without being a violation. Any violation fails the property; nothing else does."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PropertyResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    checked: int
    violations: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    properties: list[PropertyResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.properties)

    def failed(self) -> list[str]:
        return [result.name for result in self.properties if not result.passed]

    def __getitem__(self, name: str) -> PropertyResult:
        return next(result for result in self.properties if result.name == name)
