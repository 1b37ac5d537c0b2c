"""Purifiers from pretrained diffusion models, as published: a diffusers DDPM with the exact configuration layout of
``google/ddpm-cifar10-32`` (its block types, attention placement and scheduler config; smaller widths, random weights)
saved with ``save_pretrained``, loaded through ``local-dir:`` and through a prepared offline cache as ``hf-hub:``; its
purification equals diffusers' own scheduler steps on the same noise; the card and fingerprint name the weights; ADP
runs on it; a model absent from the cache is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import CheckpointError, ConfigError
from robaudit.purifiers.base import PURIFIERS
from robaudit.purifiers.sources import pretrained_network

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def ddpm_cifar10_32_layout(*, size: int = 32, channels: int = 3, seed: int = 0) -> tuple[UNet2DModel, DDPMScheduler]:
    """google/ddpm-cifar10-32's U-Net and scheduler configuration, at widths (16, 32, 32, 32) instead of
    (128, 256, 256, 256) and 8 norm groups instead of 32."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=2,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        act_fn="silu",
        attention_head_dim=None,
        center_input_sample=False,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        mid_block_scale_factor=1,
        norm_eps=1e-6,
        norm_num_groups=8,
        time_embedding_type="positional",
    ).eval()
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=True,
        variance_type="fixed_small",
    )
    return unet, scheduler


def save_ddpm(folder: Path, **layout) -> UNet2DModel:
    """The repository layout of google/ddpm-cifar10-32: the U-Net and the scheduler config at the top level."""
    unet, scheduler = ddpm_cifar10_32_layout(**layout)
    unet.save_pretrained(str(folder), safe_serialization=True)
    scheduler.save_pretrained(str(folder))
    return unet


def prepare_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / COMMIT)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory) -> tuple[UNet2DModel, Path]:
    folder = tmp_path_factory.mktemp("ddpm-cifar10-32-tiny")
    return save_ddpm(folder), folder


def test_a_diffusers_ddpm_loads_through_local_dir_and_an_offline_hub_cache(ddpm_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    unet, folder = ddpm_folder
    local, local_card = pretrained_network(f"local-dir:{folder}", kind="ddpm", trust=False)
    prepare_hub_cache(tmp_path, "robaudit-test/ddpm-cifar10-32-tiny", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    hub, hub_card = pretrained_network("hf-hub:robaudit-test/ddpm-cifar10-32-tiny", kind="ddpm", trust=False)
    assert local_card["resolution"] == "32x32, 3 channel(s)" and local_card["input_size"] == [3, 32, 32]
    assert local_card["parameters"] == sum(p.numel() for p in unet.parameters())
    assert "1000 steps, linear betas 0.0001 .. 0.02" in local_card["schedule"]
    assert hub_card["source"] == "hf-hub" and hub_card["sha256"] == local_card["sha256"], "the same weights"
    other = tmp_path / "other"
    save_ddpm(other, seed=1)
    assert pretrained_network(f"local-dir:{other}", kind="ddpm", trust=False)[1]["sha256"] != local_card["sha256"]
    t = torch.full((2,), 10, dtype=torch.long)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hub.noise_predictor(x, t), unet(x, t).sample)


def test_ancestral_purification_equals_diffusers_own_scheduler_steps(ddpm_folder):
    unet, folder = ddpm_folder
    network, _ = pretrained_network(f"local-dir:{folder}", kind="ddpm", trust=False)
    purifier = PURIFIERS.build("ddpm", {"t_star": 0.02, "sampler": "ddpm"}, network)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = purifier(images, generator=torch.Generator().manual_seed(5))
        scheduler = DDPMScheduler.from_pretrained(str(folder))
        generator = torch.Generator().manual_seed(5)
        t_start = purifier.t_start
        noise = torch.randn(images.shape, generator=generator)
        x = scheduler.add_noise(images * 2 - 1, noise, torch.tensor([t_start]))
        for t in range(t_start, -1, -1):
            x = scheduler.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    # the same steps; diffusers recomputes beta_t as 1 - abar_t / abar_(t-1) in float32 (robaudit reads beta_t from the
    # schedule), which for beta ~ 1e-4 moves the result by ~1e-4 over 20 steps (measured: 1.1e-4 at most)
    torch.testing.assert_close(ours, ((x + 1) / 2).clamp(0, 1), rtol=0, atol=3e-4)
    assert (ours - images).abs().max() > 0.01, "the chain changed the images (the comparison is not vacuous)"


def test_adp_runs_on_a_pretrained_diffusion_model(ddpm_folder):
    _, folder = ddpm_folder
    network, card = pretrained_network(f"local-dir:{folder}", kind="ebm", trust=False)
    purifier = PURIFIERS.build("ebm", {"max_steps": 2, "ensemble": 2}, network)
    assert abs(float(network.sigmas[purifier.level]) - 0.25) < 0.01, "ADP's noise level, sigma 0.25"
    images = torch.rand(2, 3, 32, 32)
    out = purifier(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert card["kind"] == "ebm" and card["source"] == "local-dir"


def test_methods_without_a_diffusion_form_and_missing_models_are_one_line(ddpm_folder):
    _, folder = ddpm_folder
    with pytest.raises(ConfigError, match="the mae purifier does not run on a pretrained diffusion model"):
        pretrained_network(f"local-dir:{folder}", kind="mae", trust=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrained_network("local-dir:no/such/folder", kind="ddpm", trust=False)
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            "m.pt",
            "--data",
            "digits",
            "--purifier",
            "ddpm",
            "--purifier-checkpoint",
            "hf-hub:google/ddpm-cifar10-32",
        ],
    )
    assert result.exit_code == 2, result.output


def test_ls_purifiers_shows_the_sources_with_an_example():
    result = CliRunner().invoke(app, ["ls", "purifiers"])
    assert result.exit_code == 0
    for text in ("hf-hub:", "local-dir:", "hf-hub:google/ddpm-cifar10-32", "network:", "--trust-code"):
        assert text in result.output


def test_evaluate_with_a_local_dir_ddpm_at_another_resolution_states_bridge_sampler_and_source(
    tmp_path, digits_model_path
):
    """The acceptance shape: a 32 px classifier behind a 16 px diffusers DDPM given as local-dir:."""
    import json

    save_ddpm(tmp_path / "ddpm16", size=16, channels=1)
    args = ["evaluate", "--model", str(digits_model_path), "--data", "digits", "--limit", "4", "--attacks", "fgsm"]
    args += ["--purifier", "ddpm", "--purifier-checkpoint", f"local-dir:{tmp_path / 'ddpm16'}", "--threat", "adaptive"]
    result = CliRunner().invoke(app, [*args, "--repeats", "2", "--eot", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    defense = json.loads((tmp_path / "run" / "summary.json").read_text())["defenses"][1]
    assert defense["bridge"] == "32 -> 16 (bicubic) -> purify -> 32" and defense["source"] == "local-dir"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "reverse process: DDIM \\(eta 0\\), 10 steps from t\\* = 0.1" in report
    assert "resolution bridge: 32 -\\> 16" in report and "network: local-dir" in report
    assert "16x16, 1 channel\\(s\\)" in report
