"""How close an audit runs to its networks' own throughput, measured side by side in one run.

    python bench/throughput.py [--device cpu|cuda] [--n 128] [--steps 10] [--precision fp32|bf16] [--compile]
                               [--compile-mode reduce-overhead|max-autotune]
                               [--layout batched|looped] [--rng generator|philox]
                               [--cases vit,vit+ddpm,vit+ddpm-ancestral,vit+ebm,unet-cifar] [--json FILE]

For each case, an adaptive PGD audit with EOT 4 (``--steps`` steps, 10 selection draws, robaudit's engine pieces:
the pipeline, ``build_attack``, ``run_attack``) runs on ``--n`` images (default 128, the CPU batch), and hooks count
every network evaluation (forward, and backward where a gradient flows back through it; ``engine.passes``) and every
call of every network: its batch size, whether a gradient flowed back through it and its precision. Then each
network runs *alone*, no audit around it, on the inputs the audit gave it: each batch size the audit called it at,
forward or forward and backward and in the precision as the audit did, never gradient-checkpointed (its own
throughput), the fastest of three timed runs. The networks alone would need

    T_alone = sum over networks and their calls of t(batch size, forward or forward+backward)

for the calls the audit made; the audit took T_audit. **efficiency = T_alone / T_audit**: 1.0 is an audit
that spends all its time in its networks, and the target is at least 0.7, on the CPU and on a GPU.

``streams s`` is the share of the audit's seconds spent inside the random streams' draws (host time: their compute
on a CPU, their kernel launches on CUDA), the cost ``--rng`` (``generator`` or ``philox``) decides.

Cases: the quickstart ViT alone (trained by robaudit and cached, as ``bench/peers.py``); the ViT behind ``ddpm``
(DDIM, 10 steps, t* = 0.1; and ``ddpm-ancestral``: 10 ancestral steps at t* = 0.01, fresh noise at each, where the
random streams' engine, ``--rng``, shows) and behind ``ebm`` (ADP, ensemble 1), at their default network size with
random weights (throughput does not depend on training); on CUDA, also ``unet-cifar``: a UNet2DModel in the layout of
google/ddpm-cifar10-32 (35.7M parameters, random weights, diffusers) with DiffPure's ancestral chain at t* = 0.1
(100 network evaluations per purification) in front of a random small ResNet on 32 px images. ``--compile-mode
reduce-overhead`` compiles each network evaluation with CUDA graphs (for the GPU measurement; robaudit's
``--compile`` uses torch.compile's default mode). The table prints the device (the CUDA device's name), the
precision, the compile setting and the draw layout; ``--json FILE`` writes the same rows, each with its ``device``,
``case`` and ``efficiency``. ``--quick`` (the test suite) runs 4 images, 2 steps, one epoch of training: it checks
the bench runs, not its numbers.

Certification (``--certify``, randomized smoothing through the ViT behind ``ddpm``'s network at its default size,
one-shot denoising at sigma 0.5) is measured the same way: the smoothed classifier's draws per second (rows of
(sample, draw) through denoiser and classifier, ``certify.smoothing``) against the two networks alone on batches of
the same size, and the seconds one certified sample takes at Cohen et al.'s n0 + n = 100 + 10,000 draws.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tables import markdown_table  # bench/tables.py
from torch import nn

from robaudit.attacks import build_attack, resolve_attack, run_attack
from robaudit.data import load_dataset
from robaudit.engine.passes import PassCounter, purifier_network
from robaudit.engine.pipeline import Pipeline
from robaudit.models.compiled import compile_classifier, compile_network
from robaudit.models.spec import ModelSpec, TrainSpec, obtain_classifier
from robaudit.purifiers import PURIFIERS, recipe_for
from robaudit.purifiers.checkpointing import chain_checkpointing, forced_checkpointing
from robaudit.rng.draw_layout import DrawLayout
from robaudit.rng.sample_rng import ENGINES, SampleRNG

EOT = 4
SELECTION_DRAWS = 10
TIMING_REPEATS = 3  # a network alone: the fastest of three timed runs (after a warm-up)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PURIFIER_CASES = {  # case -> (registered purifier, the bench's purification settings)
    "ddpm": ("ddpm", {"t_star": 0.1, "sampler": "ddim", "steps": 10}),
    "ddpm-ancestral": ("ddpm", {"t_star": 0.01, "sampler": "ddpm"}),  # 10 ancestral steps: fresh noise at each
    "ebm": ("ebm", {"ensemble": 1}),
}
QUICK_SETTINGS = {"ddpm": {"steps": 2}, "ddpm-ancestral": {"t_star": 0.002}, "ebm": {"max_steps": 2}}


class Calls:
    """A forward hook that records every call of a module during the audit: its batch size, whether a gradient
    flowed back through it and its precision (bf16 under autocast, or float32: a bf16 audit judges its verdicts in
    float32), and keeps the arguments of its largest call (to time the network alone on)."""

    def __init__(self, module: nn.Module) -> None:
        self.args: tuple | None = None
        self.sizes: list[int] = []
        self.backward: list[bool] = []
        self.precisions: list[str] = []
        self.handle = module.register_forward_hook(self.record)

    def record(self, module: nn.Module, args: tuple, output: object) -> None:
        if not (args and isinstance(args[0], torch.Tensor)) or torch._C._current_graph_task_id() != -1:
            return  # not a network evaluation, or a checkpoint recomputing one inside a backward pass
        call = len(self.sizes)
        self.sizes.append(args[0].shape[0])
        self.backward.append(False)
        self.precisions.append("bf16" if torch.is_autocast_enabled(args[0].device.type) else "fp32")
        output = getattr(output, "sample", output)
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: self.backward.__setitem__(call, True))
        if self.args is None or args[0].shape[0] > self.args[0].shape[0]:
            self.args = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)

    def shapes(self) -> Counter[tuple[int, bool, str]]:
        """``{(batch size, with backward, precision): calls}``."""
        return Counter(zip(self.sizes, self.backward, self.precisions, strict=True))


def resized(args: tuple, size: int) -> tuple:
    """The largest call's arguments cut (or tiled) to ``size`` rows: a call of that size on the audit's inputs."""
    rows = torch.arange(size, device=args[0].device) % args[0].shape[0]
    return tuple(
        a[rows] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == args[0].shape[0] else a for a in args
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(network: nn.Module, args: tuple, *, backward: bool, precision: str) -> float:
    """The fastest of ``TIMING_REPEATS`` runs of ``network(*args)`` alone (after a warm-up): a forward pass, or a
    forward and a backward pass to its first input (as an attack's gradient), never checkpointed (the network's own
    throughput: an audit whose chain had to checkpoint pays the recomputation in its own seconds)."""
    device = args[0].device

    def once() -> None:
        x = args[0].detach().requires_grad_(backward)
        with unchecked(network, x), torch.set_grad_enabled(backward), autocast(device, precision):
            out = network(x, *args[1:])
            out = out.sample if hasattr(out, "sample") else out
        if backward:
            torch.autograd.grad(out.float().sum(), x)

    once()
    times = []
    for _ in range(TIMING_REPEATS):
        synchronize(device)
        tic = time.perf_counter()
        once()
        synchronize(device)
        times.append(time.perf_counter() - tic)
    return min(times)


@contextlib.contextmanager
def unchecked(network: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """``network``'s evaluations of ``x`` inside are not checkpointed (a checkpointing network checkpoints outside
    any audit's chain by default)."""
    with forced_checkpointing(False), chain_checkpointing(network, x):
        yield


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def quickstart_vit(quick: bool, device: torch.device) -> nn.Module:
    """The quickstart ViT (trained once by robaudit and cached)."""
    recipe = {"epochs": 1} if quick else {}
    model, _ = obtain_classifier(ModelSpec(train=TrainSpec(data="digits", seed=0, recipe=recipe)), device="cpu")
    return model.to(device).eval()


