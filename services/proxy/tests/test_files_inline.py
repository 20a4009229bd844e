"""File content in chat: documents made by the test (a hand-written PDF, a Word file, a spreadsheet,
CSV) are turned into text parts, both as a pure rule and through the proxy against the test upstream,
which shows what it received. Formats that cannot be read get a clear OpenAI 400."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import docx
import openai
import pytest
from aiohttp import web

from aqueduct_proxy.bootstrap import bootstrap
from aqueduct_proxy.domain.errors import BadRequestError
from aqueduct_proxy.entrypoints.server import OpenAIErrorsRunner
from aqueduct_proxy.files import (
    FilesSettings,
    FileStore,
    UnreadableFileError,
    extract_text,
    inline_file_parts,
    setup_file_inlining,
    setup_files,
)
from conftest import common_settings, proxy_settings, wait_token


def make_pdf(*lines: str) -> bytes:
    """A one-page PDF with real text (Helvetica), written by hand with a correct cross-reference table."""
    text = " 0 -16 Td ".join(f"({line}) Tj" for line in lines)
    stream = f"BT /F1 12 Tf 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_docx(*paragraphs: str) -> bytes:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "region", "north"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_xlsx() -> bytes:
    """A minimal workbook as Excel writes it: shared strings plus one sheet with a number."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", f"<workbook {ns}/>")
        z.writestr("xl/sharedStrings.xml", f"<sst {ns}><si><t>revenue</t></si><si><t>costs</t></si></sst>")
        z.writestr(
            "xl/worksheets/sheet1.xml",
            f'<worksheet {ns}><sheetData><row><c t="s"><v>0</v></c><c><v>1200</v></c></row>'
            f'<row><c t="s"><v>1</v></c><c><v>800</v></c></row></sheetData></worksheet>',
        )
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_text_is_extracted_from_pdf_docx_xlsx_and_csv():
    assert "The quarterly revenue grew by 12 percent" in extract_text(
        make_pdf("The quarterly revenue grew by 12 percent", "Second line"), "report.pdf"
    )
    word = extract_text(make_docx("Minutes of the board meeting", "Decision: approve"), "minutes.docx")
    assert "Minutes of the board meeting" in word and "Decision: approve" in word and "region\tnorth" in word
    assert extract_text(make_xlsx(), "numbers.xlsx") == "# sheet1\nrevenue\t1200\ncosts\t800"
    assert extract_text(b"a,b\n1,2\n", "table.csv", "text/csv") == "a,b\n1,2\n"


def test_unreadable_formats_get_a_clear_error():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    with pytest.raises(UnreadableFileError) as refused:
        extract_text(png, "photo.png", "image/png")
    assert refused.value.status == 400 and "photo.png" in refused.value.message
    with pytest.raises(UnreadableFileError):
        extract_text(b"%PDF-1.4 garbage that is no pdf", "broken.pdf")


async def test_inline_file_parts_replaces_file_parts_and_keeps_the_rest():
    pdf = make_pdf("Alpha beta gamma")
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise:"},
                    {
                        "type": "file",
                        "file": {"file_data": data_url(pdf, "application/pdf"), "filename": "a.pdf"},
                    },
                    {"type": "file", "file": {"file_id": "file-1"}},
                ],
            },
        ],
    }

    async def load(file_id: str) -> tuple[bytes, str]:
        assert file_id == "file-1"
        return b"stored notes", "notes.txt"

    inlined = await inline_file_parts(body, load)

    parts = inlined["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "Summarise:"}
    assert (
        parts[1]["type"] == "text" and "Alpha beta gamma" in parts[1]["text"] and "a.pdf" in parts[1]["text"]
    )
    assert parts[2] == {"type": "text", "text": "[Content of the file notes.txt]\nstored notes"}
    assert inlined["messages"][0] == body["messages"][0]
    assert body["messages"][1]["content"][1]["type"] == "file"  # the caller's body is untouched
    responses = await inline_file_parts(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_file",
                            "file_data": data_url(b"plain words", "text/plain"),
                            "filename": "p.txt",
                        }
                    ],
                }
            ]
        },
        None,
    )
    assert responses["input"][0]["content"][0] == {
        "type": "input_text",
        "text": "[Content of the file p.txt]\nplain words",
    }
    with pytest.raises(BadRequestError):
        await inline_file_parts(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "file", "file": {"file_data": "data:application/pdf;base64,@@@"}}
                        ],
                    }
                ]
            },
            None,
        )


