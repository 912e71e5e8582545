"""Report: the teacher board, plots and HTML pages (page), and the token-level view of one trajectory (explain)."""