def random_purifier(case: str, shape: list[int], device: torch.device, quick: bool) -> nn.Module:
    """The purifier of ``case`` (``PURIFIER_CASES``) at its default network size, random weights (seeded), with the
    bench's purification settings for the case."""
    name, settings = PURIFIER_CASES[case]
    torch.manual_seed(0)
    network = PURIFIERS.get(name).meta["build"](recipe_for(name, {}), shape).eval()
    settings = {**settings, **(QUICK_SETTINGS[case] if quick else {})}
    return PURIFIERS.build(name, settings, network).to(device).eval()


def unet_cifar(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """A random small ResNet on 32 px images behind DiffPure's chain on a UNet2DModel in google/ddpm-cifar10-32's
    layout (random weights)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from robaudit.models.architectures import architecture_for
    from robaudit.models.card import ModelCard
    from robaudit.models.classifiers import create_classifier
    from robaudit.purifiers.diffusion import DDPMNetwork
    from robaudit.purifiers.unet import LevelConditionedUNet

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    network = DDPMNetwork.from_eps_model(LevelConditionedUNet(unet), schedule, [3, 32, 32]).eval()
    purifier = PURIFIERS.build("ddpm", {"t_star": 0.1, "sampler": "ddpm"}, network).to(device).eval()
    arch, kwargs = architecture_for("resnet", channels=3, image_size=32)
    card = ModelCard(arch, kwargs, 10, [str(k) for k in range(10)], [3, 32, 32], [0.5] * 3, [0.5] * 3)
    return create_classifier(card).to(device).eval(), purifier


@contextlib.contextmanager
def timed_streams(engine: type[SampleRNG]) -> Iterator[list[float]]:
    """The host seconds spent inside the random streams' draws (``engine``'s draws, splits and seeds) while the
    block runs: on a CPU their compute, on CUDA their launch overhead (no synchronization added)."""
    spent = [0.0]
    originals = {name: getattr(engine, name) for name in ("_draw", "split", "seeds")}

    def timed(method: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            tic = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - tic

        return run

    for name, method in originals.items():
        setattr(engine, name, timed(method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(engine, name, method)


def audit_case(
    classifier: nn.Module, purifier: nn.Module | None, images: torch.Tensor, labels: torch.Tensor, args
) -> dict:
    """Adaptive PGD with EOT 4 through ``classifier`` (behind ``purifier``): seconds and evaluations per network,
    then each network alone on the audit's own calls, and the efficiency."""
    device = images.device
    layout = DrawLayout(batched=args.layout == "batched")
    if args.compile:
        compile_classifier(classifier, mode=args.compile_mode)  # in place
    networks = {"classifier": classifier} | ({"purifier": purifier_network(purifier)} if purifier else {})
    if args.compile and purifier is not None:
        compile_network(networks["purifier"], mode=args.compile_mode)
    pipeline = Pipeline(classifier, purifier, threat="adaptive", layout=layout).eval()
    pipeline.card = classifier.card
    counter = PassCounter(classifier, [networks["purifier"]] if purifier else [])
    resolved = resolve_attack("pgd", {"steps": args.steps}, eps=8 / 255, eps_l2=0.5)
    context = {"num_classes": classifier.card.num_classes, "seed": 0, "eot": EOT, "draws": SELECTION_DRAWS}
    attack = build_attack(resolved, pipeline, **context)
    rng = SampleRNG.from_seeds(range(len(labels)), device, engine=args.rng)
    rng = rng.compiled() if args.compile else rng
    run = lambda: run_attack(attack, resolved, images, labels, rng=rng, seed=0, precision=args.precision)  # noqa: E731
    if args.compile:
        run()  # compiles (not timed)
    calls = {name: Calls(module) for name, module in networks.items()}
    synchronize(device)
    tic = time.perf_counter()
    with counter.charge("audit"), timed_streams(type(rng)) as streams_seconds:
        run()
    synchronize(device)
    audit_seconds = time.perf_counter() - tic
    count = counter.take("audit")
    for hook in calls.values():
        hook.handle.remove()
    evaluations = {
        "classifier": (count.forward, count.backward),
        "purifier": (count.purifier, count.purifier_backward),
    }
    alone, row = 0.0, {}
    for name, module in networks.items():
        forwards, backwards = evaluations[name]
        seconds, largest = alone_seconds(module, calls[name], precision=args.precision)
        alone += seconds
        row[f"{name} evals (fwd/bwd)"] = f"{forwards}/{backwards}"
        row[f"{name} calls"] = len(calls[name].sizes)
        row[f"{name} largest call"] = calls[name].args[0].shape[0]
        row[f"{name} alone there, img/s fwd+bwd"] = round(largest, 1)
    row.update(
        {"audit s": round(audit_seconds, 2), "streams s": round(streams_seconds[0], 2), "alone s": round(alone, 2)}
    )
    return {**row, "efficiency": round(alone / audit_seconds, 3)}


