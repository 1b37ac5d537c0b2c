"""The conformance matrix (``conformance.py``): for every model source and every architecture family it can carry,
``evaluate`` runs FGSM and PGD on 8 images and the run is complete; the fingerprint is stable across two loads and
differs for other weights; predictions equal the in-memory model's; normalization is applied exactly once; and the
report names the source, the data transform and where the class count came from."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys

import pytest
import torch
import yaml
from conformance import FAMILIES, MEAN, NOT_CARRIED, SIZE, SOURCES, STD, carries, matrix, write_data
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.sources.robustbench import robustbench_version
from robaudit.models.spec import ModelSpec, obtain_classifier

SLOW_SOURCES = {"robustbench: (model dir)"}  # RobustBench's ResNet keeps its full widths (a few seconds a cell)


def cell_params() -> list:
    params = []
    for source, family, reason in matrix():
        if reason is None:
            marks = [pytest.mark.slow] if source in SLOW_SOURCES else []
            params.append(pytest.param(source, family, id=f"{source}-{family}", marks=marks))
    return params


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("conformance-data") / "images.npz")


def require(package: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip, with the reason, a row whose library is not importable here. robustbench 1.1.1 from PyPI imports
    ``autoattack``, which PyPI ships as ``pyautoattack`` (robaudit's dev extra): the row aliases it."""
    if package is None:
        return
    if package == "robustbench" and "autoattack" not in sys.modules:
        with contextlib.suppress(ImportError):
            monkeypatch.setitem(sys.modules, "autoattack", importlib.import_module("pyautoattack"))
    if package == "robustbench" and robustbench_version() is None:
        pytest.skip(
            "robustbench is not installed (the robustbench folder torchattacks 3.5.1 installs is an old copy, not the "
            "package); pip install -e '.[robustbench]' runs this row"
        )
    module = {"robustbench": "robustbench.utils"}.get(package, package)
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{package} is not importable here ({exc}); pip install -e '.[{package}]' runs this row")


def load(model, environment, monkeypatch) -> torch.nn.Module:
    from huggingface_hub import constants

    for key, value in environment.items():
        monkeypatch.setattr(constants, key, value)
    model, path = obtain_classifier(ModelSpec.parse(model), device="cpu")
    return model, model_fingerprint(model, path)


def same_draws(module, images: torch.Tensor) -> torch.Tensor:
    """Logits under a fixed global seed, so a model with randomness inside draws the same noise each call."""
    torch.manual_seed(1234)
    with torch.no_grad():
        return module(images)


@pytest.mark.parametrize(("source_name", "family_name"), cell_params())
def test_conformance_cell(source_name, family_name, data, tmp_path, monkeypatch):
    source, family = SOURCES[source_name], FAMILIES[family_name]
    require(source.needs, monkeypatch)
    (tmp_path / "seed0").mkdir(), (tmp_path / "seed1").mkdir()
    cell = source.build(family, tmp_path / "seed0", 0)
    other = source.build(family, tmp_path / "seed1", 1)
    loaded, fingerprint = load(cell.model, cell.environment, monkeypatch)
    again, fingerprint_again = load(cell.model, cell.environment, monkeypatch)
    _, other_fingerprint = load(other.model, other.environment, monkeypatch)
    assert fingerprint == fingerprint_again, "stable across two loads"
    assert fingerprint != other_fingerprint, "other weights, other fingerprint"

    images = (torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    expected = same_draws(cell.reference, images)
    torch.testing.assert_close(same_draws(loaded, images), expected, rtol=1e-4, atol=1e-5)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    twice = same_draws(cell.reference, (images - mean) / std)
    assert (twice - expected).norm() > 0.01 * expected.norm(), "normalizing twice would be seen"
    if cell.normalized_inside:  # the file's module normalizes: the wrapper must add nothing
        assert loaded.card.mean in ([], [0.0] * 3) and loaded.card.std in ([], [1.0] * 3)

    run = evaluate(cell, data, tmp_path, monkeypatch)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["samples_done"] == summary["samples_expected"] == 8
    assert summary["model"]["sha256"] == fingerprint
    report = (run / "report.md").read_text()
    assert f"- model source: {cell.source}" in report
    assert "- data transform" in report
    assert f"class count: {cell.class_count}" in report


def evaluate(cell, data, tmp_path, monkeypatch):
    config = {
        "model": cell.model,
        "data": {"name": str(data), "split": "test"},
        "attacks": ["fgsm", {"name": "pgd", "steps": 5}],
        "out": str(tmp_path / "run"),
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["evaluate", "--config", str(tmp_path / "audit.yaml")])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_every_cell_runs_or_says_why_not():
    rows = matrix()
    assert len(rows) == len(SOURCES) * len(FAMILIES)
    for source_name, family_name, reason in rows:
        applies = carries(SOURCES[source_name], FAMILIES[family_name])
        assert (reason is None) == applies, (source_name, family_name)
    used = {(SOURCES[s].carrier, f) for s, f, reason in rows if reason}
    assert used == set(NOT_CARRIED), "every stated reason belongs to a cell"
    runnable = {f for _, f, reason in rows if reason is None}
    assert runnable == set(FAMILIES), "every family runs through at least one source"


def test_the_families_are_what_their_names_say():
    from conformance import timm_network, user_module

    kinds = {name: {type(m).__name__ for m in timm_network(f, 0).modules()} for name, f in FAMILIES.items() if f.timm}
    assert "BatchNorm2d" in kinds["resnet-bn"]
    assert {"LayerNorm2d", "LayerNorm"} & kinds["convnext-ln"]
    assert {"BatchNormAct2d", "SqueezeExcite", "SiLU"} <= kinds["efficientnet-se-silu"]
    assert "WindowAttention" in kinds["swin"] and "BatchNorm2d" in kinds["wideresnet"]
    noisy = user_module(FAMILIES["randomized"], 0)
    images = torch.rand(2, 3, SIZE, SIZE)
    assert not torch.equal(noisy(images), noisy(images)), "randomness inside"
