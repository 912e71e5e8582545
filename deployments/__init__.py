"""When and where the flows run: event triggers, the nightly rescore, the `gpu` work pool, `rsr serve`.

- `events.py`: the events (`rsr.teacher.added`, `rsr.student.added`) and how `--async` sends them.
- `prefect.yaml`: the deployments and their triggers, for `prefect deploy` onto the `gpu` work pool.
- `serve.py`: `rsr serve` builds the same deployments from prefect.yaml and serves them from one local process;
  `recovery.py` retries its runs whose process died, `runs.py` follows them, `logs.py` + `logging.yml` keep its
  terminal to one line a record.
See docs/deployments.md.
"""

SERVE_LOG = "RSR_SERVE_LOG"  # the environment variable naming `rsr serve`'s log file, for it and its flow runs
