"""The DAG as Prefect flows: curate_teacher, score_student, rescore_student(s), publish_dataset, pipeline."""
