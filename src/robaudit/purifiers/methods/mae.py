"""Masked-autoencoder purification (MAEP, Lu & Chen 2025).

A ViT masked autoencoder (encoder and decoder from timm blocks) is pre-trained with masked-patch reconstruction at
mask ratio 0.5, then fine-tuned with a purification loss L1(P(x_adv), x) on PGD adversarial examples made against
the classifier, plus the reconstruction loss. At test time the mask ratio is 0: one forward pass reconstructs
every patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchattacks
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from robaudit.data import ImageSet
from robaudit.purifiers.base import PURIFIERS, Purifier
from robaudit.purifiers.training import fit
from robaudit.rng.seeding import derive_seed, isolated_global_rng


@dataclass
class MAERecipe:
    """Architecture and training of the masked autoencoder."""

    epochs_key: ClassVar[str] = "pretrain_epochs"  # what `robaudit train mae --epochs` sets
    pretrain_epochs: int = 30
    finetune_epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    grid: int = 4  # patches per side (4x4 = 16 tokens; small and fast for small images)
    embed_dim: int = 128
    depth: int = 4
    decoder_dim: int = 96
    decoder_depth: int = 2
    num_heads: int = 4
    mask_ratio: float = 0.5
    attack_eps: float = 8 / 255  # PGD (Linf) examples for the purification loss
    attack_steps: int = 5
    purification_weight: float = 1.0


def patch_size_for(image_size: int, grid: int) -> int:
    """The divisor of ``image_size`` closest to image_size / grid (a grid x grid layout of patches, about)."""
    divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
    return min(divisors, key=lambda d: (abs(d - image_size / grid), d))


class MaskedAutoencoder(nn.Module):
    """x (N, C, H, W) in [0, 1] -> reconstruction (N, C, H, W); ``mask_ratio`` of patches hidden from the encoder."""

    def __init__(self, recipe: MAERecipe, input_size: list[int]) -> None:
        super().__init__()
        channels, size, _ = input_size
        self.patch = patch_size_for(size, recipe.grid)
        self.channels = channels
        self.embed = PatchEmbed(img_size=size, patch_size=self.patch, in_chans=channels, embed_dim=recipe.embed_dim)
        tokens = self.embed.num_patches
        self.pos = nn.Parameter(torch.zeros(1, tokens, recipe.embed_dim))
        self.encoder = nn.Sequential(
            *[Block(recipe.embed_dim, recipe.num_heads, mlp_ratio=2.0) for _ in range(recipe.depth)]
        )
        self.encoder_norm = nn.LayerNorm(recipe.embed_dim)
        self.to_decoder = nn.Linear(recipe.embed_dim, recipe.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, recipe.decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, tokens, recipe.decoder_dim))
        self.decoder = nn.Sequential(
            *[Block(recipe.decoder_dim, recipe.num_heads, mlp_ratio=2.0) for _ in range(recipe.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(recipe.decoder_dim)
        self.to_pixels = nn.Linear(recipe.decoder_dim, self.patch * self.patch * channels)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.mask_ratio = recipe.mask_ratio

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C)."""
        n, c, h, w = images.shape
        p = self.patch
        x = images.reshape(n, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor, size: int) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        n, p, c = patches.shape[0], self.patch, self.channels
        g = size // p
        x = patches.reshape(n, g, g, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, g * p, g * p)

    def forward(
        self, images: torch.Tensor, *, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction (N, C, H, W) in [0, 1], mask (N, L) with 1 = hidden)."""
        tokens = self.embed(images * 2 - 1) + self.pos  # (N, L, D)
        n, length, _ = tokens.shape
        keep = length - int(round(mask_ratio * length))
        if keep < length:
            noise = torch.rand(n, length, generator=generator, device=generator.device).to(images.device)
            order = noise.argsort(dim=1)
            kept = order[:, :keep]
            tokens = tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        encoded = self.to_decoder(self.encoder_norm(self.encoder(tokens)))  # (N, keep, Dd)
        mask = torch.zeros(n, length, device=images.device)
        if keep < length:
            full = self.mask_token.expand(n, length, -1).clone()
            full = full.scatter(1, kept.unsqueeze(-1).expand(-1, -1, encoded.shape[-1]), encoded)
            mask = torch.ones(n, length, device=images.device).scatter(1, kept, 0.0)
        else:
            full = encoded
        decoded = self.to_pixels(self.decoder_norm(self.decoder(full + self.decoder_pos)))  # (N, L, p*p*C)
        reconstruction = (self.unpatchify(decoded, images.shape[-1]) + 1) / 2
        return reconstruction, mask

    def reconstruction_loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MSE on the hidden patches at the recipe's mask ratio."""
        reconstruction, mask = self(images, mask_ratio=self.mask_ratio, generator=generator)
        error = ((self.patchify(reconstruction) - self.patchify(images)) ** 2).mean(-1)  # (N, L)
        return (error * mask).sum() / mask.sum().clamp_min(1)


