"""Rules for ad-hoc SQL: one read-only statement that reaches nothing but the usage tables.

No hand-written lexer: ClickHouse's own parser reads the query (``formatQuery`` refuses several statements
and gives the canonical text; ``EXPLAIN AST`` of that text gives the syntax tree). These rules decide on
that tree: the kind of statement (SELECT, WITH, SHOW TABLES/DATABASES/COLUMNS/CREATE TABLE, DESCRIBE,
EXPLAIN of a SELECT), no ``INTO OUTFILE``, ``FORMAT`` or ``SETTINGS``, no table function but the ones that
only make numbers, no function that reads files, settings, the host or other servers, no system table but
the harmless ones. The canonical text is what runs, so what was checked is what the engine executes. The
engine enforces read-only mode and the limits on its own as well (``adapters/analyst_sql.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedQuery", "ReadOnlySqlError", "check_read_only"]


class ReadOnlySqlError(ValueError):
    """The statement is not a single read-only query over the usage tables."""


@dataclass(frozen=True)
class ParsedQuery:
    """What the engine's parser made of a query: its canonical text and ``EXPLAIN AST`` lines."""

    formatted: str
    ast: list[str]


_KINDS = {
    "SelectWithUnionQuery",
    "Explain",
    "DescribeQuery",
    "ShowTables",
    "ShowColumns",
    "ShowCreateTableQuery",
}
# ShowTables also stands for SHOW SETTINGS, SHOW CLUSTERS, SHOW MERGES, ...: only these texts pass.
_SHOW_TABLES = re.compile(r"^SHOW (FULL )?(TEMPORARY )?(TABLES|DATABASES)\b")
# Table functions that only make values in memory. Every other one (file, url, s3, remote, mysql,
# postgresql, jdbc, executable, input, Python, merge, dictionary, ...) is refused wherever it appears.
_ALLOWED_TABLE_FUNCTIONS = {
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "generate_series",
    "generateseries",
    "values",
    "null",
    "view",
}
# Known table functions, for engines that cannot list theirs; the engine's own list is added at run time.
KNOWN_TABLE_FUNCTIONS = frozenset(
    {
        "azureblobstorage",
        "azureblobstoragecluster",
        "cluster",
        "clusterallreplicas",
        "deltalake",
        "deltalakecluster",
        "dictionary",
        "executable",
        "file",
        "filecluster",
        "format",
        "fuzzjson",
        "fuzzquery",
        "gcs",
        "generaterandom",
        "hdfs",
        "hdfscluster",
        "hudi",
        "hudicluster",
        "iceberg",
        "icebergazure",
        "iceberghdfs",
        "iceberglocal",
        "icebergs3",
        "icebergs3cluster",
        "input",
        "jdbc",
        "loop",
        "merge",
        "mergetreeindex",
        "mongodb",
        "mysql",
        "odbc",
        "paimon",
        "postgresql",
        "python",
        "redis",
        "remote",
        "remotesecure",
        "s3",
        "s3cluster",
        "sqlite",
        "url",
        "urlcluster",
        "arrowflight",
        "ytsaurus",
        "timeseriesdata",
        "timeseriesmetrics",
        "timeseriestags",
        "prometheusquery",
    }
)
# Scalar functions that read files, settings, the host, dictionaries (which may reach other servers) or
# another server's tables.
_REFUSED_FUNCTIONS = {
    "file",
    "getsetting",
    "getsettingordefault",
    "getserversetting",
    "getmergetreesetting",
    "getmacro",
    "hostname",
    "fqdn",
    "displayname",
    "serveruuid",
    "getclienthttpheader",
    "hascolumnintable",
    "catboostevaluate",
    "evalmlmethod",
    "joinget",
    "joingetornull",
    "showcertificate",
    "generateserialid",
    "filesystemavailable",
    "filesystemcapacity",
    "filesystemunreserved",
    "getoskernelversion",
    "addresstoline",
    "addresstolinewithinlines",
    "addresstosymbol",
    "demangle",
    "currentprofiles",
    "enabledprofiles",
    "defaultprofiles",
    "currentroles",
    "enabledroles",
    "defaultroles",
    "getserverport",
    "tcpport",
    "buildid",
    "uptime",
    "sleep",
    "sleepeachrow",
    "getscalar",
}
_REFUSED_PREFIXES = ("dict", "__")
# system.* tables that hold nothing but names, columns and numbers. The others (users, settings,
# server_settings, processes, query_log, grants, ...) are refused.
_ALLOWED_SYSTEM_TABLES = {
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "one",
    "tables",
    "columns",
    "databases",
}
_SCHEMA_DATABASES = {"information_schema"}
# Output clauses, which every kind of statement takes (SHOW TABLES INTO OUTFILE writes a file too). In the
# canonical text keywords are upper case and literals single-quoted with escapes, so with the literals
# taken out these words can only be the clauses (or an upper-case identifier: refused too, harmlessly).
_OUTPUT_CLAUSE = re.compile(r"\b(INTO OUTFILE|FORMAT|SETTINGS)\b")
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
_LINE = re.compile(r"^( *)(\S+)(?: (.*?))?(?: \(children \d+\))?$")


