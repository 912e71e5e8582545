"""Which real chat templates does rsr score in the student's own format? (docs/formats.md, the conformance table)

For every template file in the folders given (the 13 in ../shared/data/chat-templates, and any folder of real
templates, e.g. llama.cpp's models/templates), four records go through the renderer the scorer uses (SmolLM2's
tokenizer with the template swapped in; text only, no weights): single-turn reasoning, multi-turn reasoning, a tool
call with its schemas (`tools`) and a result, and an agent trajectory read as ingest reads it (tau-bench's shape: a
system prompt, two tool calls, an answer, then the simulated user's closing turn, dropped and counted). Each cell is
what rsr does: "own" (scored; the final turn's scored text is shown for single-turn reasoning, R and A standing for
the reasoning and the answer) or "refused: <the record's one-line reason>".

    .venv/bin/python -m benchmarks.format_conformance ../shared/data/chat-templates [FOLDER ...] [--options JSON]
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path

from rsr.curate.ingest._common import drop_trailing_turns, parse_messages
from rsr.records import RecordError, join_reasoning
from rsr.score.render import Renderer

# Templates whose reasoning is off by default (their generation prompt closes the block): a second row with it on.
THINKING_ON = {
    "deepseek-ai-DeepSeek-V3.1": {"thinking": True}, "deepseek-ai-DeepSeek-V3.2": {"thinking": True},
    "deepseek-ai-DeepSeek-V4": {"thinking": True}, "deepseek-ai-DeepSeek-V4-Flash-0731": {"thinking": True},
    "Qwen-QwQ-32B": {"enable_thinking": True}, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": {"enable_thinking": True},
    "google-gemma-4-31B-it": {"enable_thinking": True}, "google-gemma-4-31B-it-interleaved": {"enable_thinking": True},
    "tencent-Hy3": {"reasoning_effort": "high"},
}  # fmt: skip
R, A = "RSR-R", "RSR-A"  # placeholders a cell shows as R and A
Q = {"role": "user", "content": "What is 12 times 13?"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 12, "b": 13}'}}
RESULT = {"role": "tool", "tool_call_id": "call_1", "name": "multiply", "content": "156"}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
TOOLS = [{"type": "function", "function": {"name": "multiply", "description": "Multiply.", "parameters": SCHEMA}}]
CASES = {
    "single-turn reasoning": ([Q, {"role": "assistant", "content": join_reasoning(R, A)}], None),
    "multi-turn reasoning": (
        [Q, {"role": "assistant", "content": join_reasoning("r1", "a1")}, {"role": "user", "content": "And 14?"},
         {"role": "assistant", "content": join_reasoning(R, A)}], None),
    "tool call + schemas": (
        [Q, {"role": "assistant", "content": join_reasoning("I call it.", ""), "tool_calls": [CALL]}, RESULT,
         {"role": "assistant", "content": join_reasoning(R, A)}], TOOLS),
    "agent trajectory": (
        [{"role": "system", "content": "You are an airline agent."}, Q,
         {"role": "assistant", "content": None, "tool_calls": [CALL]}, RESULT,
         {"role": "assistant", "content": None, "tool_calls": [CALL | {"id": "call_2"}]},
         RESULT | {"tool_call_id": "call_2"},
         {"role": "assistant", "content": A}, {"role": "user", "content": "Thanks! ###STOP###"}], TOOLS),
}  # fmt: skip


def cell(renderer: Renderer, case: str) -> str:
    chat, tools = CASES[case]
    messages, _ = drop_trailing_turns(parse_messages(chat))  # as ingest reads it
    try:
        r = renderer.layout(messages, tools)
    except RecordError as err:
        return "refused: " + _short(str(err)).replace("|", "\\|")
    if case != "single-turn reasoning":
        return f"own ({len(r.spans)} turn{'s' * (len(r.spans) > 1)} scored)"
    a, b = r.spans[-1]
    shown = json.dumps(r.text[a:b].replace(R, "R").replace(A, "A"), ensure_ascii=False)[1:-1]
    return f"own: `{shown.replace('|', chr(92) + '|')}`"


def _short(reason: str) -> str:
    """A record's reason, without the words every such reason shares."""
    reason = re.sub(r"^student '[^']*' cannot be given reasoning in its own format: ", "not its own format: ", reason)
    reason = re.sub(r"^the chat template refused this conversation \(roles: [^)]*\)", "the template refuses it", reason)
    off = r"^assistant message \d+ has reasoning, but this student's chat template closes the reasoning block.*"
    reason = re.sub(off, "thinking off (its generation prompt closes the reasoning block)", reason, flags=re.S)
    reason = " ".join(reason.split())
    return reason if len(reason) <= 110 else reason[:109] + "…"


def row(path: Path, tokenizer, options: dict) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = Renderer(tokenizer, path.read_text(), path.stem, options)
    given = (
        f"`{r.reasoning_field}`" if r.reasoning_field else f"inline `{r.markup.open.strip() or r.markup.close.strip()}`"
    )
    name = path.stem + (f" `{json.dumps(options)}`" if options else "")
    cells = [name, r.mode, given.replace("|", "\\|"), *(cell(r, c) for c in CASES)]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    from transformers import AutoTokenizer

    from rsr.score.load import model_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders of real chat templates (*.jinja)")
    more = "JSON: template name -> chat_template_kwargs of a second row (its reasoning switched on)"
    ap.add_argument("--options", default=json.dumps(THINKING_ON), help=more)
    args = ap.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder("smollm2-135m")))
    options = json.loads(args.options)
    print("| template | render | reasoning given as | " + " | ".join(CASES) + " |")
    print("|---" * (3 + len(CASES)) + "|")
    for folder in args.folders:
        for path in sorted(folder.glob("*.jinja")):
            print(row(path, tokenizer, {}))
            if path.stem in options:
                print(row(path, tokenizer, options[path.stem]))


if __name__ == "__main__":
    main()