class MAEPurifier(Purifier):
    """One reconstruction pass with nothing masked: (N, C, H, W) in [0, 1] -> same shape, [0, 1]."""

    randomized = False
    differentiable = True

    def __init__(self, network: MaskedAutoencoder) -> None:
        super().__init__()
        self.network = network

    @property
    def evaluated_network(self) -> nn.Module:
        """The module called once per network evaluation: the masked autoencoder (one pass)."""
        return self.network

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        return "the masked autoencoder's single reconstruction pass (mask ratio 0)"

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify images (N, C, H, W) in [0, 1] (deterministic)."""
        return self.network(images, mask_ratio=0.0)[0].clamp(0, 1)


def train_mae(
    network: MaskedAutoencoder, train_set: ImageSet, *, recipe: MAERecipe, seed: int, device: str, classifier: nn.Module
) -> None:
    """Pre-train (masked reconstruction), then fine-tune with L1(P(x_adv), x) on PGD examples + reconstruction."""
    fit(
        network,
        train_set,
        lambda x, y, g: network.reconstruction_loss(x, g),
        epochs=recipe.pretrain_epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=seed,
        device=device,
        description="pre-train mae",
    )
    classifier = classifier.to(device).eval()
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    attack = torchattacks.PGD(
        classifier,
        eps=recipe.attack_eps,
        alpha=2.5 * recipe.attack_eps / recipe.attack_steps,
        steps=recipe.attack_steps,
        random_start=True,
    )
    calls = {"n": 0}

    def finetune_loss(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        with isolated_global_rng(derive_seed(seed, "mae-finetune-attack", calls["n"]), images.device):
            adversarial = attack(images, labels).detach()
        network.train()
        purified = network(adversarial, mask_ratio=0.0)[0]
        return recipe.purification_weight * F.l1_loss(purified, images) + network.reconstruction_loss(images, generator)

    fit(
        network,
        train_set,
        finetune_loss,
        epochs=recipe.finetune_epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr / 2,
        seed=seed,
        device=device,
        description="fine-tune mae (purification loss)",
    )
    for parameter in classifier.parameters():
        parameter.requires_grad_(True)


@PURIFIERS.register(
    "mae",
    description="MAEP: ViT masked autoencoder, fine-tuned with a purification loss; one pass at test time",
    recipe=MAERecipe,
    build=MaskedAutoencoder,
    train=train_mae,
    needs_classifier=True,
    tiny={
        "recipe": {"embed_dim": 16, "depth": 1, "decoder_dim": 16, "decoder_depth": 1, "num_heads": 2},
        "epochs": {"pretrain_epochs": 1, "finetune_epochs": 1, "attack_steps": 1},
    },
)
def mae(network: MaskedAutoencoder) -> MAEPurifier:
    """MAEP at test time: mask ratio 0, a single reconstruction pass."""
    return MAEPurifier(network)