def alone_seconds(network: nn.Module, calls: Calls, *, precision: str) -> tuple[float, float]:
    """The seconds ``network`` alone takes for the audit's calls (each distinct batch size timed forward, or
    forward and backward, in the precision the audit called it in, on the audit's inputs, times its calls), and its
    forward+backward images per second at the largest call in ``precision``."""
    largest = (calls.args[0].shape[0], True, precision)
    shapes = calls.shapes()
    seconds = {
        (size, backward, called): seconds_per_call(
            network, resized(calls.args, size), backward=backward, precision=called
        )
        for size, backward, called in [*shapes, *([largest] if largest not in shapes else [])]
    }
    return sum(times * seconds[shape] for shape, times in shapes.items()), largest[0] / seconds[largest]


def cases(args, device: torch.device) -> dict[str, Callable[[], tuple[nn.Module, nn.Module | None, str]]]:
    """The cases this device runs: name -> (classifier, purifier or None, data)."""
    vit = lambda: quickstart_vit(args.quick, device)  # noqa: E731

    def behind(case: str) -> Callable[[], tuple[nn.Module, nn.Module | None, str]]:
        return lambda: (vit(), random_purifier(case, [1, 32, 32], device, args.quick), "digits")

    out = {"vit": lambda: (vit(), None, "digits"), **{f"vit+{case}": behind(case) for case in PURIFIER_CASES}}
    if device.type == "cuda":
        out["unet-cifar"] = lambda: (*unet_cifar(device), str(DATA / "cifar10_head.npz"))
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--n", type=int, default=None, help="images per case (default 128, the CPU batch; 4 with --quick)"
    )
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default 10; 2 with --quick)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument(
        "--compile-mode",
        choices=["reduce-overhead", "max-autotune"],
        help="torch.compile's mode (implies --compile; reduce-overhead: CUDA graphs of each network evaluation)",
    )
    parser.add_argument("--layout", default="batched", choices=["batched", "looped"], help="how draws run")
    parser.add_argument("--rng", default="generator", choices=list(ENGINES), help="the random streams' engine")
    parser.add_argument("--cases", default=None, help="comma list (default: every case of the device)")
    parser.add_argument("--quick", action="store_true", help="4 images, 2 steps, short chains (CI)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--certify", action="store_true", help="also measure certification's draws per second")
    args = parser.parse_args(argv)
    args.compile = args.compile or args.compile_mode is not None
    args.n = args.n or (4 if args.quick else 128)
    args.steps = args.steps or (2 if args.quick else 10)
    device = torch.device(args.device)
    available = cases(args, device)
    wanted = args.cases.split(",") if args.cases else list(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)} on {device.type}; choose from {', '.join(available)}")
    rows = []
    for name in wanted:
        classifier, purifier, data = available[name]()
        dataset = load_dataset(data, split="test", limit=args.n, subset_seed=0)
        images, labels = dataset.images.float().to(device), dataset.labels.to(device)
        compiled = (args.compile_mode or "default") if args.compile else False
        settings = {"device": device_name(device), "precision": args.precision, "compile": compiled}
        measured = audit_case(classifier, purifier, images, labels, args)
        rows.append({"case": name, **settings, "layout": args.layout, "rng": args.rng, **measured})
        print(markdown_table(rows) + "\n", flush=True)  # the rows so far
    if args.certify:
        rows.append(certification_row(args, device))
        print(markdown_table([rows[-1]]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def certification_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Randomized smoothing through the quickstart ViT behind a default-size ddpm network: draws per second of the
    smoothed classifier against its two networks alone on the same batches, and seconds per certified sample."""
    from robaudit.certify.smoothing import OneShotDenoiser, SmoothedClassifier

    classifier = quickstart_vit(args.quick, device)
    torch.manual_seed(0)
    network = PURIFIERS.get("ddpm").meta["build"](recipe_for("ddpm", {}), [1, 32, 32]).to(device).eval()
    denoiser = OneShotDenoiser.matched(network, sigma=0.5)
    smoothed = SmoothedClassifier(classifier, sigma=0.5, num_classes=10, denoiser=denoiser, batch_size=256)
    draws, samples = (100, 2) if args.quick else (1000, 4)
    images = torch.rand(samples, 1, 32, 32, device=device)
    synchronize(device)
    started = time.perf_counter()
    smoothed.counts(images, list(range(samples)), draws=draws)
    synchronize(device)
    rate = samples * draws / (time.perf_counter() - started)
    batch = torch.rand(256, 1, 32, 32, device=device)
    alone = max(timed_rows(smoothed, batch, device) for _ in range(3))  # the fastest of three
    return {
        "case": "certify vit+ddpm (sigma 0.5)",
        "device": device_name(device),
        "draws_per_second": round(rate, 1),
        "networks_alone_rows_per_second": round(alone, 1),
        "efficiency": round(rate / alone, 3),
        "seconds_per_certified_sample": round(10_100 / rate, 2),
    }


def timed_rows(smoothed: Any, batch: torch.Tensor, device: torch.device) -> float:
    """Rows per second of the smoothed classifier's two networks alone (denoiser then classifier) on ``batch``."""
    noise = torch.randn_like(batch)
    with torch.no_grad():
        synchronize(device)
        started = time.perf_counter()
        smoothed.classifier(smoothed.denoiser(batch, noise, sigma=smoothed.sigma))
        synchronize(device)
    return len(batch) / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
