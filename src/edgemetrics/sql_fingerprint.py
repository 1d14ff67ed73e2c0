"""Statement fingerprints: SQL with every literal removed, so no user data is stored.

String and number literals, bound-parameter markers of every DB-API style and the
contents of ``IN (...)`` / ``VALUES (...)`` lists become ``?``; comments go; whitespace
collapses. Statements that differ only in their values share one fingerprint.

>>> fingerprint("SELECT * FROM users WHERE email = 'a@b.c' AND id IN (1, 2, 3)")
'SELECT * FROM users WHERE email = ? AND id IN (?)'
>>> fingerprint("insert into t (a, b) values (%(a)s, :b), ($1, 4.5e3) -- note")
'insert into t (a, b) values (?)'
>>> operation("  with x as (select 1) select * from x")
'SELECT'
"""

from __future__ import annotations

import re
from functools import lru_cache

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"(?:[EeNnBbXxUu]&?)?'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$", re.S)
_QUOTED_IDENT = re.compile(r'"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]')
_PARAMS = re.compile(r"%\([^)]*\)s|%s|\?|:\w+|\$\d+")
_NUMBERS = re.compile(r"(?<![\w.])-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
_LISTS = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_SPACES = re.compile(r"\s+")
_KEYWORD = re.compile(r"[A-Za-z]+")
_OPERATIONS = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP", "BEGIN",
     "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA",
     "TRUNCATE", "COPY", "CALL", "GRANT", "REVOKE", "VACUUM", "ANALYZE", "REPLACE", "UPSERT"}
)  # fmt: skip


@lru_cache(maxsize=2048)
def fingerprint(statement: str) -> str:
    """The statement with literals, parameters and comments removed (at most 1000 chars)."""
    text = _COMMENTS.sub(" ", statement)
    idents: list[str] = []

    def keep(match: re.Match[str]) -> str:
        # Quoted identifiers are names, not data: protect them from the literal rules.
        idents.append(match.group(0))
        return f"\x00{len(idents) - 1}\x00"

    text = _STRINGS.sub("?", text)
    text = _QUOTED_IDENT.sub(keep, text)
    text = _PARAMS.sub("?", text)
    text = _NUMBERS.sub("?", text)
    text = _LISTS.sub("(?)", text)
    text = _ROWS.sub("(?)", text)  # multi-row VALUES: one fingerprint whatever the row count
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\x00(\d+)\x00", lambda m: idents[int(m.group(1))], text)
    return text[:1000] or "?"


def operation(statement: str) -> str:
    """The statement's kind in upper case (``SELECT``, ``INSERT``...); ``OTHER`` if unknown."""
    text = _COMMENTS.sub(" ", statement)
    words = _KEYWORD.findall(text[:2000])
    if not words:
        return "OTHER"
    first = str(words[0]).upper()
    if first == "WITH":
        # A CTE: the statement's kind is the first main verb after it.
        for word in words[1:]:
            upper = str(word).upper()
            if upper in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"):
                return upper
    return first if first in _OPERATIONS else "OTHER"