@dataclass(frozen=True)
class _Node:
    depth: int
    kind: str
    name: str
    children: int


def _nodes(ast: list[str]) -> list[_Node]:
    out = []
    for line in ast:
        match = _LINE.match(line.rstrip())
        if not match:
            raise ReadOnlySqlError("the query could not be analysed")
        children = re.search(r"\(children (\d+)\)$", line)
        out.append(
            _Node(len(match[1]), match[2], (match[3] or "").strip(), int(children[1]) if children else 0)
        )
    return out


def _check_kind(parsed: ParsedQuery, nodes: list[_Node]) -> None:
    root = nodes[0]
    allowed = "only read-only queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)"
    if root.kind not in _KINDS:
        raise ReadOnlySqlError(allowed)
    if root.kind == "ShowTables" and not _SHOW_TABLES.match(parsed.formatted):
        raise ReadOnlySqlError(
            "of the SHOW statements only SHOW TABLES, DATABASES, COLUMNS and CREATE TABLE are allowed"
        )
    if root.kind == "Explain" and (
        root.children != 1 or len(nodes) < 2 or nodes[1].kind != "SelectWithUnionQuery"
    ):
        raise ReadOnlySqlError("EXPLAIN is allowed for SELECT queries only")
    for node in nodes:
        # A SELECT's own children are its union list, then INTO OUTFILE, FORMAT or SETTINGS if given.
        if node.kind == "SelectWithUnionQuery" and node.children != 1:
            raise ReadOnlySqlError("INTO OUTFILE, FORMAT and SETTINGS are not allowed in ad-hoc queries")
        if node.kind == "Set":
            raise ReadOnlySqlError("SETTINGS is not allowed in ad-hoc queries")


def _check_table(name: str, database: str, is_table: bool) -> None:
    """``is_table``: a table name for sure; else an identifier (``IN system.users``, or ``t.column``)."""
    parts = name.replace("`", "").split(".")
    if len(parts) < 2:
        return
    db, table = parts[0].lower(), parts[1].lower()
    if db == "system":
        if table not in _ALLOWED_SYSTEM_TABLES:
            raise ReadOnlySqlError(f"system.{table} is not open to ad-hoc queries")
    elif is_table and db not in _SCHEMA_DATABASES and db != database.lower():
        raise ReadOnlySqlError(f"only the tables of the {database} database can be queried")


def check_read_only(
    parsed: ParsedQuery, table_functions: frozenset[str] = KNOWN_TABLE_FUNCTIONS, database: str = "default"
) -> str:
    """The statement to run (the engine's canonical text of the query), or ``ReadOnlySqlError``.

    ``table_functions``: the engine's table function names, lower case.
    """
    if not parsed.formatted.strip() or not parsed.ast:
        raise ReadOnlySqlError("empty query")
    # The kind first: the engine writes an INSERT ... VALUES back as "INSERT ... FORMAT Values".
    nodes = _nodes(parsed.ast)
    _check_kind(parsed, nodes)
    if clause := _OUTPUT_CLAUSE.search(_LITERAL.sub("''", parsed.formatted)):
        raise ReadOnlySqlError(f"{clause[1]} is not allowed in ad-hoc queries")
    reaching_out = (table_functions | KNOWN_TABLE_FUNCTIONS) - _ALLOWED_TABLE_FUNCTIONS
    for index, node in enumerate(nodes):
        name = node.name.lower()
        if node.kind == "Function":
            under_table = (
                index > 0
                and nodes[index - 1].kind == "TableExpression"
                and nodes[index - 1].depth < node.depth
            )
            if under_table and name not in _ALLOWED_TABLE_FUNCTIONS:
                raise ReadOnlySqlError(f"the table function {node.name} is not allowed in ad-hoc queries")
            if name in reaching_out or name in _REFUSED_FUNCTIONS or name.startswith(_REFUSED_PREFIXES):
                raise ReadOnlySqlError(f"the function {node.name} is not allowed in ad-hoc queries")
        elif node.kind in ("TableIdentifier", "Identifier"):
            _check_table(node.name, database, is_table=node.kind == "TableIdentifier")
    return parsed.formatted
