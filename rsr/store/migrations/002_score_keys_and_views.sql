-- v2: a score names how it was made (dtype, max_tokens); lineage digests of ingested files; the views.
-- Rows scored before v2 get what is known: the dtype their student was registered with, and as max_tokens its
-- context length where the row was not truncated (any limit that did not cut it gives the same value).
ALTER TABLE scores ADD COLUMN dtype VARCHAR;
ALTER TABLE scores ADD COLUMN max_tokens INTEGER;
UPDATE scores SET
    dtype = coalesce(st.info ->> '$.dtype', 'unknown'),
    max_tokens = CASE WHEN NOT scores.truncated THEN TRY_CAST(st.info ->> '$.context_length' AS INTEGER) END
FROM students st WHERE st.student_id = scores.student_id;
UPDATE scores SET dtype = 'unknown' WHERE dtype IS NULL;
CREATE TABLE source_files (
    path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    teacher VARCHAR,
    run_id VARCHAR,
    ingested_at TIMESTAMP NOT NULL
);
DROP VIEW IF EXISTS teacher_leaderboard;
CREATE OR REPLACE VIEW teacher_summary AS
    SELECT t.teacher,
           count(*) AS n_trajectories,
           count(*) FILTER (WHERE d.trajectory_id IS NULL) AS n_unique,
           count(*) FILTER (WHERE v.verdict = 'correct') AS n_correct,
           count(*) FILTER (WHERE v.verdict = 'incorrect') AS n_incorrect,
           count(*) FILTER (WHERE v.verdict = 'no_answer') AS n_no_answer,
           CAST(count(*) FILTER (WHERE v.verdict = 'correct') AS DOUBLE) / count(*) AS accuracy
    FROM trajectories t
    LEFT JOIN verdicts v ON v.trajectory_id = t.trajectory_id
    LEFT JOIN duplicates d ON d.trajectory_id = t.trajectory_id
    GROUP BY t.teacher;
CREATE OR REPLACE VIEW trajectory_verdicts AS
    SELECT t.trajectory_id, t.source_id, t.teacher, t.problem_id, v.extracted_answer,
           coalesce(v.gold_answer, t.gold_answer, p.gold_answer) AS gold_answer, v.verdict
    FROM trajectories t
    LEFT JOIN verdicts v ON v.trajectory_id = t.trajectory_id
    LEFT JOIN problems p ON p.problem_id = t.problem_id;
CREATE OR REPLACE VIEW score_history AS
    SELECT s.*, t.teacher, t.problem_id, st.ref AS student, r.flow_name
    FROM scores s
    LEFT JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN students st ON st.student_id = s.student_id
    LEFT JOIN runs r ON r.run_id = s.run_id;
-- One successful row per score key (add_scores keeps it so; the newest wins should two ever exist).
-- The metric version is fixed here: a new METRIC_VERSION comes with a migration redefining this view.
CREATE OR REPLACE VIEW latest_scores AS
    SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student, s.rsr,
           s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
           s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version
    FROM scores s
    JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN students st ON st.student_id = s.student_id
    WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
    QUALIFY row_number() OVER (
        PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
        ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
CREATE OR REPLACE VIEW score_settings AS
    SELECT student_id, any_value(student) AS student, dtype, max_tokens, r_max,
           count(*) AS n_scored, count(*) FILTER (WHERE truncated) AS n_truncated,
           max(scored_at) AS last_scored_at
    FROM latest_scores
    GROUP BY student_id, dtype, max_tokens, r_max;
-- The paper's rule: per student and scoring setting, teachers by dataset RSR, lowest first. Dataset RSR =
-- sum of per-trajectory mean ranks / sum of mean surprisals (rsr.metric.dataset_rsr), over the teacher's
-- scored trajectories that are not truncated, with tokens and finite means.
CREATE OR REPLACE VIEW teacher_selection AS
    WITH used AS (
        SELECT l.*, v.verdict FROM latest_scores l
        LEFT JOIN verdicts v ON v.trajectory_id = l.trajectory_id
        WHERE NOT l.truncated AND l.n_tokens > 0 AND isfinite(l.mean_rank) AND isfinite(l.mean_surprisal)),
    per_teacher AS (
        SELECT student_id, any_value(student) AS student, teacher, dtype, max_tokens, r_max,
               sum(mean_rank) / NULLIF(sum(mean_surprisal), 0) AS dataset_rsr,
               count(*) AS n,
               CAST(count(*) FILTER (WHERE verdict = 'correct') AS DOUBLE) / count(*) AS accuracy,
               avg(n_tokens) AS mean_response_tokens
        FROM used
        GROUP BY student_id, teacher, dtype, max_tokens, r_max)
    SELECT *, row_number() OVER (
               PARTITION BY student_id, dtype, max_tokens, r_max
               ORDER BY dataset_rsr ASC NULLS LAST, teacher) AS rank
    FROM per_teacher;
CREATE OR REPLACE VIEW dataset_lineage AS
    SELECT p.dataset_id, p.name AS dataset_name, i.trajectory_id, t.teacher, i.score_id, s.rsr,
           s.run_id AS score_run_id, p.run_id AS publish_run_id, p.mlflow_run_id
    FROM publication_items i
    JOIN publications p ON p.dataset_id = i.dataset_id
    LEFT JOIN trajectories t ON t.trajectory_id = i.trajectory_id
    LEFT JOIN scores s ON s.score_id = i.score_id;
