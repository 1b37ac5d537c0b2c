"""Random streams: every random choice of an audit, seeded and recorded.

``seeding`` derives named seeds; ``philox`` is the counter-based generator; ``sample_rng`` gives each sample its own
stream (a ``torch.Generator`` per sample, or philox counters); ``draw_layout`` lays a sample's draws out as rows of a
batch; ``row_draws`` runs a randomized network on those rows, each with its own draws."""
