"""Distillation: a teacher (optionally behind its purifier) into a small student -- its loop and comparison
(``distill.loop``) and its config and run (``distill.run``)."""

DISTILL_KEYS = ["teacher", "data", "purifier", "student", "recipe", "eval_limit", "eps", "steps", "seed", "out"]
