"""The agent on its own: its params, what it reads from the sample claim and from other PDFs,
and how it fails. A small real AgentContext stands in for the worker's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from agent_runner_pdf import ClaimFormExtractor, ClaimFormParams
from agent_runner_pdf.claim_form import (
    DocumentNotFoundError,
    NotAClaimFormError,
    UnreadableDocumentError,
)
from agent_runner_pdf.settings import SAMPLES_DIR
from pydantic import ValidationError
from pypdf import PdfReader, PdfWriter

from agent_runner.agent_registry import AgentRegistry, InvalidParamsError
from agent_runner.agents import AgentContext, LeaseLostError

SAMPLE = "sample-claim.pdf"
SAMPLE_FIELDS = {
    "policy_number": "HO-2026-004711",
    "claimant": "Maria Keller",
    "date_of_loss": "2026-03-14",
    "amount_claimed": "4850.00",
    "currency": "EUR",
    "description": (
        "A pipe burst under the kitchen sink while we were away for the weekend. "
        "The water ruined the kitchen floor boards and the dishwasher."
    ),
}


@dataclass
class RecordingContext:
    """An AgentContext that records what the agent checks and reports."""

    run_id: str = "run-1"
    agent_type: str = "claim-form-extractor"
    user_id: str = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
    attempt: int = 1
    fencing_token: int = 1
    lease_lost: bool = False
    checkpoints: int = 0
    progress: list[tuple[float, str]] = field(default_factory=list)
    log: structlog.stdlib.BoundLogger = field(
        default_factory=lambda: structlog.stdlib.get_logger("test").bind(run_id="run-1")
    )

    def checkpoint(self) -> None:
        self.checkpoints += 1
        if self.lease_lost:
            raise LeaseLostError("the lease ran out")

    async def report_progress(self, fraction: float, message: str = "") -> None:
        self.progress.append((fraction, message))


async def extract(
    document: str, documents_dir: Path | None = None, ctx: AgentContext | None = None
) -> dict[str, Any]:
    agent = ClaimFormExtractor(documents_dir)
    return await agent.run(ctx or RecordingContext(), ClaimFormParams(document=document))


def sample_with(directory: Path, name: str, **values: str) -> Path:
    """A copy of the sample claim under ``name`` with some fields filled in differently."""
    writer = PdfWriter(clone_from=SAMPLES_DIR / SAMPLE)
    writer.update_page_form_field_values(None, values, auto_regenerate=False)
    path = directory / name
    with path.open("wb") as out:
        writer.write(out)
    return path


async def test_extracts_the_fields_of_the_sample_claim() -> None:
    ctx = RecordingContext()

    result = await extract(SAMPLE, ctx=ctx)

    assert result == {"document": SAMPLE, "pages": 2, "fields": SAMPLE_FIELDS}
    assert json.loads(json.dumps(result)) == result
    # A lease check before opening the file and before each page; progress page by page.
    assert ctx.checkpoints == 3
    assert ctx.progress == [
        (0.0, f"opening {SAMPLE}"),
        (0.5, "read page 1 of 2"),
        (1.0, "read page 2 of 2"),
    ]


async def test_reads_from_the_documents_dir_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample_with(tmp_path, "claim-4711.pdf", claimant="Jonas Berg", amount_claimed="120.50")
    monkeypatch.setenv("PDF_AGENT_DOCUMENTS_DIR", str(tmp_path))

    result = await extract("claim-4711.pdf")

    changed = {"claimant": "Jonas Berg", "amount_claimed": "120.50"}
    assert result["fields"] == {**SAMPLE_FIELDS, **changed}
    with pytest.raises(DocumentNotFoundError):
        await extract(SAMPLE)  # the bundled samples are not looked at any more


async def test_without_the_setting_it_reads_the_bundled_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PDF_AGENT_DOCUMENTS_DIR", raising=False)

    assert ClaimFormExtractor().documents_dir == SAMPLES_DIR
    assert (await extract(SAMPLE))["fields"] == SAMPLE_FIELDS


async def test_a_missing_document_is_an_error_naming_it_not_the_directory(tmp_path: Path) -> None:
    ctx = RecordingContext()

    with pytest.raises(DocumentNotFoundError) as raised:
        await extract("no-such-claim.pdf", tmp_path, ctx)

    assert str(raised.value) == "no document named 'no-such-claim.pdf' in the documents directory"
    assert ctx.progress == [(0.0, "opening no-such-claim.pdf")]


async def test_a_lost_lease_stops_it_before_it_reads() -> None:
    ctx = RecordingContext(lease_lost=True)

    with pytest.raises(LeaseLostError):
        await extract(SAMPLE, ctx=ctx)

    assert ctx.progress == []


async def test_a_file_that_is_not_a_pdf_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(b"this is a photo of a claim form, not a PDF")

    with pytest.raises(UnreadableDocumentError) as raised:
        await extract("scan.pdf", tmp_path)

    assert str(raised.value).startswith("'scan.pdf' is not a readable PDF: ")


async def test_a_pdf_without_the_claim_fields_is_an_error_naming_them(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    with (tmp_path / "letter.pdf").open("wb") as out:
        writer.write(out)

    with pytest.raises(NotAClaimFormError) as raised:
        await extract("letter.pdf", tmp_path)

    message = str(raised.value)
    assert message.startswith("'letter.pdf' is not a claim form we can read: ")
    for name in SAMPLE_FIELDS:
        assert f"{name}: Field required" in message


async def test_a_malformed_value_is_an_error_naming_the_field(tmp_path: Path) -> None:
    sample_with(tmp_path, "claim.pdf", date_of_loss="14th of March", amount_claimed="lots")

    with pytest.raises(NotAClaimFormError) as raised:
        await extract("claim.pdf", tmp_path)

    assert "date_of_loss: " in str(raised.value)
    assert "amount_claimed: " in str(raised.value)
    assert "policy_number" not in str(raised.value)


def test_the_sample_is_small_and_a_form() -> None:
    path = SAMPLES_DIR / SAMPLE
    assert path.stat().st_size < 10_000
    assert set(PdfReader(path).get_form_text_fields()) == set(SAMPLE_FIELDS)


@pytest.mark.parametrize(
    "document",
    [
        "../etc/passwd",
        "/etc/passwd.pdf",
        "claims/sample-claim.pdf",
        "..\\sample-claim.pdf",
        "..",
        ".hidden.pdf",
        "sample-claim.pdf\x00.txt",
        "sample-claim.txt",
        "",
        "x" * 252 + ".pdf",
    ],
)
def test_params_refuse_anything_but_a_pdf_file_name(document: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ClaimFormParams.model_validate({"document": document})

    [error] = raised.value.errors()
    assert error["loc"] == ("document",)


@pytest.mark.parametrize("document", [SAMPLE, "Schadensmeldung Müller 2026.PDF", "a.pdf"])
def test_params_take_a_pdf_file_name(document: str) -> None:
    assert ClaimFormParams.model_validate({"document": document}).document == document


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"document": "../etc/passwd"}, "params.document: Value error, must be a file name"),
        ({"document": SAMPLE, "pages": 3}, "params.pages: Extra inputs are not permitted"),
        ({}, "params.document: Field required"),
        (None, "params.document: Field required"),
    ],
)
def test_the_registry_refuses_bad_params_naming_the_field(
    params: dict[str, Any] | None, problem: str
) -> None:
    """What the API answers 422 with, and what the worker refuses for runs started elsewhere."""
    registry = AgentRegistry.of([ClaimFormExtractor()])

    with pytest.raises(InvalidParamsError, match=re.escape(problem)):
        registry.params("claim-form-extractor", params)


def test_the_sample_is_what_the_script_makes(tmp_path: Path) -> None:
    """The committed sample is reproducible: the script writes the very same bytes."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_sample_claim.py"
    made = tmp_path / "made.pdf"

    subprocess.run([sys.executable, str(script), str(made)], check=True)

    assert made.read_bytes() == (SAMPLES_DIR / SAMPLE).read_bytes()
