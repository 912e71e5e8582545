"""The SQL that docs/sql.md prints: the statements of its ```sql blocks and the queries of its `$ rsr sql "..."`
examples, as a reader would copy them."""

from __future__ import annotations

import re

from tests.support.shared_data import REPO

DOC = REPO / "docs" / "sql.md"


def cookbook_queries() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    queries = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
        queries += [q.strip() for q in body.split(";") if q.strip()]
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        if m := re.match(r'\$ rsr sql "(SELECT.*?)"\n', block, re.S):
            queries.append(m[1])
    return queries
