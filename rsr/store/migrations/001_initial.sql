-- v1: the tables: runs, problems, trajectories, quarantine, duplicates, verdicts, students, scores, publications.
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    flow_name VARCHAR NOT NULL,
    prefect_flow_run_id VARCHAR,
    mlflow_run_id VARCHAR,
    status VARCHAR NOT NULL,
    params JSON,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE TABLE problems (
    problem_id VARCHAR PRIMARY KEY,
    text VARCHAR NOT NULL,
    gold_answer VARCHAR,
    source VARCHAR
);
CREATE TABLE trajectories (
    trajectory_id VARCHAR PRIMARY KEY,
    source_id VARCHAR,
    teacher VARCHAR NOT NULL,
    problem_id VARCHAR NOT NULL,
    problem VARCHAR NOT NULL,
    messages JSON NOT NULL,
    response VARCHAR NOT NULL,
    declared_answer VARCHAR,
    gold_answer VARCHAR,
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL,
    run_id VARCHAR,
    ingested_at TIMESTAMP NOT NULL
);
CREATE TABLE quarantine (
    quarantine_id VARCHAR PRIMARY KEY,
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR,
    run_id VARCHAR,
    "at" TIMESTAMP NOT NULL
);
CREATE TABLE duplicates (
    trajectory_id VARCHAR PRIMARY KEY,
    dup_of VARCHAR NOT NULL,
    similarity DOUBLE,
    kind VARCHAR NOT NULL,
    run_id VARCHAR
);
CREATE TABLE verdicts (
    trajectory_id VARCHAR PRIMARY KEY,
    verdict VARCHAR NOT NULL,
    extracted_answer VARCHAR,
    gold_answer VARCHAR,
    detail VARCHAR,
    run_id VARCHAR,
    "at" TIMESTAMP NOT NULL
);
CREATE TABLE students (
    student_id VARCHAR PRIMARY KEY,
    ref VARCHAR NOT NULL,
    digest VARCHAR,
    info JSON,
    registered_at TIMESTAMP NOT NULL
);
CREATE TABLE scores (
    score_id VARCHAR PRIMARY KEY,
    trajectory_id VARCHAR NOT NULL,
    student_id VARCHAR NOT NULL,
    metric_version VARCHAR NOT NULL,
    r_max INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    sum_rank DOUBLE,
    sum_surprisal DOUBLE,
    sum_rank_unclipped DOUBLE,
    rsr DOUBLE,
    mean_rank DOUBLE,
    mean_surprisal DOUBLE,
    mean_rank_unclipped DOUBLE,
    truncated BOOLEAN NOT NULL,
    error VARCHAR,
    run_id VARCHAR,
    scored_at TIMESTAMP NOT NULL
);
CREATE TABLE publications (
    dataset_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    student_id VARCHAR NOT NULL,
    policy VARCHAR NOT NULL,
    params JSON,
    n_rows BIGINT NOT NULL,
    content_digest VARCHAR NOT NULL,
    mlflow_run_id VARCHAR,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE publication_items (
    dataset_id VARCHAR NOT NULL,
    trajectory_id VARCHAR NOT NULL,
    score_id VARCHAR,
    PRIMARY KEY (dataset_id, trajectory_id)
);
