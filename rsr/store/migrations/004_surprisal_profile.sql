-- v4: where along each response its surprisal sits (the share in each tenth), for the report's position plot.
ALTER TABLE scores ADD COLUMN surprisal_profile DOUBLE[];
