"""A RobustBench model's threat has its own flag, ``--rb-threat``; ``--threat`` takes threat models, and its old
use for RobustBench threats still works for one release, with a warning."""

from __future__ import annotations

from robaudit.cli.evaluate import MODEL_FLAGS, split_deprecated_threat
from robaudit.cli.overrides import with_overrides


def overrides(**given):
    flags = dict.fromkeys(("model", "data", "attacks", "purifier", "purifier_checkpoint", "threat", "rb_threat"))
    flags.update({key: None for key in MODEL_FLAGS.options}, data_flags={}, randomized=False)
    return with_overrides({"model": "robustbench:Standard", "data": "digits"}, **{**flags, **given})


def test_rb_threat_sets_the_model_threat_and_threat_the_threat_models():
    mapping = overrides(rb_threat="L2", threat="adaptive,bpda")
    assert mapping["model"] == {"path": "robustbench:Standard", "rb_threat": "L2"}
    assert mapping["threats"] == ["adaptive", "bpda"]


def test_the_old_spelling_is_split_with_a_warning(capsys):
    assert split_deprecated_threat("Linf,adaptive", None) == ("adaptive", "Linf")
    assert "use --rb-threat Linf" in capsys.readouterr().err.replace("\n", " ")
    assert split_deprecated_threat("adaptive", "L2") == ("adaptive", "L2")
    assert split_deprecated_threat(None, None) == (None, None)


def test_the_earlier_model_key_stochastic_still_declares_a_randomized_classifier():
    from robaudit.models.spec import ModelSpec

    assert ModelSpec.parse({"path": "m.pt", "stochastic": True}).randomized
    assert ModelSpec.parse({"path": "m.pt", "randomized": True}).to_dict()["randomized"] is True
    assert "randomized" not in ModelSpec.parse("m.pt").to_dict()


def test_an_old_run_manifest_reads_in_the_current_schema():
    from robaudit.reporting.report import with_randomized

    assert with_randomized({"stochastic": True, "repeats": 10}) == {"randomized": True, "repeats": 10}
    assert with_randomized({"randomized": False}) == {"randomized": False}


def test_the_model_key_is_rb_threat_and_the_earlier_threat_still_reads():
    from robaudit.models.spec import ModelSpec

    assert ModelSpec.parse({"path": "robustbench:Standard", "rb_threat": "L2"}).source_options == {"rb_threat": "L2"}
    assert ModelSpec.parse({"path": "robustbench:Standard", "threat": "L2"}).source_options == {"rb_threat": "L2"}
    assert ModelSpec.parse({"path": "robustbench:Standard", "threat": "L2"}).to_dict()["rb_threat"] == "L2"


def test_a_model_given_by_its_training_recipe_alone_parses():
    """No path: no source, so no source options (a bug once read the source of a missing path)."""
    from robaudit.models.spec import ModelSpec

    spec = ModelSpec.parse({"train": {"data": "digits"}})
    assert spec.path is None and spec.source_options == {}
