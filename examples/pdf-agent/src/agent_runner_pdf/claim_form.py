"""Reading a claim form with pypdf: the filled-in text fields (AcroForm) of each page, and what
they must hold to be a claim. Blocking calls; the agent runs them in a thread."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pypdf import PageObject, PdfReader
from pypdf.errors import PyPdfError
from pypdf.generic import DictionaryObject, PdfObject

from agent_runner.agents import PermanentError

# A widget's field and its parents (a field's full name is its parents' names and its own):
# real forms nest a few levels; more is a malformed or hostile file.
MAX_FIELD_DEPTH = 32


class ClaimFormError(PermanentError):
    """The document cannot be read as a claim form: another attempt would not change that, so
    the run ends at once."""


class DocumentNotFoundError(ClaimFormError):
    pass


class UnreadableDocumentError(ClaimFormError):
    pass


class NotAClaimFormError(ClaimFormError):
    pass


def _one_line(text: str) -> str:
    """Line breaks typed into a multi-line field are layout, not content."""
    return " ".join(text.split())


class ClaimFields(BaseModel):
    """What a claim form must hold; the form's other fields are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    policy_number: str = Field(min_length=1, max_length=64)
    claimant: str = Field(min_length=1, max_length=200)
    date_of_loss: date
    # Money is exact: a decimal, given back as a string ("4850.00").
    amount_claimed: Decimal = Field(ge=0, max_digits=14, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")
    description: Annotated[str, AfterValidator(_one_line)] = Field(min_length=1, max_length=5000)


class ClaimExtraction(BaseModel):
    """The agent's result."""

    document: str
    pages: int
    fields: ClaimFields


def open_claim_form(path: Path) -> PdfReader:
    """The PDF at ``path``, its page tree read; errors name the file, not the directory."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise UnreadableDocumentError(f"{path.name!r} is encrypted")
        if len(reader.pages) == 0:
            raise UnreadableDocumentError(f"{path.name!r} has no pages")
    except FileNotFoundError:
        raise DocumentNotFoundError(
            f"no document named {path.name!r} in the documents directory"
        ) from None
    except PyPdfError as err:
        raise UnreadableDocumentError(f"{path.name!r} is not a readable PDF: {err}") from err
    return reader


def page_fields(page: PageObject) -> dict[str, str]:
    """The text fields shown on ``page``: full field name to value (unfilled ones left out)."""
    found: dict[str, str] = {}
    for annotation in page.annotations or []:
        widget = annotation.get_object()
        if not isinstance(widget, DictionaryObject) or _entry(widget, "/Subtype") != "/Widget":
            continue
        name, kind, value = _field_of(widget)
        if name and kind == "/Tx" and isinstance(value, str):
            found[name] = str(value)
    return found


def _field_of(widget: DictionaryObject) -> tuple[str, object, object]:
    """The full name, type and value of the field a widget shows: the widget may be the field
    itself or one of its kids, and a kid inherits its parent's type and value."""
    names: list[str] = []
    kind: object = None
    value: object = None
    node: DictionaryObject | None = widget
    for _ in range(MAX_FIELD_DEPTH):
        if node is None:
            break
        if "/T" in node:
            names.append(str(node["/T"]))
        kind = kind if kind is not None else _entry(node, "/FT")
        value = value if value is not None else _entry(node, "/V")
        parent = _entry(node, "/Parent")
        node = parent if isinstance(parent, DictionaryObject) else None
    return ".".join(reversed(names)), kind, value


def _entry(node: DictionaryObject, key: str) -> object:
    """``node[key]`` or None, an indirect reference followed (``get`` alone returns it)."""
    entry = node.get(key)
    return entry.get_object() if isinstance(entry, PdfObject) else entry


def claim_fields(document: str, found: dict[str, str]) -> ClaimFields:
    """The claim in the fields found, or an error naming each field missing or malformed."""
    try:
        return ClaimFields.model_validate(found)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in err.errors(include_url=False, include_input=False)
        )
        raise NotAClaimFormError(
            f"{document!r} is not a claim form we can read: {problems}"
        ) from None
