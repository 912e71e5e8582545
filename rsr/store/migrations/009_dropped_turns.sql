-- v9: agent trajectories (tau-bench) end with the simulated user's closing turn or a tool result; ingest drops the
-- turns after the last assistant turn and counts them, per record (trajectories.dropped_turns) and per ingested
-- source (ingest_counts.dropped_turns, shown in ingest_log). NULL on rows ingested before v9: not recorded then.
ALTER TABLE trajectories ADD COLUMN dropped_turns INTEGER;
ALTER TABLE ingest_counts ADD COLUMN dropped_turns BIGINT;
-- ingest_log as in v7, plus dropped_turns.
CREATE OR REPLACE VIEW ingest_log AS
    SELECT c.teacher, c.source, c.records, c.stored, c.repeats,
           (SELECT count(*) FROM duplicates d JOIN trajectories t USING (trajectory_id)
            WHERE t.source_file = c.source AND t.teacher = c.teacher AND d.kind = 'near') AS near_duplicates,
           c.quarantined, c.run_id, c.format, c.fields, c.logged_at, c.dropped_turns
    FROM ingest_counts c;
