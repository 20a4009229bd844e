"""Office files are parsed by defusedxml: an XML bomb or an external entity in an attached document is
refused with a clear 400 reason, before anything expands or any local file is read."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest

from aqueduct_proxy.files import UnreadableFileError, extract_text

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + ']>\n<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
)


def _external_entity(path: Path, root: str) -> str:
    return f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY leak SYSTEM "file://{path}">]>\n' + root.replace(
        "TEXT", "&leak;"
    )


def _replace(archive: bytes, name: str, text: str) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            target.writestr(item, text if item.filename == name else source.read(item.filename))
    return out.getvalue()


def _docx(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _xlsx(shared_strings: str) -> bytes:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("xl/workbook.xml", f"<workbook {ns}/>")
        z.writestr("xl/sharedStrings.xml", shared_strings)
        z.writestr(
            "xl/worksheets/sheet1.xml",
            f'<worksheet {ns}><sheetData><row><c t="s"><v>0</v></c></row></sheetData></worksheet>',
        )
    return buffer.getvalue()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret.txt"
    path.write_text("HOST-SECRET-4711")
    return path


def test_a_docx_with_an_xml_bomb_is_refused() -> None:
    bomb = _replace(_docx("harmless"), "word/document.xml", BILLION_LAUGHS)

    with pytest.raises(UnreadableFileError, match="DTD or entities") as refused:
        extract_text(bomb, "bomb.docx")
    assert refused.value.code == "unsupported_file"


def test_a_docx_with_an_external_entity_is_refused_and_nothing_is_read(secret_file: Path) -> None:
    root = (
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>TEXT</w:t></w:r></w:p></w:body></w:document>"
    )
    leaky = _replace(_docx("harmless"), "word/document.xml", _external_entity(secret_file, root))

    with pytest.raises(UnreadableFileError, match="DTD or entities") as refused:
        extract_text(leaky, "leak.docx")
    assert "HOST-SECRET" not in str(refused.value)


def test_an_external_entity_in_a_relationship_part_is_refused(secret_file: Path) -> None:
    rels = _external_entity(
        secret_file,
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">TEXT</Relationships>',
    )
    with pytest.raises(UnreadableFileError, match="DTD or entities"):
        extract_text(_replace(_docx("harmless"), "_rels/.rels", rels), "rels.docx")


def test_an_xlsx_with_an_external_entity_is_refused(secret_file: Path) -> None:
    shared = _external_entity(
        secret_file,
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>TEXT</t></si></sst>',
    )
    with pytest.raises(UnreadableFileError, match="DTD or entities"):
        extract_text(_xlsx(shared), "leak.xlsx")


def test_ordinary_office_files_still_read() -> None:
    assert extract_text(_docx("Quarterly minutes"), "minutes.docx") == "Quarterly minutes"
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    assert extract_text(_xlsx(f"<sst {ns}><si><t>revenue</t></si></sst>"), "n.xlsx") == "# sheet1\nrevenue"
