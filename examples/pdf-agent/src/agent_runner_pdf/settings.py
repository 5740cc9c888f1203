"""The one place this plug-in reads the environment (and ``.env``): settings prefixed
``PDF_AGENT_``."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

# The sample claim forms shipped in the package.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class PdfAgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PDF_AGENT_", env_file=".env", extra="ignore", frozen=True
    )

    # Where the claim forms are: a run's `document` is a file name in this directory.
    documents_dir: Path = SAMPLES_DIR
