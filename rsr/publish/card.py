"""The dataset card of a publication, built with huggingface_hub's card tools from ``dataset_card.md``.

The YAML metadata is a ``DatasetCardData``; the text is the Jinja template beside this file. The card is checked
before it is written: its YAML parses back to the same metadata, and its ``configs`` are the ones ``datasets``
reads (``load_dataset(folder)`` finds ``data.parquet``). The Hub checks it again when the card is pushed.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from rsr.publish.lineage import EXPERIMENT, redact
from rsr.publish.manifest import Manifest
from rsr.score import markup
from rsr.score.render import REASONING_FIELDS
from rsr.select import TOKEN_TOLERANCE

TEMPLATE = Path(__file__).with_name("dataset_card.md")
# The Hub's size_categories: the first label whose bound the row count is under.
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M")]  # fmt: skip


def text(value: object) -> str:
    """Any name as literal Markdown text, safe in a table cell and in the HTML the Hub renders: `<`, `>` and `&`
    as entities, Markdown's inline punctuation (and `$`, math on the Hub) backslash-escaped, one line."""
    escaped = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_\[\]{}|~$#!])", r"\\\1", escaped)


def code(value: object, in_table: bool = True) -> str:
    """Any text as one Markdown code span (shown verbatim, never HTML); `|` escaped for a table cell (in_table), kept
    as is in running text, where a code span shows a backslash verbatim."""
    inner = " ".join(str(value).split())
    inner = inner.replace("|", "\\|") if in_table else inner
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", inner)), default=0))
    pad = " " if inner.startswith("`") or inner.endswith("`") else ""
    return f"{fence}{pad}{inner}{pad}{fence}"


def build(m: Manifest, mlflow_run_id: str, mlflow_uri: str) -> DatasetCard:
    """The card for one publication, validated (see ``validate``)."""
    data = DatasetCardData(
        pretty_name=m.name,
        task_categories=["text-generation"],
        size_categories=[next((label for bound, label in SIZES if len(m.rows) < bound), "10M<n<100M")],
        tags=["sft", "reasoning", "distillation", "rsr-curate"],
        configs=[{"config_name": "default", "data_files": "data.parquet"}],
    )
    expected = data.to_dict()  # taken before rendering: the card must round-trip to exactly this
    card = DatasetCard.from_template(
        data,
        template_path=str(TEMPLATE),
        **vars(m),
        mlflow_run_id=mlflow_run_id,
        mlflow_uri=redact(mlflow_uri),
        form=row_form(m.rows),
        experiment=EXPERIMENT,
        tolerance=TOKEN_TOLERANCE,
        text=text,  # names reach the Markdown only through these two (a name is only a name)
        code=code,
    )
    validate(card, expected)
    return card


def validate(card: DatasetCard, expected: dict) -> None:
    """The card's YAML parses back to ``expected`` and its configs are valid for ``datasets``; else ValueError."""
    parsed = DatasetCard(str(card))  # raises ValueError on YAML that does not parse or is not a mapping
    if parsed.data.to_dict() != expected:
        raise ValueError(f"dataset card metadata did not survive a YAML round trip: {parsed.data.to_dict()}")
    configs = MetadataConfigs.from_dataset_card_data(parsed.data)
    if set(configs) != {"default"}:
        raise ValueError(f"dataset card configs {sorted(configs)}: expected one 'default' config")


def row_form(rows: list[dict]) -> dict[str, str]:
    """The form the published `messages` hold, read off the rows themselves (the card says what is there, not
    what was meant): where reasoning is (a field the student's template reads, or inline in which tags) and how
    tool-call arguments are held. Markdown, for the card."""
    assistant = [m for r in rows for m in r["messages"] if m.get("role") == "assistant"]
    field = next((k for k in REASONING_FIELDS if any(m.get(k) for m in assistant)), None)
    tags = next((found for m in assistant if (found := markup.split(m.get("content") or "")[0])), None)
    if field:
        reasoning = f"reasoning in each assistant message's `{field}` field (the field the student's template reads; "
        reasoning += "it writes the reasoning in its own markup), `content` the answer"
    elif tags:
        reasoning = f"reasoning inline at the start of `content`, in {code(tags.open + '...' + tags.close.strip())}"
        reasoning += " tags" + (" (the records' joined form)" if tags == markup.THINK else " (the student's own)")
    else:
        reasoning = "no reasoning (no row carries any)"
    calls = [c for m in assistant for c in m.get("tool_calls") or []]
    as_mapping = any(not isinstance(c["function"]["arguments"], str) for c in calls)
    arguments = "" if not calls else (
        "tool-call `arguments` as mappings (a `datasets` `Json` value: read the Arrow or Parquet files, which give "
        "back the same dict; `load_dataset(\"json\")` on data.jsonl would infer a struct and add null keys)"
        if as_mapping else "tool-call `arguments` as JSON text"
    )  # fmt: skip
    tools = "yes" if any(r.get("tools") for r in rows) else ""
    return {"reasoning": reasoning, "arguments": arguments, "field": field or "", "tools": tools}
