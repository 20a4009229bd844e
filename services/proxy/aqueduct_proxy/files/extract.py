"""Text out of the documents people attach to chat requests: PDF, Word, the OpenDocument and other
Office formats, and plain text of any kind. Anything else is refused with a clear reason."""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _parse_xml

from aqueduct_proxy.domain.errors import BadRequestError

__all__ = ["UnreadableFileError", "extract_text"]

_TEXT_EXTENSIONS = frozenset(
    {
        "txt",
        "md",
        "markdown",
        "csv",
        "tsv",
        "json",
        "jsonl",
        "xml",
        "html",
        "htm",
        "yaml",
        "yml",
        "toml",
        "ini",
        "log",
        "rst",
        "tex",
        "py",
        "js",
        "ts",
        "java",
        "c",
        "h",
        "cpp",
        "go",
        "rs",
        "sql",
        "sh",
        "r",
    }
)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_ODF_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"


class UnreadableFileError(BadRequestError):
    code = "unsupported_file"


def _kind(data: bytes, filename: str, mime: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if data[:5] == b"%PDF-" or mime == "application/pdf":
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        try:
            entries = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return "unknown"
        if "word/document.xml" in entries:
            return "docx"
        if "xl/workbook.xml" in entries:
            return "xlsx"
        if "ppt/presentation.xml" in entries:
            return "pptx"
        if "content.xml" in entries and "mimetype" in entries:
            return "odf"
        return "zip"
    if (
        mime.startswith("text/")
        or mime in ("application/json", "application/xml")
        or extension in _TEXT_EXTENSIONS
    ):
        return "text"
    return "text" if _looks_like_text(data) else "unknown"


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 4  # a multi-byte character cut at the sample's end
    return True


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader  # imported on first use: most requests carry no PDF
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFileError("The PDF is password-protected; remove the password and try again.")
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except PdfReadError as exc:
        raise UnreadableFileError(f"The PDF could not be read ({exc}).") from exc


# Office files are zip archives: a few hundred kilobytes can inflate to gigabytes (a zip bomb), so
# the declared sizes are checked before anything is decompressed.
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024


def _open_zip(data: bytes) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(data))
    if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED_BYTES:
        raise UnreadableFileError(
            f"The document expands to more than {MAX_UNZIPPED_BYTES // (1024 * 1024)} MB; it is not read."
        )
    return archive


def _xml(raw: bytes) -> ElementTree.Element:
    """An Office XML part, parsed by defusedxml: no DTD, no entity (billion laughs), no external entity
    (which would read local files or URLs). Office documents never need any of them."""
    return _parse_xml(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _docx(data: bytes) -> str:
    import docx  # imported on first use

    archive = _open_zip(data)  # the size check before python-docx inflates it
    # python-docx parses with lxml; every XML part goes through defusedxml first.
    for name in archive.namelist():
        if name.endswith((".xml", ".rels")):
            _xml(archive.read(name))
    archive.close()

    document = docx.Document(io.BytesIO(data))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append("\t".join(cell.text for cell in row.cells))
    return "\n".join(parts).strip()


def _xml_texts(archive: zipfile.ZipFile, name: str, tag: str) -> list[str]:
    root = _xml(archive.read(name))
    return [el.text or "" for el in root.iter(tag)]


def _xlsx(data: bytes) -> str:
    archive = _open_zip(data)
    names = archive.namelist()
    shared = _xml_texts(archive, "xl/sharedStrings.xml", f"{_S}t") if "xl/sharedStrings.xml" in names else []
    sheets = sorted(
        (n for n in names if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", n)),
        key=lambda n: int(re.sub(r"\D", "", n)),
    )
    out = []
    for sheet in sheets:
        out.append(f"# {sheet.rsplit('/', 1)[-1][:-4]}")
        for row in _xml(archive.read(sheet)).iter(f"{_S}row"):
            cells = []
            for cell in row.iter(f"{_S}c"):
                value = cell.find(f"{_S}v")
                inline = cell.find(f"{_S}is")
                if cell.get("t") == "s" and value is not None and value.text:
                    cells.append(shared[int(value.text)])
                elif inline is not None:
                    cells.append("".join(t.text or "" for t in inline.iter(f"{_S}t")))
                else:
                    cells.append(value.text or "" if value is not None else "")
            out.append("\t".join(cells))
    return "\n".join(out).strip()


def _pptx(data: bytes) -> str:
    archive = _open_zip(data)
    slides = sorted(
        (n for n in archive.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", n)),
        key=lambda n: int(re.sub(r"\D", "", n)),
    )
    return "\n\n".join(
        f"# Slide {i}\n" + "\n".join(_xml_texts(archive, name, f"{_A}t")) for i, name in enumerate(slides, 1)
    ).strip()


def _odf(data: bytes) -> str:
    archive = _open_zip(data)
    root = _xml(archive.read("content.xml"))
    return "\n".join(
        "".join(el.itertext()) for el in root.iter() if el.tag in (f"{_ODF_TEXT}p", f"{_ODF_TEXT}h")
    )


def extract_text(data: bytes, filename: str = "", mime: str = "") -> str:
    """The document's text, or UnreadableFileError naming what could not be read and why."""
    kind = _kind(data, filename, mime.lower())
    label = filename or "the attached file"
    try:
        if kind == "pdf":
            text = _pdf(data)
        elif kind == "docx":
            text = _docx(data)
        elif kind == "xlsx":
            text = _xlsx(data)
        elif kind == "pptx":
            text = _pptx(data)
        elif kind == "odf":
            text = _odf(data)
        elif kind == "text":
            text = data.decode("utf-8", errors="replace")
        else:
            raise UnreadableFileError(
                f"The model cannot read {label} ({mime or 'unknown type'}) and its text cannot be extracted. "
                "Supported: PDF, DOCX, XLSX, PPTX, OpenDocument and plain-text formats."
            )
    except DefusedXmlException as exc:
        raise UnreadableFileError(
            f"{label} contains XML declarations (a DTD or entities) that documents never need; it is not read."
        ) from exc
    except (zipfile.BadZipFile, KeyError, IndexError, ElementTree.ParseError, ValueError) as exc:
        raise UnreadableFileError(f"{label} looks like a {kind.upper()} file but could not be read.") from exc
    if kind == "pdf" and not text:
        raise UnreadableFileError(f"{label} has no extractable text (a scanned PDF needs OCR first).")
    return text
