"""`robaudit train [KIND]`: train a classifier (purifiers join later) and write a self-describing checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.cli.common import DeviceOption, SeedOption, handle_errors
from robaudit.config import load_yaml
from robaudit.errors import ConfigError
from robaudit.manifest import resolve_device
from robaudit.modelspec import TrainSpec, train_and_save
from robaudit.progress import console
from robaudit.registry import unknown_name_message

app = typer.Typer()

KINDS = ["classifier"]


@app.command("train")
@handle_errors
def train(
    kind: str = typer.Argument("classifier", help="What to train: classifier."),
    data: str = typer.Option("digits", "--data", help="Dataset name or path; its train split is used."),
    out: Path = typer.Option(None, "--out", help="Checkpoint path (.pt or .safetensors)."),
    arch: str = typer.Option(None, "--arch", help="Registered architecture (robaudit ls models) or timm name."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default from the recipe)."),
    image_size: int = typer.Option(None, "--image-size", help="Resize images to this size."),
    channels: int = typer.Option(None, "--channels", help="Convert images to 1 or 3 channels."),
    config: Path = typer.Option(None, "--config", help="YAML recipe (keys of ClassifierRecipe)."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Train a classifier on a dataset's train split and save a self-describing checkpoint."""
    if kind not in KINDS:
        raise ConfigError(unknown_name_message("trainable kind", kind, KINDS))
    recipe = load_yaml(config) if config else {}
    if arch is not None:
        recipe["arch"] = arch
    if epochs is not None:
        recipe["epochs"] = epochs
    spec = TrainSpec(data=data, image_size=image_size, channels=channels, seed=seed, recipe=recipe)
    from robaudit.modelspec import ModelSpec

    ModelSpec.parse({"train": {"data": data, "recipe": recipe}})  # validates recipe keys
    out = out or Path("runs") / "models" / f"{Path(data).stem}-{recipe.get('arch', 'vit')}.pt"
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a directory; pass a file path such as vit.pt")
    train_and_save(spec, out, device=str(resolve_device(device)))
    console.print(f"wrote {out}")
