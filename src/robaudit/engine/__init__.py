"""The audit: threat models, conditions, the plan of a run, executing its parts, shards and merging them."""
