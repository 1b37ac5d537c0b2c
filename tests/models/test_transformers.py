"""Hugging Face transformers image classifiers: the image processor's resize/crop applied to data at another size
matches the processor's own output; a missing extra, a repository that needs its own code and a model absent from
the offline cache are one-line errors; ``--num-classes`` puts a new head on; the acceptance run through the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conformance import MEAN, STD, tiny_vit_config, transformers_folder
from PIL import Image
from test_model_data import write_folder
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.data.spec import DataSpec
from robaudit.errors import CheckpointError, ConfigError
from robaudit.models.model_data import data_for_model
from robaudit.models.sources import SourceOptions, load_from_source
from robaudit.rng.row_draws import attributable, with_row_draws
from robaudit.rng.sample_rng import SampleRNG

transformers = pytest.importorskip("transformers", reason="the transformers extra: pip install -e '.[transformers]'")
runner = CliRunner()


def vit(processor) -> tuple[torch.nn.Module, object]:
    return transformers.ViTForImageClassification(tiny_vit_config(image_size=32)), processor


PROCESSORS = {
    "squash (ViT)": lambda: transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    ),
    "shortest edge / crop_pct (ConvNeXt)": lambda: transformers.ConvNextImageProcessor(
        size={"shortest_edge": 32}, crop_pct=0.875, image_mean=MEAN, image_std=STD
    ),
    "resize then center crop (DeiT)": lambda: transformers.DeiTImageProcessor(
        size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    ),
}


def save(model, processor, folder):
    torch.manual_seed(0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", list(PROCESSORS))
def test_the_processors_resize_and_crop_match_its_own_output_on_images_at_another_size(kind, tmp_path):
    processor = PROCESSORS[kind]()
    folder = save(*vit(processor), tmp_path / "model")
    model = load_from_source(f"local-dir:{folder}", SourceOptions())
    assert model.card.input_size == [3, 32, 32]
    images = write_folder(tmp_path / "images", {"class-0": [(48, 40), (41, 57)], "class-1": [(64, 64)]})
    dataset = data_for_model(model, DataSpec.parse(str(images)))
    ours = dataset.images[:]
    files = sorted((images / "class-0").iterdir()) + sorted((images / "class-1").iterdir())
    pictures = [Image.open(f).convert("RGB") for f in files]
    theirs = processor(pictures, do_normalize=False, return_tensors="pt")["pixel_values"]  # rescaled to [0, 1]
    assert ours.shape == theirs.shape
    difference = (ours - theirs).abs()
    # measured: mean <= 0.0005, max 1/255 (12/255 for DeiT's bicubic: PIL here, torchvision tensors in transformers)
    assert difference.mean() < 0.002 and difference.max() < 0.06, "PIL vs tensor resampling differ by rounding only"
    assert "image processor" in dataset.provenance["model_transform"]


def test_normalization_folds_the_processors_rescale_and_efficientnets_second_division(tmp_path):
    from conformance import FAMILIES, processor_reference, transformers_parts

    model, processor = transformers_parts(FAMILIES["efficientnet-se-silu"], 0)
    assert processor.include_top, "EfficientNet's processor divides by std a second time"
    folder = transformers_folder(FAMILIES["efficientnet-se-silu"], tmp_path, 0)
    loaded = load_from_source(f"local-dir:{folder}", SourceOptions())
    assert loaded.card.std == pytest.approx([s * s for s in STD]), "std twice"
    images = (torch.rand(2, 3, 32, 32) * 255).round() / 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), processor_reference(model, processor)(images), rtol=1e-4, atol=1e-6)


def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    folder = save(*vit(PROCESSORS["squash (ViT)"]()), tmp_path / "model")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[transformers\]'"):
        load_from_source(f"local-dir:{folder}", SourceOptions())
    result = runner.invoke(app, ["evaluate", "--model", f"local-dir:{folder}", "--data", "digits", "--limit", "2"])
    assert result.exit_code == 2 and "[transformers]" in result.output and "Traceback" not in result.output


def test_a_repository_that_needs_its_own_code_is_refused(tmp_path):
    folder = save(*vit(PROCESSORS["squash (ViT)"]()), tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="robaudit-custom", auto_map={"AutoModelForImageClassification": "modeling.Custom"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling.py").write_text("raise SystemExit('repository code ran')\n")
    with pytest.raises(CheckpointError, match="runs no code from model repositories"):
        load_from_source(f"local-dir:{folder}", SourceOptions())


def test_num_classes_puts_a_new_head_on_and_weights_do_not_apply(tmp_path):
    folder = save(*vit(PROCESSORS["squash (ViT)"]()), tmp_path / "model")
    loaded = load_from_source(f"local-dir:{folder}", SourceOptions(num_classes=2))
    assert loaded.card.num_classes == 2 and "new, untrained head" in loaded.card.origin["num_classes"]
    assert loaded(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ConfigError, match="save_pretrained"):
        load_from_source(f"local-dir:{folder}", SourceOptions(weights=str(folder / "model.safetensors")))


def test_a_transformers_repository_absent_from_the_offline_cache_is_one_line():
    from huggingface_hub import constants

    result = runner.invoke(
        app, ["evaluate", "--model", "hf-hub:google/vit-absent", "--data", "digits", "--attacks", "fgsm"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "hf download google/vit-absent" in lines[0]
    assert str(constants.HF_HUB_CACHE) in lines[0]


def test_acceptance_local_dir_transformers_vit_on_an_image_folder_offline(tmp_path, monkeypatch):
    """`robaudit evaluate --model local-dir:DIR --data FOLDER --attacks pgd` with HF_HUB_OFFLINE=1."""
    folder = save(*vit(PROCESSORS["squash (ViT)"]()), tmp_path / "vit")
    rng = np.random.default_rng(0)
    for name in ("class-0", "class-1", "class-2"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["evaluate", "--model", f"local-dir:{folder}", "--data", str(tmp_path / "images"), "--attacks", "pgd"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and summary["n_samples"] == 9 and summary["model"]["arch"] == "ViTForImageClassification"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "model source: local-dir" in report and "image processor ViTImageProcessor" in report


def test_a_transformers_vit_with_sdpa_attention_and_noise_inside_runs_batched():
    """Its SDPA kernel is a random op that draws nothing (dropout 0): row draws run it (``row_draws.draws_nothing``)."""
    config = tiny_vit_config(image_size=16, num_hidden_layers=2, attn_implementation="sdpa")
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(config).eval()
    assert vit.config._attn_implementation == "sdpa"

    class NoisyViT(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return vit(pixel_values=x + 0.1 * torch.randn_like(x)).logits

    def rows(n: int, first: int = 0) -> SampleRNG:
        return SampleRNG.from_seeds(range(first, first + n))

    images = torch.rand(4, 3, 16, 16)
    assert attributable(NoisyViT(), images)
    batched = with_row_draws(NoisyViT(), images, rows(4))
    alone = with_row_draws(NoisyViT(), images[3:], rows(1, first=3))
    assert torch.allclose(alone, batched[3:], atol=1e-5), "a sample's draws do not depend on its batch"
