-- v8: benchmark decontamination (issue 28). The benchmarks registered (with their problems, so a later stage checks
-- new trajectories without reading the source again), what each trajectory was checked against, and what was found.
-- Flagged trajectories stay in the store; scoring and selection leave them out unless asked (Reader.unscored,
-- Reader.candidates). No existing view is redefined.
CREATE TABLE benchmarks (
    name VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,        -- a file, a saved datasets folder, or a hub dataset id
    kind VARCHAR NOT NULL,          -- file | hf_dir | hub
    config VARCHAR,
    split VARCHAR,
    revision VARCHAR,               -- a hub dataset's commit, resolved when it was read (pinned from then on)
    problem_column VARCHAR NOT NULL,
    ngram INTEGER NOT NULL,         -- n of its word n-grams
    digest VARCHAR NOT NULL,        -- sha256 of its problems' texts, in order: its content
    n_problems BIGINT NOT NULL,
    n_skipped BIGINT NOT NULL,      -- rows without a problem text
    run_id VARCHAR,
    added_at TIMESTAMP NOT NULL
);
CREATE TABLE benchmark_problems (
    benchmark VARCHAR NOT NULL,
    benchmark_row BIGINT NOT NULL,  -- the row as its source numbers it (a JSONL/CSV line, else a 0-based index)
    text VARCHAR NOT NULL,
    PRIMARY KEY (benchmark, benchmark_row)
);
-- One row per trajectory and benchmark problem it holds: the strongest method (exact, ngram, ngram_numbers), the
-- share of the problem's n-grams found (1 for exact) and the prompt's text that matched.
CREATE TABLE contamination_hits (
    trajectory_id VARCHAR NOT NULL,
    benchmark VARCHAR NOT NULL,
    benchmark_row BIGINT NOT NULL,
    method VARCHAR NOT NULL,
    share DOUBLE NOT NULL,
    evidence VARCHAR,
    run_id VARCHAR,
    found_at TIMESTAMP NOT NULL,   -- no reserved word as a column name
    PRIMARY KEY (trajectory_id, benchmark, benchmark_row)
);
-- What each trajectory was last checked against: `checked` names a set of benchmark labels (name@digest/n/matcher)
-- in contamination_check_sets. A trajectory without a row was checked against none. No key: a million rows of an
-- index would sit in memory for a column read by scans.
CREATE TABLE contamination_checks (
    trajectory_id VARCHAR NOT NULL,
    checked VARCHAR NOT NULL
);
CREATE TABLE contamination_check_sets (
    checked VARCHAR PRIMARY KEY,
    labels VARCHAR[] NOT NULL
);
CREATE OR REPLACE VIEW contamination AS
    SELECT h.trajectory_id, t.teacher, h.benchmark, h.benchmark_row, h.method, h.evidence, h.share,
           t.problem_id, h.run_id, h.found_at
    FROM contamination_hits h
    JOIN trajectories t ON t.trajectory_id = h.trajectory_id;
-- Per teacher and benchmark: the trajectories (and their problems) found to hold one of its problems, by method (a
-- trajectory counts under its strongest method for that benchmark). Beside ingest_log: every record accounted for.
CREATE OR REPLACE VIEW contamination_log AS
    WITH per AS (
        SELECT h.trajectory_id, h.benchmark, any_value(t.teacher) AS teacher, any_value(t.problem_id) AS problem_id,
               CASE min(CASE h.method WHEN 'exact' THEN 0 WHEN 'ngram' THEN 1 ELSE 2 END)
                    WHEN 0 THEN 'exact' WHEN 1 THEN 'ngram' ELSE 'ngram_numbers' END AS method
        FROM contamination_hits h JOIN trajectories t ON t.trajectory_id = h.trajectory_id
        GROUP BY h.trajectory_id, h.benchmark)
    SELECT teacher, benchmark, count(*) AS trajectories, count(DISTINCT problem_id) AS problems,
           count(*) FILTER (WHERE method = 'exact') AS exact,
           count(*) FILTER (WHERE method = 'ngram') AS ngram,
           count(*) FILTER (WHERE method = 'ngram_numbers') AS ngram_numbers
    FROM per
    GROUP BY teacher, benchmark;
