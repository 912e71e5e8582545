"""Score: load a student (load), then each response token's rank and surprisal under it (student: the hot path)."""
