"""The headline check: the sample size that certifies a headline's fall (``check_bound``) and the subset of standing
samples the convergence rung re-attacks (``headline_check``)."""
