"""Writes the sample claim the agent's tests and README use: a two-page claim form with filled-in
text fields (AcroForm), made with pypdf's writer, the same bytes every time.

    .venv/bin/python examples/pdf-agent/scripts/make_sample_claim.py [OUTPUT]

OUTPUT defaults to the package's ``samples/sample-claim.pdf``; the tests check that the
committed file is what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    ContentStream,
    DictionaryObject,
    FloatObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent
    / "src"
    / "agent_runner_pdf"
    / "samples"
    / "sample-claim.pdf"
)
A4 = (595, 842)
LEFT, FIELD_LEFT, RIGHT = 56, 210, 539
PRINTED = 1 << 2  # annotation flag bit 3: print the field with the page
MULTILINE = 1 << 12  # text field flag bit 13: a multi-line field

# What the claimant filled in: (page, field name, label, value, field height).
FIELDS = [
    (0, "policy_number", "Policy number", "HO-2026-004711", 20),
    (0, "claimant", "Claimant", "Maria Keller", 20),
    (0, "date_of_loss", "Date of loss (YYYY-MM-DD)", "2026-03-14", 20),
    (0, "amount_claimed", "Amount claimed", "4850.00", 20),
    (0, "currency", "Currency", "EUR", 20),
    (
        1,
        "description",
        "What happened",
        # Typed with line breaks, as people do in a multi-line field.
        "A pipe burst under the kitchen sink while we were away\n"
        "for the weekend. The water ruined the kitchen floor\n"
        "boards and the dishwasher.",
        80,
    ),
]
PAGE_TEXT = [
    [
        (18, "Northwind Mutual - Home Insurance"),
        (14, "Property claim form"),
        (10, "Please fill in every field. Page 2 asks what happened."),
    ],
    [
        (14, "Property claim form (continued)"),
        (10, "I declare that the information I have given is true and complete."),
    ],
]


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: list[tuple[int, str]], labels: list[tuple[float, str]]) -> bytes:
    """The page's printed text: its heading lines from the top, then each field's label."""
    ops: list[str] = []
    y = A4[1] - 72
    for size, line in lines:
        ops.append(f"BT /Helv {size} Tf {LEFT} {y} Td ({_escaped(line)}) Tj ET")
        y -= size + 12
    for label_y, label in labels:
        ops.append(f"BT /Helv 11 Tf {LEFT} {label_y} Td ({_escaped(label)}) Tj ET")
    return "\n".join(ops).encode("ascii")


def _rect(*values: float) -> ArrayObject:
    return ArrayObject(FloatObject(value) for value in values)


def _text_field(name: str, label: str, bottom: float, top: float) -> DictionaryObject:
    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject("/Widget"),
            NameObject("/FT"): NameObject("/Tx"),
            NameObject("/T"): TextStringObject(name),
            NameObject("/TU"): TextStringObject(label),
            NameObject("/Rect"): _rect(FIELD_LEFT, bottom, RIGHT, top),
            NameObject("/F"): NumberObject(PRINTED),
            NameObject("/Ff"): NumberObject(MULTILINE if top - bottom > 20 else 0),
            NameObject("/DA"): TextStringObject("/Helv 10 Tf 0 g"),
        }
    )


def claim_form() -> PdfWriter:
    writer = PdfWriter()
    helvetica = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    fonts = DictionaryObject({NameObject("/Helv"): helvetica})
    fields = ArrayObject()
    for page_number, heading in enumerate(PAGE_TEXT):
        page = writer.add_blank_page(*A4)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        labels: list[tuple[float, str]] = []
        top = A4[1] - 72 - sum(size + 12 for size, _ in heading) - 24
        for on_page, name, label, _value, height in FIELDS:
            if on_page != page_number:
                continue
            bottom = top - height
            labels.append((top - 14, label))
            widget = writer.add_annotation(page, _text_field(name, label, bottom, top))
            fields.append(widget.indirect_reference)
            top = bottom - 16
        contents = ContentStream(None, writer)
        contents.set_data(_content(heading, labels))
        page.replace_contents(contents)
    writer.root_object[NameObject("/AcroForm")] = DictionaryObject(
        {
            NameObject("/Fields"): fields,
            NameObject("/DA"): TextStringObject("/Helv 0 Tf 0 g"),
            NameObject("/DR"): DictionaryObject({NameObject("/Font"): fonts}),
        }
    )
    # Filled in, with appearance streams, so every viewer shows the values.
    writer.update_page_form_field_values(
        None, {name: value for _, name, _, value, _ in FIELDS}, auto_regenerate=False
    )
    return writer


def main(output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as out:
        claim_form().write(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