@pytest.fixture(scope="module")
async def proxy_with_files(
    snapshot: Any, bus: Any, nats_url: str, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The proxy as its bootstrap builds it, plus the files routes and the inlining, as wired at start."""
    settings = proxy_settings(valkey_url)
    common = common_settings(nats_url, tmp_path_factory.mktemp("proxy-files"))
    proxy = await bootstrap(settings.model_copy(update={"common": common}), with_features=())
    await proxy.start()
    files_settings = FilesSettings()
    store = FileStore(bus, quota_bytes_per_user=files_settings.quota_bytes_per_user)
    await store.start()
    setup_files(proxy.app, proxy.gateway.authenticate, store, files_settings)
    setup_file_inlining(proxy.app, proxy.gateway.authenticate, proxy.gateway.snapshot, store, files_settings)
    await asyncio.wait_for(proxy.watchers[0].ready.wait(), 10)
    runner = OpenAIErrorsRunner(proxy.app, access_log=None, handle_signals=False)  # as serve runs it
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    yield f"http://{settings.host}:{settings.port}"
    await runner.cleanup()
    await proxy.stop()


async def last_upstream_body(upstream: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{upstream.base}/_requests") as response:
        return (await response.json())[-1]["body"]


@pytest.mark.nats
@pytest.mark.valkey
async def test_a_pdf_attached_to_a_chat_request_reaches_the_upstream_as_text(
    proxy_with_files, snapshot, upstream
):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy_with_files, value)
    client = openai.AsyncOpenAI(base_url=proxy_with_files + "/v1", api_key=value, max_retries=0)
    pdf = make_pdf("Invoice 4711 is due on the first of March")

    answer = await client.chat.completions.create(
        model="gpt-test",
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "When is the invoice due?"},
                    {
                        "type": "file",
                        "file": {"file_data": data_url(pdf, "application/pdf"), "filename": "invoice.pdf"},
                    },
                ],
            }
        ],
    )

    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3"
    forwarded = (await last_upstream_body(upstream))["messages"][0]["content"]
    assert forwarded[0] == {"type": "text", "text": "When is the invoice due?"}
    assert forwarded[1]["type"] == "text"
    assert "Invoice 4711 is due on the first of March" in forwarded[1]["text"]
    assert answer.usage.prompt_tokens == 5 + len(
        forwarded[1]["text"].split()
    )  # the upstream counted the text

    uploaded = await client.files.create(
        file=("contract.docx", make_docx("Term: two years")), purpose="user_data"
    )
    await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": uploaded.id}}]}],
    )
    forwarded = (await last_upstream_body(upstream))["messages"][0]["content"]
    assert "Term: two years" in forwarded[0]["text"] and "contract.docx" in forwarded[0]["text"]

    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gpt-test",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "file_data": data_url(b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
                                "filename": "scan.png",
                            },
                        }
                    ],
                }
            ],
        )
    assert refused.value.body["code"] == "unsupported_file" and "scan.png" in refused.value.body["message"]

    other, _ = await snapshot.issue_token()
    await wait_token(proxy_with_files, other)
    with pytest.raises(openai.NotFoundError):  # someone else's file id is not found, not read
        await openai.AsyncOpenAI(
            base_url=proxy_with_files + "/v1", api_key=other, max_retries=0
        ).chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": uploaded.id}}]}],
        )
