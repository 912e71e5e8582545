-- v7: one student, one identity. A registration names its template by content (chat_templates holds each text
-- once, by digest) and its options as canonical JSON, so it is loaded the same from any folder; the view
-- `registrations` gives each one a readable label (ref, revision, template name, options: the one formula), and
-- every view with scores carries student_id, student_ref (the model) and student_label instead of `student`
-- (the model alone, which mixed the registrations of one model). No column is named with a reserved word.
CREATE TABLE chat_templates (
    template_digest VARCHAR PRIMARY KEY,
    text VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL
);
ALTER TABLE students ADD COLUMN revision VARCHAR;
ALTER TABLE students ADD COLUMN dtype VARCHAR;
ALTER TABLE students ADD COLUMN template_name VARCHAR;      -- chatml, a file's name; NULL: the model's own
ALTER TABLE students ADD COLUMN template_digest VARCHAR;    -- chat_templates.template_digest (the effective one)
ALTER TABLE students ADD COLUMN chat_template_kwargs VARCHAR; -- canonical JSON text; NULL: no options
-- Rows registered before v7 get what their info knew (the template as it was typed; its content was not kept).
UPDATE students SET
    dtype = info ->> '$.dtype',
    template_name = regexp_extract(info ->> '$.chat_template', '[^/\\]+$'),
    chat_template_kwargs = CASE WHEN json_type(info -> '$.chat_template_kwargs') = 'OBJECT'
                                 AND (info -> '$.chat_template_kwargs')::VARCHAR <> '{}'
                                THEN (info -> '$.chat_template_kwargs')::VARCHAR END;
UPDATE students SET template_name = NULL WHERE template_name = '';
CREATE OR REPLACE VIEW registrations AS
    SELECT s.student_id, s.ref, s.digest,
           s.ref || coalesce(' @' || s.revision, '') || coalesce(' [' || s.template_name || ']', '')
               || coalesce(' ' || s.chat_template_kwargs, '') AS label,
           s.revision, s.dtype, s.template_name, s.template_digest, s.chat_template_kwargs, s.registered_at
    FROM students s;
ALTER TABLE verdicts RENAME COLUMN "at" TO verified_at;
ALTER TABLE quarantine RENAME COLUMN "at" TO quarantined_at;
ALTER TABLE ingest_counts RENAME COLUMN "at" TO logged_at;
CREATE OR REPLACE VIEW ingest_log AS
    SELECT c.teacher, c.source, c.records, c.stored, c.repeats,
           (SELECT count(*) FROM duplicates d JOIN trajectories t USING (trajectory_id)
            WHERE t.source_file = c.source AND t.teacher = c.teacher AND d.kind = 'near') AS near_duplicates,
           c.quarantined, c.run_id, c.format, c.fields, c.logged_at
    FROM ingest_counts c;
CREATE OR REPLACE VIEW score_history AS
    SELECT s.*, t.teacher, t.problem_id, st.ref AS student_ref, st.label AS student_label, r.flow_name
    FROM scores s
    LEFT JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN registrations st ON st.student_id = s.student_id
    LEFT JOIN runs r ON r.run_id = s.run_id;
