"""`robaudit train [KIND]`: train a classifier or a purifier and write a self-describing checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from robaudit.cli.common import DeviceOption, SeedOption, TrustOption, handle_errors
from robaudit.config import load_yaml, unknown_name_message
from robaudit.errors import ConfigError
from robaudit.progress import console

app = typer.Typer()


@app.command("train")
@handle_errors
def train(
    kind: str = typer.Argument(
        "classifier", help="What to train: classifier, or a purifier (robaudit ls purifiers names them)."
    ),
    data: str = typer.Option("digits", "--data", help="Dataset name or path; its train split is used."),
    out: Path = typer.Option(None, "--out", help="Checkpoint path (.pt; .safetensors for classifiers)."),
    arch: str = typer.Option(None, "--arch", help="Classifier: registered architecture or timm model name."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default from the recipe)."),
    model: str = typer.Option(None, "--model", help="Purifiers fine-tuned against a classifier (mae): its checkpoint."),
    image_size: int = typer.Option(None, "--image-size", help="Resize images to this size."),
    channels: int = typer.Option(None, "--channels", help="Convert images to 1 or 3 channels."),
    config: Path = typer.Option(None, "--config", help="YAML recipe (the kind's training hyperparameters)."),
    seed: int = SeedOption,
    device: str = DeviceOption,
    trust_checkpoint: bool = TrustOption,
) -> None:
    """Train a classifier or a purifier on a dataset's train split and save a self-describing checkpoint."""
    from robaudit.models.spec import ModelSpec, TrainSpec, obtain_classifier, train_and_save
    from robaudit.purifiers import PURIFIERS, epochs_key
    from robaudit.purifiers.resolve import train_purifier_file
    from robaudit.runs.manifest import resolve_device

    kinds = ["classifier", *PURIFIERS.names()]
    if kind not in kinds:
        raise ConfigError(unknown_name_message("trainable kind", kind, kinds))
    recipe = load_yaml(config) if config else {}
    if epochs is not None:
        recipe["epochs" if kind == "classifier" else epochs_key(kind)] = epochs
    torch_device = str(resolve_device(device))
    made = recipe.get("arch", "vit") if kind == "classifier" else kind
    out = out or Path("runs") / "models" / f"{Path(data).stem}-{made}.pt"
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a directory; pass a file path such as {kind}.pt")
    if kind == "classifier":
        if arch is not None:
            recipe["arch"] = arch
        ModelSpec.parse({"train": {"data": data, "recipe": recipe}})  # validates recipe keys
        spec = TrainSpec(data=data, image_size=image_size, channels=channels, seed=seed, recipe=recipe)
        train_and_save(spec, out, device=torch_device)
    else:
        classifier = (
            obtain_classifier(ModelSpec(path=model, trust_checkpoint=trust_checkpoint), device=torch_device)[0]
            if model
            else None
        )
        train_purifier_file(
            kind,
            data=data,
            out=out,
            recipe=recipe,
            seed=seed,
            device=torch_device,
            image_size=image_size,
            channels=channels,
            classifier=classifier,
        )
    console.print(f"wrote {escape(str(out))}")
