"""Test hooks in every Python process started with this folder on PYTHONPATH and RSR_TEST_HOOKS set: what
rsr_with_hooks.py installs in one `rsr` process, for the processes that `rsr serve` starts itself (one per flow run).

    RSR_TEST_HOOKS='{"marker": "/tmp/x/marker.jsonl", "min_shard_s": 8}'
"""

import json
import os

if os.environ.get("RSR_TEST_HOOKS"):
    from tests.support.rsr_with_hooks import install_marker

    hooks = json.loads(os.environ["RSR_TEST_HOOKS"])
    install_marker(hooks["marker"], float(hooks.get("min_shard_s", 0)))
