"""Curate: read teachers' outputs (ingest/), drop near-duplicates (dedup), check answers (verify)."""
