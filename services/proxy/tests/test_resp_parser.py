"""The fast Valkey client's reply parser: every reply type the scripts return, whole or split anywhere
across reads (integers inside arrays are read on a shorter path than the rest)."""

from __future__ import annotations

from aqueduct_proxy.adapters.resp import RespError, _Parser

REPLIES = (
    b"*6\r\n:1\r\n*4\r\n:2\r\n:1\r\n:1234567890123457\r\n:-5\r\n:1\r\n$3\r\nabc\r\n*0\r\n*2\r\n:7\r\n:8\r\n"
    b"+OK\r\n-NOSCRIPT No matching script\r\n:42\r\n$-1\r\n*3\r\n$1\r\nx\r\n:9\r\n*1\r\n:10\r\n"
)
EXPECTED = [
    [1, [2, 1, 1_234_567_890_123_457, -5], 1, b"abc", [], [7, 8]],
    "OK",
    "NOSCRIPT No matching script",
    42,
    None,
    [b"x", 9, [10]],
]


def _normal(replies: list[object]) -> list[object]:
    return [str(r) if isinstance(r, RespError) else r for r in replies]


def test_replies_read_whole() -> None:
    assert _normal(_Parser().feed(REPLIES)) == EXPECTED


def test_replies_split_at_every_byte() -> None:
    for cut in range(1, len(REPLIES)):
        parser = _Parser()
        replies = parser.feed(REPLIES[:cut]) + parser.feed(REPLIES[cut:])
        assert _normal(replies) == EXPECTED, cut


def test_replies_one_byte_at_a_time() -> None:
    parser = _Parser()
    replies: list[object] = []
    for i in range(len(REPLIES)):
        replies += parser.feed(REPLIES[i : i + 1])
    assert _normal(replies) == EXPECTED
