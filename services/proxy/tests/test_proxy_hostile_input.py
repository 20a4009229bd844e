"""Hostile input gets a clear refusal, never a crash: deep nesting, zip bombs, broken office files."""

from __future__ import annotations

import io
import zipfile

import pytest

from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.files.extract import MAX_UNZIPPED_BYTES, UnreadableFileError, extract_text


def test_deeply_nested_content_is_counted_without_recursion() -> None:
    nested: object = "four words of text"
    for _ in range(5_000):
        nested = [nested]
    counter = TokenCounter()
    assert counter.count({"messages": [{"role": "user", "content": nested}]}) == counter.count_text(
        "four words of text"
    )


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_it_is_inflated() -> None:
    bomb = _zip(
        {"xl/workbook.xml": b"<workbook/>", "xl/worksheets/sheet1.xml": b"\0" * (MAX_UNZIPPED_BYTES + 1)}
    )
    assert len(bomb) < 200_000  # small on the wire
    with pytest.raises(UnreadableFileError, match="expands to more than"):
        extract_text(bomb, "bomb.xlsx")


def test_a_spreadsheet_pointing_past_its_shared_strings_is_unreadable_not_a_crash() -> None:
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    sheet = f'<worksheet xmlns="{ns}"><sheetData><row><c t="s"><v>7</v></c></row></sheetData></worksheet>'
    shared = f'<sst xmlns="{ns}"><si><t>only one</t></si></sst>'
    broken = _zip(
        {
            "xl/workbook.xml": b"<workbook/>",
            "xl/worksheets/sheet1.xml": sheet.encode(),
            "xl/sharedStrings.xml": shared.encode(),
        }
    )
    with pytest.raises(UnreadableFileError):
        extract_text(broken, "broken.xlsx")
