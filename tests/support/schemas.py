"""Small files in published reasoning / tool-calling dataset schemas (as their dataset cards describe them),
authored here for the ingest tests: each one has the gold (where the dataset holds one), reasoning and tools
that the ingest must keep.

    case = SCHEMAS["tau-bench"]; path = case.write(tmp_path); ingest_file(path, mapping=case.mapping)
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

THINK = "Let me think. 2 + 3 is 5, and I check it twice."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


@dataclass(frozen=True)
class Schema:
    name: str
    filename: str
    rows: Callable[[], list[dict]]
    mapping: dict[str, str] = field(default_factory=dict)
    golds: tuple[str | None, ...] = ()  # the gold of each stored trajectory, in order
    tools: bool = False  # the trajectories carry function schemas
    reasoning: bool = True  # the response holds a <think> block (the reasoning kept)
    quarantined: int = 0  # records the file holds that must be quarantined (placeholders)

    def write(self, folder: Path, suffix: str = "") -> Path:
        """The file (suffix: "", ".gz", ".bz2" or ".zst" for a compressed copy)."""
        path = folder / (self.filename + suffix)
        rows = self.rows()
        if self.filename.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), path)
            return path
        if self.filename.endswith(".csv"):
            import csv
            import io

            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            data = out.getvalue().encode()
        elif self.filename.endswith(".json"):
            data = json.dumps(rows).encode()
        else:
            data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(compress(data, suffix))
        return path

    @property
    def map_args(self) -> list[str]:
        """The CLI's form: --map a=b c=d (several pairs after one flag)."""
        pairs = [f"{k}={v}" for k, v in self.mapping.items()]
        return ["--map", *pairs] if pairs else []


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data)
    if suffix == ".bz2":
        return bz2.compress(data)
    if suffix == ".zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def _tau_bench() -> list[dict]:
    traj = [
        {"role": "system", "content": "You are a travel agent. Use the tools."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL | {"id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny in Paris."},
    ]
    other = [*traj[:1], {"role": "user", "content": "And in Rome?"}, {"role": "assistant", "content": "Rainy."}]
    info = {"task": {"user_id": "u1", "instruction": "ask"}, "reward_info": {"reward": 1.0}}
    return [{"task_id": 0, "reward": 1.0, "info": info, "traj": traj}, {"task_id": 1, "reward": 0.0, "traj": other}]


def _am_distilled() -> list[dict]:
    def row(q: str, gold: str, a: str) -> dict:
        user = {"role": "user", "content": q, "info": {"source": "math", "reference_answer": gold, "test_case": None}}
        answer = f"<think>\n{THINK}\n</think>\n<answer>The answer is {a}.</answer>"
        return {"messages": [user, {"role": "assistant", "content": answer, "info": {"source": "am-0309"}}]}

    return [row("What is 2 + 3?", "5", "5"), row("What is 7 - 4?", "3", "3")]


def _dolphin() -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": "What is 2 + 3?"}],
            "model": "deepseek-r1",
            "reasoning": THINK,
            "answer": "The answer is 5.",
        }
    ]


def _nemotron(v11: bool) -> list[dict]:
    def prompt(q: str) -> object:
        return [{"role": "user", "content": q}] if v11 else q

    version = "v1.1" if v11 else "v1"
    common = {"category": "math", "license": "cc-by-4.0", "generator": "DeepSeek-R1", "version": version}
    return [
        {"input": prompt("What is 2 + 3?"), "output": f"<think>\n{THINK}\n</think>\n\n5", "reasoning": "on",
         "system_prompt": "detailed thinking on", **common},
        {"input": prompt("What is 4 + 4?"), "output": "8", "reasoning": "off", "system_prompt": "detailed thinking off",
         **common},
    ]  # fmt: skip


def _open_code_reasoning() -> list[dict]:
    code = "<think>\nRead n, print n * 2.\n</think>\n```python\nprint(int(input()) * 2)\n```"
    base = {"source": "codeforces", "license": "cc-by-4.0", "dataset": "code_contests", "split": "train"}
    return [
        {"id": "a1", "input": "Read n and print 2n.", "output": code, "difficulty": "1", "solution": "", **base},
        {"id": "a2", "input": "-", "output": code, "difficulty": "1", "solution": "", **base},  # split_1's placeholder
    ]


def _xlam() -> list[dict]:
    tools = [{"name": "get_weather", "description": "The weather", "parameters": {"city": {"type": "str"}}}]
    answers = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    return [{"id": 1, "query": "Weather in Paris?", "answers": json.dumps(answers), "tools": json.dumps(tools)}]


def _hermes() -> list[dict]:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    convo = [
        {"from": "system", "value": "You are a function calling AI model."},
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "gpt", "value": call},
    ]
    return [{"id": "h1", "conversations": convo, "tools": json.dumps(TOOLS), "category": "weather", "task": "t"}]


def _llama_factory() -> list[dict]:
    parts = [{"type": "text", "value": "What is 2 + 3?"}]
    return [
        {"messages": [{"role": "user", "content": parts},
                      {"role": "assistant", "content": [{"type": "text", "value": f"<think>{THINK}</think>5"}]}],
         "tools": json.dumps(TOOLS)},
    ]  # fmt: skip


