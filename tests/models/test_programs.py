"""torch.export programs as a model file kind: loading runs no pickled code, any batch size works with a program
exported at a static batch size, a program that cannot be differentiated or was exported in training mode is a
one-line error, and `robaudit ls models` lists the kind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import CheckpointError
from robaudit.models.classifiers import load_classifier

runner = CliRunner()


class SmallBN(nn.Module):
    def __init__(self, detach: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, 3)
        self.detach = detach

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.body(images).flatten(1)
        return self.head(features.detach() if self.detach else features)


def export(module: nn.Module, path: Path, *, batch: int | None = None) -> Path:
    example = torch.rand(batch or 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    dynamic = None if batch else ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=dynamic), path)
    return path


@pytest.fixture
def network() -> nn.Module:
    torch.manual_seed(0)
    net = SmallBN().eval()
    net.body[1].running_mean.uniform_(-0.5, 0.5)
    return net


def test_a_program_exported_at_a_static_batch_size_takes_any_batch(network, tmp_path):
    loaded = load_classifier(export(network, tmp_path / "one.pt2", batch=1))
    images = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), network(images))
    assert loaded.card.kind == "torch-export" and loaded.card.input_size == [3, 8, 8]
    assert loaded.card.origin["batch"].startswith("static batch of 1")
    three = load_classifier(export(network, tmp_path / "three.pt2", batch=3))
    with torch.no_grad():
        torch.testing.assert_close(three(images), network(images))  # 5 = 3 + 2 padded to 3
    images.requires_grad_(True)
    three(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0, "gradients flow through the chunks"


def test_a_dynamic_program_has_no_fixed_batch_and_eval_leaves_it_alone(network, tmp_path):
    loaded = load_classifier(export(network, tmp_path / "dynamic.pt2"))
    assert loaded.card.origin["batch"] == "dynamic batch" and not loaded.training
    loaded.train()
    loaded.eval()  # exported modules refuse eval(); the wrapper keeps the program's own mode
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(1, 3, 8, 8)), network(torch.ones(1, 3, 8, 8)))


def test_a_program_that_cannot_be_differentiated_is_one_line_naming_the_fix(tmp_path):
    path = export(SmallBN(detach=True).eval(), tmp_path / "detached.pt2")
    with pytest.raises(CheckpointError, match=r"cannot be differentiated .*torch.export.export\(model.eval\(\)"):
        load_classifier(path)


def test_a_program_exported_in_training_mode_is_refused(tmp_path):
    path = export(SmallBN().train(), tmp_path / "training.pt2")
    with pytest.raises(CheckpointError, match=r"exported in training mode \(1 BatchNorm.*export model.eval\(\)"):
        load_classifier(path)


class Payload:
    """Unpickling this runs code: it touches a marker file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def with_pickled_sample_inputs(program: Path, out: Path, marker: Path) -> Path:
    """A copy of ``program`` whose sample inputs unpickle a ``Payload`` (what a hostile .pt2 could hold)."""
    payload = Payload()
    payload.marker = marker
    buffer = io.BytesIO()
    torch.save(((torch.zeros(1, 3, 8, 8),), {"x": payload}), buffer)
    with zipfile.ZipFile(program) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(info, buffer.getvalue() if info.filename.endswith("sample_inputs/model.pt") else data)
    return out


def test_loading_a_program_runs_no_pickled_code_without_the_trust_flag(network, tmp_path):
    marker = tmp_path / "code-ran"
    hostile = with_pickled_sample_inputs(export(network, tmp_path / "m.pt2"), tmp_path / "hostile.pt2", marker)
    args = ["evaluate", "--model", str(hostile), "--data", "digits", "--limit", "4", "--attacks", "fgsm"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "holds pickled Python objects" in result.output and "--trust-checkpoint" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not marker.exists(), "the payload must not run"
    with pytest.raises(CheckpointError):
        load_classifier(hostile, trust_checkpoint=True)  # trusted: it unpickles (and here fails to bind inputs)
    assert marker.exists(), "the test's payload is live: only the guard kept it from running"


def test_a_program_with_two_inputs_is_one_line(tmp_path):
    class TwoInputs(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a + b).flatten(1)[:, :3]

    program = torch.export.export(TwoInputs(), (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)))
    torch.export.save(program, tmp_path / "two.pt2")
    with pytest.raises(CheckpointError, match="takes 2 inputs"):
        load_classifier(tmp_path / "two.pt2")


def test_ls_models_lists_the_export_kind_with_an_example():
    result = runner.invoke(app, ["ls", "models"])
    assert result.exit_code == 0 and "torch.export" in result.output and "--model model.pt2" in result.output
