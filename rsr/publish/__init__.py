"""Publish: a selection as an SFT dataset. manifest (what is published, pure data), files + card, lineage (MLflow),
hub."""
