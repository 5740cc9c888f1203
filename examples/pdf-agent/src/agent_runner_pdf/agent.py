"""``claim-form-extractor``: reads a claim form from the documents directory and returns its
fields. The agent agent-runner loads (see the entry point in pyproject.toml)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent_runner.agents import Agent, AgentContext
from agent_runner_pdf.claim_form import (
    ClaimExtraction,
    DocumentNotFoundError,
    claim_fields,
    open_claim_form,
    page_fields,
)
from agent_runner_pdf.settings import PdfAgentSettings


def plain_file_name(value: str) -> str:
    """A file name in the documents directory: never a path that could lead out of it."""
    if "/" in value or "\\" in value or value.startswith(".") or not value.isprintable():
        raise ValueError("must be a file name in the documents directory, not a path")
    if not value.lower().endswith(".pdf"):
        raise ValueError("must name a PDF file (.pdf)")
    return value


class ClaimFormParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: Annotated[str, AfterValidator(plain_file_name)] = Field(
        max_length=255,
        description="The claim form's file name in the workers' documents directory.",
        examples=["sample-claim.pdf"],
    )


class ClaimFormExtractor(Agent[ClaimFormParams]):
    name = "claim-form-extractor"
    params_model = ClaimFormParams
    description = (
        "Reads a claim form (a PDF with filled-in form fields) and returns its policy number, "
        "claimant, date of loss, amount claimed, currency and description."
    )

    def __init__(self, documents_dir: Path | None = None) -> None:
        self._documents_dir = documents_dir

    @property
    def documents_dir(self) -> Path:
        """Given, else PDF_AGENT_DOCUMENTS_DIR, else the samples shipped in the package."""
        if self._documents_dir is None:
            return PdfAgentSettings().documents_dir
        return self._documents_dir

    async def run(self, ctx: AgentContext, params: ClaimFormParams) -> dict[str, Any]:
        document = params.document
        ctx.checkpoint()
        await ctx.report_progress(0.0, f"opening {document}")
        directory = self.documents_dir
        # pypdf blocks: in a thread, so the lease keeps being renewed while it reads.
        try:
            reader = await asyncio.to_thread(open_claim_form, directory / document)
        except DocumentNotFoundError:
            # The run's error names the document; the operator also needs the directory.
            ctx.log.warning("document_not_found", document=document, documents_dir=str(directory))
            raise
        pages = len(reader.pages)
        ctx.log.info("claim_form_opened", document=document, pages=pages)
        found: dict[str, str] = {}
        for number, page in enumerate(reader.pages, start=1):
            ctx.checkpoint()
            found.update(await asyncio.to_thread(page_fields, page))
            await ctx.report_progress(number / pages, f"read page {number} of {pages}")
        fields = claim_fields(document, found)
        # The claimant's name and the description are personal data: not logged.
        ctx.log.info(
            "claim_form_extracted",
            document=document,
            policy_number=fields.policy_number,
            fields_found=sorted(found),
        )
        return ClaimExtraction(document=document, pages=pages, fields=fields).model_dump(
            mode="json"
        )
