"""The DAG as Prefect flows: curate_teacher, rescore_students, publish_dataset, pipeline."""