SCHEMAS = {
    s.name: s
    for s in (
        Schema("tau-bench", "tau.jsonl", _tau_bench, {"messages": "traj"}, (None, None), tools=False, reasoning=False),
        Schema("am-deepseek-r1-distilled", "am.jsonl", _am_distilled,
               {"answer": "messages.0.info.reference_answer"}, ("5", "3")),
        Schema("dolphin-r1", "dolphin.jsonl", _dolphin,
               {"prompt": "messages", "reasoning": "reasoning", "response": "answer"}, (None,)),
        Schema("nemotron-v1", "nemotron.jsonl", lambda: _nemotron(False),
               {"problem": "input", "response": "output", "system": "system_prompt"}, (None, None)),
        Schema("nemotron-v1.1", "nemotron11.jsonl", lambda: _nemotron(True),
               {"prompt": "input", "response": "output", "system": "system_prompt"}, (None, None)),
        Schema("open-code-reasoning", "ocr.jsonl", _open_code_reasoning,
               {"problem": "input", "response": "output", "id": "id"}, (None,), quarantined=1),
        Schema("xlam", "xlam.jsonl", _xlam, {"problem": "query", "response": "answers", "tools": "tools"}, (None,),
               tools=True, reasoning=False),
        Schema("hermes-fc", "hermes.jsonl", _hermes, {}, (None,), tools=True, reasoning=False),
        Schema("llama-factory", "lf.jsonl", _llama_factory, {}, (None,), tools=True),
    )
}  # fmt: skip


def _stratos() -> list[dict]:
    convo = [
        {"from": "user", "value": "What is 2 + 3?"},
        {"from": "assistant", "value": f"<|begin_of_thought|>{THINK}<|end_of_thought|>\n\nThe answer is 5."},
    ]
    return [{"system": "Think step by step.", "conversations": convo}]  # fmt: skip


def _openr1() -> list[dict]:
    gens = [f"<think>\n{THINK}\n</think>\n\n\\boxed{{5}}", "<think>\nguess\n</think>\n\n\\boxed{6}"]
    return [{"problem": "What is 2 + 3?", "solution": "5", "answer": "5", "uuid": "u1", "generations": gens,
             "correctness_math_verify": [True, False], "messages": [{"role": "user", "content": "x"}]}]  # fmt: skip


def _deepseek_chats() -> list[dict]:
    turns = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "5", "reasoning_content": THINK},
    ]
    return [{"messages": turns, "answer": "5"}]  # fmt: skip


def _s1k() -> list[dict]:
    return [{"question": "What is 2 + 3?", "solution": "5", "cot_type": "math", "thinking_trajectories": [THINK],
             "attempt": "The answer is $\\boxed{5}$."}]  # fmt: skip


def _openthoughts_meta() -> list[dict]:
    return [{"problem": "What is 2 + 3?", "deepseek_reasoning": THINK, "deepseek_solution": "\\boxed{5}",
             "ground_truth_solution": "5", "domain": "math"}]  # fmt: skip


def _agent_traces() -> list[dict]:
    return [{"messages": [{"role": "user", "content": "Weather in Paris?"},
                          {"role": "assistant", "content": None, "tool_calls": [CALL]},
                          {"role": "tool", "content": "sunny"},
                          {"role": "assistant", "content": "Sunny."}]}]  # fmt: skip


def _api_export() -> list[dict]:
    return [{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]},
                          {"role": "assistant", "content": [{"type": "output_text", "text": "5"}]}]}]  # fmt: skip


def _zeroeval() -> list[dict]:
    out = '```json\n{"reasoning": "2 + 3 = 5", "answer": "5"}\n```'
    return [{"id": 0, "problem": "What is 2 + 3?", "answer": "5", "output": [out], "generator": "gpt-4o"}]


def _table() -> list[dict]:
    return [{"question": "What is 2 + 3?", "output": "5"}, {"question": "What is 2 + 3?", "output": "5"}]


# The files the README's "Bring your data" commands name, by file name (a compression suffix is applied on write).
README_FILES: dict[str, Callable[[], list[dict]]] = {
    "stratos.jsonl": _stratos, "openr1.parquet": _openr1, "chats.jsonl": _deepseek_chats, "s1k.parquet": _s1k,
    "meta.parquet": _openthoughts_meta, "traces.jsonl": _agent_traces, "export.jsonl": _api_export,
    "gpt-4o.json": _zeroeval, "out.csv": _table, "tau.jsonl": _tau_bench, "am.jsonl": _am_distilled,
    "dolphin.jsonl": _dolphin, "v1.jsonl": lambda: _nemotron(False), "v11.jsonl": lambda: _nemotron(True),
    "ocr.jsonl": _open_code_reasoning, "xlam.jsonl": _xlam, "hermes.jsonl": _hermes,
}  # fmt: skip


def write_readme_file(folder: Path, name: str) -> Path:
    """The README's file `name` (e.g. am.jsonl.zst), authored in its schema."""
    suffix = next((s for s in (".gz", ".bz2", ".zst") if name.endswith(s)), "")
    plain = name.removesuffix(suffix)
    return Schema(plain, plain, README_FILES[plain]).write(folder, suffix)
