-- v5: a trajectory's tools (the function schemas its prompt offered, JSON), and per ingested source file how its
-- records were accounted for: records = stored + repeats + quarantined (a row of N generations counts N).
-- messages (and tools) as VARCHAR holding JSON text that our writer made: DuckDB's JSON type parses each value on
-- insert, holding several copies of a long trace at once (an 8 MB trace failed a 128 MB memory limit that VARCHAR
-- passes); the json functions read VARCHAR the same.
ALTER TABLE trajectories ALTER COLUMN messages SET DATA TYPE VARCHAR;
ALTER TABLE trajectories ADD COLUMN tools VARCHAR;
CREATE TABLE ingest_counts (
    run_id VARCHAR NOT NULL,
    teacher VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    records BIGINT NOT NULL,
    stored BIGINT NOT NULL,       -- distinct trajectories of the file, new or already stored by an earlier run
    repeats BIGINT NOT NULL,      -- records whose trajectory repeats an earlier record of the same file exactly
    quarantined BIGINT NOT NULL,
    format VARCHAR,               -- the row format read
    fields JSON,                  -- field -> the column it came from
    "at" TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, teacher, source)
);
-- near_duplicates: trajectories of that file that dedup marked near (not exact) copies of an earlier one.
CREATE OR REPLACE VIEW ingest_log AS
    SELECT c.teacher, c.source, c.records, c.stored, c.repeats,
           (SELECT count(*) FROM duplicates d JOIN trajectories t USING (trajectory_id)
            WHERE t.source_file = c.source AND t.teacher = c.teacher AND d.kind = 'near') AS near_duplicates,
           c.quarantined, c.run_id, c.format, c.fields, c."at"
    FROM ingest_counts c;
