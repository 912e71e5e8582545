"""End-to-end tests: whole flows and CLI runs, real servers, pipelines, triggers, Ray."""
