-- v10 (issue 29): companion metrics from the scorer's same pass, and how RSR goes with length.
-- scores: the student's full-vocabulary entropy per scored position (sum and mean, nats) and the tokens whose rank
-- is 1 (count and share). NULL on rows scored before v10: the score key is unchanged, so they stay NULL until
-- re-scored on request (`rsr add-student REF --fill-metrics`, or `scoring: {fill_metrics: true}`).
ALTER TABLE scores ADD COLUMN sum_entropy DOUBLE;
ALTER TABLE scores ADD COLUMN mean_entropy DOUBLE;
ALTER TABLE scores ADD COLUMN n_top1 INTEGER;
ALTER TABLE scores ADD COLUMN top1_share DOUBLE;
-- score_history as in v7, defined again so that the catalog (information_schema.columns) lists the new columns
-- (its s.* was expanded when v7 created it; a query re-expands it either way).
CREATE OR REPLACE VIEW score_history AS
    SELECT s.*, t.teacher, t.problem_id, st.ref AS student_ref, st.label AS student_label, r.flow_name
    FROM scores s
    LEFT JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN registrations st ON st.student_id = s.student_id
    LEFT JOIN runs r ON r.run_id = s.run_id;
-- latest_scores as in v7, plus mean_entropy and top1_share.
CREATE OR REPLACE VIEW latest_scores AS
    SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student_ref,
           st.label AS student_label, s.rsr,
           s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
           s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version,
           s.n_reasoning_tokens, s.n_answer_tokens, s.n_tool_tokens, s.render, s.dropped_tool_calls,
           s.mean_entropy, s.top1_share
    FROM scores s
    JOIN trajectories t ON t.trajectory_id = s.trajectory_id
    LEFT JOIN registrations st ON st.student_id = s.student_id
    WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
    QUALIFY row_number() OVER (
        PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
        ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
-- teacher_selection as in v7, plus rsr_length_spearman: per student, setting and teacher, Spearman's rank
-- correlation between trajectory RSR and response tokens (n_tokens) over the rows its dataset RSR uses (those
-- with a finite RSR): Pearson's correlation of average ranks (ties share the mean of their ranks), as
-- scipy.stats.spearmanr; NULL under 2 rows or when either side is constant. Summed in one order (the aggregate's
-- ORDER BY), so the same store gives the same bits.
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
        GROUP BY student_id, teacher, dtype, max_tokens, r_max),
    ranked AS (
        SELECT student_id, teacher, dtype, max_tokens, r_max,
               rank() OVER (PARTITION BY student_id, teacher, dtype, max_tokens, r_max ORDER BY rsr)
                 + (count(*) OVER (PARTITION BY student_id, teacher, dtype, max_tokens, r_max, rsr) - 1) / 2.0
                 AS rsr_rank,
               rank() OVER (PARTITION BY student_id, teacher, dtype, max_tokens, r_max ORDER BY n_tokens)
                 + (count(*) OVER (PARTITION BY student_id, teacher, dtype, max_tokens, r_max, n_tokens) - 1) / 2.0
                 AS length_rank
        FROM used WHERE isfinite(rsr)),
    spearman AS (
        SELECT student_id, teacher, dtype, max_tokens, r_max,
               corr(rsr_rank, length_rank ORDER BY rsr_rank, length_rank) AS rsr_length_spearman
        FROM ranked
        GROUP BY student_id, teacher, dtype, max_tokens, r_max)
    SELECT p.student_id, p.student_ref, p.student_label, p.teacher, p.dtype, p.max_tokens, p.r_max, p.dataset_rsr,
           p.n, p.accuracy,
           p.mean_response_tokens,
           row_number() OVER (
               PARTITION BY p.student_id, p.dtype, p.max_tokens, p.r_max
               ORDER BY p.dataset_rsr ASC NULLS LAST, p.teacher) AS rank,
           c.n_ingested, c.n_scored, c.n_failed, c.n_truncated, p.n < c.n_ingested AS on_subset,
           p.reasoning_tokens, p.answer_tokens, p.tool_tokens, p.dropped_tool_calls,
           CASE WHEN isfinite(r.rsr_length_spearman) THEN r.rsr_length_spearman END AS rsr_length_spearman
    FROM per_teacher p
    JOIN teacher_coverage c ON c.student_id = p.student_id AND c.teacher = p.teacher AND c.dtype = p.dtype
         AND c.max_tokens IS NOT DISTINCT FROM p.max_tokens AND c.r_max = p.r_max
    LEFT JOIN spearman r ON r.student_id = p.student_id AND r.teacher = p.teacher AND r.dtype = p.dtype
         AND r.max_tokens IS NOT DISTINCT FROM p.max_tokens AND r.r_max = p.r_max;
