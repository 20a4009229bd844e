"""Rules for ad-hoc SQL: one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN), nothing else.

The engine enforces ``readonly=1`` as well; these checks reject what readonly mode still allows (several
statements in one string, ``INTO OUTFILE``, a ``FORMAT`` that would break the JSON answer) and give a
clear message for writes.
"""

from __future__ import annotations

import re

__all__ = ["ReadOnlySqlError", "check_read_only"]

_ALLOWED_FIRST = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"}
_FORBIDDEN_WORDS = {"OUTFILE", "FORMAT", "SETTINGS"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ReadOnlySqlError(ValueError):
    """The statement is not a single read-only query."""


def _code_only(sql: str) -> str:
    """The statement with comments and quoted text blanked, same length, so positions still match."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i) or c == "#":
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise ReadOnlySqlError("unterminated comment")
            end += 2
        elif c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote inside the literal
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise ReadOnlySqlError("unterminated quoted text")
            out.append(c + " " * (j - i - 1) + c)
            i = j + 1
            continue
        else:
            out.append(c)
            i += 1
            continue
        out.append(" " * (end - i))
        i = end
    return "".join(out)


def check_read_only(sql: str) -> str:
    """Return the statement without a trailing ``;``, or raise ``ReadOnlySqlError``."""
    code = _code_only(sql).rstrip()
    if code.endswith(";"):
        sql, code = sql[: len(code) - 1], code[:-1]
    code = code.strip()
    if not code:
        raise ReadOnlySqlError("empty query")
    if ";" in code:
        raise ReadOnlySqlError("only one statement per query")
    words = [w.upper() for w in _WORD.findall(code)]
    if not words or words[0] not in _ALLOWED_FIRST:
        raise ReadOnlySqlError("only read-only queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)")
    bad = _FORBIDDEN_WORDS.intersection(words)
    if bad:
        raise ReadOnlySqlError(f"{', '.join(sorted(bad))} is not allowed in ad-hoc queries")
    return sql.strip()
