"""Records -> summary (rates and intervals), sanity checks, gates, plots, comparisons and rendered reports."""