CREATE OR REPLACE VIEW latest_scores AS
    SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student_ref,
           st.label AS student_label, s.rsr,
           s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
           s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version,
           s.n_reasoning_tokens, s.n_answer_tokens, s.n_tool_tokens, s.render, s.dropped_tool_calls
    FROM scores s
    JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN registrations st ON st.student_id = s.student_id
    WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
    QUALIFY row_number() OVER (
        PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
        ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
CREATE OR REPLACE VIEW score_settings AS
    SELECT student_id, any_value(student_ref) AS student_ref, any_value(student_label) AS student_label,
           dtype, max_tokens, r_max,
           count(*) AS n_scored, count(*) FILTER (WHERE truncated) AS n_truncated,
           max(scored_at) AS last_scored_at
    FROM latest_scores
    GROUP BY student_id, dtype, max_tokens, r_max;
CREATE OR REPLACE VIEW teacher_coverage AS
    WITH settings AS (
        SELECT DISTINCT student_id, dtype, max_tokens, r_max FROM scores WHERE metric_version = 'rsr-v1'),
    attempts AS (
        SELECT trajectory_id, student_id, dtype, max_tokens, r_max,
               bool_or(error IS NULL) AS ok, bool_or(error IS NULL AND truncated) AS truncated
        FROM scores WHERE metric_version = 'rsr-v1'
        GROUP BY ALL)
    SELECT st.student_id, g.label AS student_label, st.dtype, st.max_tokens, st.r_max, t.teacher,
           count(*) AS n_ingested,
           count(*) FILTER (WHERE a.ok) AS n_scored,
           count(*) FILTER (WHERE NOT a.ok) AS n_failed,
           count(*) FILTER (WHERE a.truncated) AS n_truncated,
           count(*) FILTER (WHERE a.trajectory_id IS NULL) AS n_unscored
    FROM settings st
    LEFT JOIN registrations g ON g.student_id = st.student_id
    CROSS JOIN trajectories t
    LEFT JOIN attempts a ON a.trajectory_id = t.trajectory_id AND a.student_id = st.student_id
         AND a.dtype = st.dtype AND a.max_tokens IS NOT DISTINCT FROM st.max_tokens AND a.r_max = st.r_max
    GROUP BY ALL;
CREATE OR REPLACE VIEW teacher_selection AS
    WITH used AS (
        SELECT l.*, v.verdict FROM latest_scores l
        LEFT JOIN verdicts v ON v.trajectory_id = l.trajectory_id
        WHERE NOT l.truncated AND l.n_tokens > 0 AND isfinite(l.mean_rank) AND isfinite(l.mean_surprisal)),
    per_teacher AS (
        SELECT student_id, any_value(student_ref) AS student_ref, any_value(student_label) AS student_label,
               teacher, dtype, max_tokens, r_max,
               sum(mean_rank) / NULLIF(sum(mean_surprisal), 0) AS dataset_rsr,
               count(*) AS n,
               CAST(count(*) FILTER (WHERE verdict = 'correct') AS DOUBLE) / count(*) AS accuracy,
               avg(n_tokens) AS mean_response_tokens,
               sum(n_reasoning_tokens) AS reasoning_tokens,
               sum(n_answer_tokens) AS answer_tokens,
               sum(n_tool_tokens) AS tool_tokens,
               sum(dropped_tool_calls) AS dropped_tool_calls
        FROM used
        GROUP BY student_id, teacher, dtype, max_tokens, r_max)
    SELECT p.student_id, p.student_ref, p.student_label, p.teacher, p.dtype, p.max_tokens, p.r_max, p.dataset_rsr,
           p.n, p.accuracy, p.mean_response_tokens,
           row_number() OVER (
               PARTITION BY p.student_id, p.dtype, p.max_tokens, p.r_max
               ORDER BY p.dataset_rsr ASC NULLS LAST, p.teacher) AS rank,
           c.n_ingested, c.n_scored, c.n_failed, c.n_truncated, p.n < c.n_ingested AS on_subset,
           p.reasoning_tokens, p.answer_tokens, p.tool_tokens, p.dropped_tool_calls
    FROM per_teacher p
    JOIN teacher_coverage c ON c.student_id = p.student_id AND c.teacher = p.teacher AND c.dtype = p.dtype
         AND c.max_tokens IS NOT DISTINCT FROM p.max_tokens AND c.r_max = p.r_max;
CREATE OR REPLACE VIEW dataset_lineage AS
    SELECT p.dataset_id, p.name AS dataset_name, p.student_id, g.label AS student_label, i.trajectory_id,
           t.teacher, i.score_id, s.rsr, s.run_id AS score_run_id, p.run_id AS publish_run_id, p.mlflow_run_id
    FROM publication_items i
    JOIN publications p ON p.dataset_id = i.dataset_id
    LEFT JOIN registrations g ON g.student_id = p.student_id
    LEFT JOIN trajectories t ON t.trajectory_id = i.trajectory_id
    LEFT JOIN scores s ON s.score_id = i.score_id;
