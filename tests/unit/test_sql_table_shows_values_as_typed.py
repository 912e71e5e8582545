"""`rsr sql`'s table shows each value as stored: a student label's "[template.jinja]" is text, not Rich markup
(Rich would take it for a style tag and drop it)."""

from __future__ import annotations

from rsr.cli.read import _print_table
from rsr.store.sql import QueryResult


def test_brackets_in_values_and_names_are_printed(capsys):
    label = 'smollm2-135m [shout.jinja] {"shout": true}'
    result = QueryResult(["student_label", "[b]n"], [(label, 1), ("[bold]x[/bold]", None)], False, None, False,
                         ["VARCHAR", "INTEGER"])  # fmt: skip
    _print_table(result)
    out = capsys.readouterr().out
    assert label in out and "[bold]x[/bold]" in out and "[b]n" in out and "NULL" in out
