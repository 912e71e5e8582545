-- v3: several generations per input row (which one, and the input's own correctness flag); what each score
-- covered (reasoning, answer and tool-call tokens) and how the chat was rendered; per teacher and setting, how
-- many trajectories were ingested, scored, failed and truncated, so a dataset RSR resting on a subset shows.
ALTER TABLE trajectories ADD COLUMN generation INTEGER;
ALTER TABLE trajectories ADD COLUMN teacher_correct BOOLEAN;
ALTER TABLE scores ADD COLUMN n_reasoning_tokens INTEGER;
ALTER TABLE scores ADD COLUMN n_answer_tokens INTEGER;
ALTER TABLE scores ADD COLUMN n_tool_tokens INTEGER;
ALTER TABLE scores ADD COLUMN render VARCHAR;
CREATE OR REPLACE VIEW latest_scores AS
    SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student, s.rsr,
           s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
           s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version,
           s.n_reasoning_tokens, s.n_answer_tokens, s.n_tool_tokens, s.render
    FROM scores s
    JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN students st ON st.student_id = s.student_id
    WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
    QUALIFY row_number() OVER (
        PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
        ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
-- Per student, scoring setting and teacher: every ingested trajectory is scored (a successful row), failed
-- (only error rows), or not scored yet; truncated ones are scored on a prefix and left out of dataset RSR.
CREATE OR REPLACE VIEW teacher_coverage AS
    WITH settings AS (
        SELECT DISTINCT student_id, dtype, max_tokens, r_max FROM scores WHERE metric_version = 'rsr-v1'),
    attempts AS (
        SELECT trajectory_id, student_id, dtype, max_tokens, r_max,
               bool_or(error IS NULL) AS ok, bool_or(error IS NULL AND truncated) AS truncated
        FROM scores WHERE metric_version = 'rsr-v1'
        GROUP BY ALL)
    SELECT st.student_id, st.dtype, st.max_tokens, st.r_max, t.teacher,
           count(*) AS n_ingested,
           count(*) FILTER (WHERE a.ok) AS n_scored,
           count(*) FILTER (WHERE NOT a.ok) AS n_failed,
           count(*) FILTER (WHERE a.truncated) AS n_truncated,
           count(*) FILTER (WHERE a.trajectory_id IS NULL) AS n_unscored
    FROM settings st
    CROSS JOIN trajectories t
    LEFT JOIN attempts a ON a.trajectory_id = t.trajectory_id AND a.student_id = st.student_id
         AND a.dtype = st.dtype AND a.max_tokens IS NOT DISTINCT FROM st.max_tokens AND a.r_max = st.r_max
    GROUP BY ALL;
-- As in v2, plus coverage: n_ingested/n_scored/n_failed/n_truncated from teacher_coverage, the reasoning,
-- answer and tool-call tokens the used rows covered, and on_subset: the dataset RSR rests on fewer
-- trajectories than the teacher has (failed, truncated, unscored or without a finite RSR).
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
               avg(n_tokens) AS mean_response_tokens,
               sum(n_reasoning_tokens) AS reasoning_tokens,
               sum(n_answer_tokens) AS answer_tokens,
               sum(n_tool_tokens) AS tool_tokens
        FROM used
        GROUP BY student_id, teacher, dtype, max_tokens, r_max)
    SELECT p.student_id, p.student, p.teacher, p.dtype, p.max_tokens, p.r_max, p.dataset_rsr, p.n, p.accuracy,
           p.mean_response_tokens,
           row_number() OVER (
               PARTITION BY p.student_id, p.dtype, p.max_tokens, p.r_max
               ORDER BY p.dataset_rsr ASC NULLS LAST, p.teacher) AS rank,
           c.n_ingested, c.n_scored, c.n_failed, c.n_truncated, p.n < c.n_ingested AS on_subset,
           p.reasoning_tokens, p.answer_tokens, p.tool_tokens
    FROM per_teacher p
    JOIN teacher_coverage c ON c.student_id = p.student_id AND c.teacher = p.teacher AND c.dtype = p.dtype
         AND c.max_tokens IS NOT DISTINCT FROM p.max_tokens AND c.r_max = p.r_max;
