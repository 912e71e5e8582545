"""Reasoning markup: how each model family writes its thoughts, recognised in any text and written in a student's own.

Records hold reasoning joined as `<think>\n{reasoning}\n</think>\n\n{answer}` (rsr.records.join_reasoning); a
trace may also arrive already in a model's own markup. `split` takes either apart; `Markup.join` writes a trace in
one family's tags, so a student is scored on the form it generates, never on another model's tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsr.records import THINK_CLOSE, THINK_OPEN

__all__ = ["MARKUPS", "Markup", "markup_of_template", "reasoning_spans", "split"]


@dataclass(frozen=True)
class Markup:
    """A thought block: `open` + reasoning + `close` + answer. `open` may be empty (Apriel writes its reasoning
    bare, then `[BEGIN FINAL RESPONSE]`); `pad` are the newlines this family puts inside the tags."""

    name: str
    open: str
    close: str
    pad: str = ""
    gap: str = ""  # between the close tag and the answer

    def join(self, reasoning: str, answer: str) -> str:
        return f"{self.open}{self.pad}{reasoning}{self.pad}{self.close}{self.gap}{answer}"


THINK = Markup("think", THINK_OPEN, THINK_CLOSE, "\n", "\n\n")  # R1, QwQ, Qwen3, DeepSeek, GLM, MiniMax, SmolLM3
MARKUPS = (
    THINK,
    Markup("seed", "<seed:think>", "</seed:think>", "\n", "\n"),  # Seed-OSS
    Markup("mistral", "[THINK]", "[/THINK]"),  # Magistral, Ministral Reasoning
    Markup("openthoughts", "<|begin_of_thought|>", "<|end_of_thought|>", "\n\n", "\n\n"),  # OpenThoughts, Bespoke
    Markup("gpt-oss", "<|channel|>analysis<|message|>", "<|end|>"),  # gpt-oss's analysis channel
    Markup("gemma", "<|channel>thought\n", "<channel|>"),  # Gemma 4's thought channel
    Markup("apriel", "", "\n[BEGIN FINAL RESPONSE]\n"),  # Apriel: reasoning bare, then the final-response marker
)


def markup_of_template(template: str | None) -> Markup:
    """The markup a template's own text mentions (the first of MARKUPS with an open tag in it), `<think>` else."""
    text = template or ""
    found = [m for m in MARKUPS[1:] if (m.open.strip() or m.close.strip()) in text]
    return found[0] if found else THINK


def split(content: str) -> tuple[Markup | None, str | None, str]:
    """(markup, reasoning, answer) of a response whose reasoning leads in any known markup; (None, None, content)
    without one. A response that opens a block and never closes it is all reasoning (a cut trace)."""
    stripped = content.lstrip()
    for m in MARKUPS:
        if not m.open:
            if (at := content.find(m.close)) >= 0:
                return m, content[:at], content[at + len(m.close) :]
            continue
        if not stripped.startswith(m.open):
            continue
        body = stripped[len(m.open) :]
        at = body.find(m.close)
        if at < 0:
            return m, body.strip("\n"), ""
        return m, body[:at].strip("\n"), body[at + len(m.close) :].lstrip("\n")
    return None, None, content


def reasoning_spans(text: str) -> list[tuple[int, int]]:
    """Spans of reasoning in a response, tags included, in every known markup. A close tag before any open tag:
    the prompt opened the block (R1's generation prompt), reasoning from the start; an unclosed block runs to the
    end (a cut trace). Apriel's marker (no open tag): reasoning is everything before it."""
    spans = []
    for m in MARKUPS:
        if not m.open:
            if (b := text.find(m.close)) >= 0:
                spans.append((0, b + len(m.close)))
            continue
        at, first_close, first_open = 0, text.find(m.close), text.find(m.open)
        if first_close >= 0 and (first_open < 0 or first_close < first_open):
            spans.append((0, at := first_close + len(m.close)))
        while (a := text.find(m.open, at)) >= 0:
            b = text.find(m.close, a + len(m.open))
            spans.append((a, at := len(text) if b < 0 else b + len(m.close)))
    return merged(spans)


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans as one, sorted."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out
