"""When and where the flows run: event triggers, the nightly rescore, the `gpu` work pool, `rsr serve`.

- `events.py`: the events (`rsr.teacher.added`, `rsr.student.added`), their payloads, and how `--async` sends them.
- `serve.py`: the deployments and their triggers in Python; `rsr serve` serves them from one local process.
- `prefect.yaml`: the same deployments for `prefect deploy`, targeting the `gpu` work pool.
See docs/deployments.md.
"""
