"""The DAG's stages as plain functions over the state folder: each reads what the previous stage stored (by id),
does its one job with the library below it, and stores what it found. No Prefect here: tasks/ wraps each one as a
Prefect task, one line a task, and flows/ wires them.

curate.py         ingest (accounting per source), dedup (pages of problems), verify (pages of rows)
decontaminate.py  register a benchmark; check trajectories against every registered benchmark
score.py          load, register and find a student; score one shard (pure compute, any worker)
publish.py        select by policy (and a random baseline), publish with lineage, push to the Hub
"""
