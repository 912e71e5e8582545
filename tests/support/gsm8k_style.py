"""Grade-school math records in GSM8K's schema (github.com/openai/grade-school-math, data/train.jsonl): `question`,
and `answer` = the worked solution with calculator annotations `<<expr=value>>` and the final line `#### N`.
Written for these tests in that data's style (none is copied from it): the teacher trajectories of
tests/integration/test_companion_metrics.py, read through `rsr score`'s own reader."""

from __future__ import annotations

import json
from pathlib import Path

RECORDS = [
    {
        "question": "Mira bakes 36 cookies. She gives a third of them to her neighbours and eats 4. How many cookies "
        "does she have left?",
        "answer": "Mira gives away 36 / 3 = <<36/3=12>>12 cookies.\nAfter eating 4 she has 36 - 12 - 4 = "
        "<<36-12-4=20>>20 cookies left.\n#### 20",
    },
    {
        "question": "A bus ticket costs $3 and a train ticket costs twice as much. Omar buys 2 bus tickets and 3 train "
        "tickets. How much does he spend?",
        "answer": "A train ticket costs 3 * 2 = $<<3*2=6>>6.\nThe bus tickets cost 2 * 3 = $<<2*3=6>>6.\nThe train "
        "tickets cost 3 * 6 = $<<3*6=18>>18.\nOmar spends 6 + 18 = $<<6+18=24>>24.\n#### 24",
    },
    {
        "question": "A garden has 5 rows of tulips with 14 tulips in each row. A rabbit eats 9 tulips. How many tulips "
        "are left?",
        "answer": "There are 5 * 14 = <<5*14=70>>70 tulips.\nAfter the rabbit, 70 - 9 = <<70-9=61>>61 tulips are "
        "left.\n#### 61",
    },
    {
        "question": "Lena reads 25 pages on Monday and 10 more pages than that on Tuesday. Her book has 120 pages. How "
        "many pages does she still have to read?",
        "answer": "On Tuesday she reads 25 + 10 = <<25+10=35>>35 pages.\nSo far she has read 25 + 35 = "
        "<<25+35=60>>60 pages.\nShe still has 120 - 60 = <<120-60=60>>60 pages to read.\n#### 60",
    },
]


def write_gsm8k_style(path: Path) -> Path:
    """RECORDS as a JSONL file in GSM8K's schema."""
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path
