"""A smoothed classifier g(x): the class a base classifier returns most often on ``x + sigma * noise``, after a
diffusion model's one-shot denoising at the matched step when there is one (Carlini et al. 2023), or on the noisy
image itself (Cohen et al. 2019: only a classifier trained on noise certifies anything this way).

Draws run in the batch dimension: each call classifies rows of (sample, draw) pairs. Every sample's noise comes in
fixed blocks of ``DRAW_BLOCK`` draws, each block from a generator seeded by (the sample's stream, the block), so the
counts are the same whatever the batch size or the number of processes. Sequential CERTIFY and PREDICT
(``certify.sequential``) draw the same blocks in the same order, look by look, and a sample whose evidence suffices
leaves the calls to the samples still drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robaudit.certify.betting import BettingTrackers, trackers_for
from robaudit.certify.bounds import Certificate, certify_from_counts, predict_from_counts, top_class
from robaudit.certify.sequential import CertifyTrackers, Looks, PredictTrackers, StoppingRule
from robaudit.certify.timestep import diffused, matched_timestep
from robaudit.rng.seeding import derive_seed, generator

DRAW_BLOCK = 50  # draws per noise block: the unit of seeding (never of batching)
Trackers = CertifyTrackers | BettingTrackers | PredictTrackers


@dataclass(frozen=True)
class OneShotDenoiser:
    """A diffusion network's one-shot x0 estimate at the step matched to ``sigma``: (N, C, H, W) noisy images in
    the model's range -> [0, 1] images. ``network`` follows ``purifiers.diffusion.DDPMNetwork`` (``alphas_cumprod``,
    ``noise_predictor``, ``predict_x0``), whose value range is [-1, 1]."""

    network: nn.Module
    timestep: int

    @classmethod
    def matched(cls, network: nn.Module, *, sigma: float) -> OneShotDenoiser:
        """The denoiser at the step whose noise level matches ``sigma`` on [0, 1] images (doubled in [-1, 1])."""
        return cls(network, matched_timestep(network.alphas_cumprod, sigma, value_range="[-1, 1]"))

    @property
    def abar(self) -> float:
        """The schedule's cumulative alpha at the matched step."""
        return float(self.network.alphas_cumprod[self.timestep])

    def __call__(self, images: torch.Tensor, noise: torch.Tensor, *, sigma: float) -> torch.Tensor:
        """[0, 1] ``images`` (R, C, H, W) plus ``sigma * noise``, diffused to the matched step and denoised."""
        x_t = diffused(images, noise, sigma=sigma, abar=self.abar, value_range="[-1, 1]")
        steps = torch.full((len(x_t),), self.timestep, device=x_t.device, dtype=torch.long)
        predicted = self.network.noise_predictor(x_t, steps)
        return (self.network.predict_x0(x_t, self.timestep, predicted) + 1) / 2


@dataclass
class SmoothedClassifier:
    """g(x) = argmax_c P(f(denoise(x + sigma * noise)) = c) of a classifier ``f`` ((R, C, H, W) in [0, 1] ->
    logits (R, K)), estimated by Monte Carlo draws; ``denoiser`` None: f sees the noisy image itself, outside [0, 1]
    where the noise takes it (as Cohen et al. certify)."""

    classifier: nn.Module
    sigma: float
    num_classes: int
    denoiser: OneShotDenoiser | None = None
    batch_size: int = 256  # rows (sample, draw) per call: changes no count

    def logits(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(R, K) logits of the base classifier on ``images`` (R, C, H, W) under ``noise`` (R, C, H, W), denoised
        when there is a denoiser (differentiable: SmoothAdv's gradients go through it)."""
        if self.denoiser is not None:
            seen = self.denoiser(images, noise, sigma=self.sigma)
        else:
            seen = images + self.sigma * noise  # not clipped: Cohen et al.'s smoothing, f sees the noisy image
        return self.classifier(seen)

    @torch.no_grad()
    def predictions(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(R,) classes of the base classifier on ``images`` (R, C, H, W) under ``noise`` (R, C, H, W)."""
        return self.logits(images, noise).argmax(1)

    def counts(self, images: torch.Tensor, seeds: Sequence[int], *, draws: int) -> torch.Tensor:
        """(N, K) votes of ``draws`` noise draws per sample; sample i's noise from its stream ``seeds[i]``."""
        return self.votes_of(self.classes_between(images, seeds, [(0, draws)] * len(images), draws=draws))

    def votes_of(self, classes: torch.Tensor) -> torch.Tensor:
        """(N, K) votes of the classes (N, L) the draws returned."""
        votes = torch.zeros(len(classes), self.num_classes, dtype=torch.long)
        return votes.scatter_add_(1, classes, torch.ones_like(classes))

    def classes_between(
        self, images: torch.Tensor, seeds: Sequence[int], spans: Sequence[tuple[int, int]], *, draws: int
    ) -> torch.Tensor:
        """(N, L) the classes of sample i's draws ``spans[i]`` = [start, stop) of its ``draws``, in draw order (every
        span of one length L). A draw is row ``d % DRAW_BLOCK`` of its sample's block
        ``d // DRAW_BLOCK``; the draws of every sample run together, at most ``batch_size`` rows per call, so the
        samples still drawing fill the calls."""
        jobs = [(i, *piece) for i, span in enumerate(spans) for piece in block_pieces(*span)]
        length = max((stop - start for start, stop in spans), default=0)
        classes = torch.zeros(len(images), length, dtype=torch.long)
        filled = [0] * len(images)
        for chunk in row_chunks(jobs, self.batch_size):
            noise = [block_noise(seeds[i], block, images.shape[1:], draws=draws)[lo:hi] for i, block, lo, hi in chunk]
            owners = torch.cat([torch.full((len(z),), i) for (i, *_), z in zip(chunk, noise, strict=True)])
            found = self.predictions(images[owners.to(images.device)], torch.cat(noise).to(images.device)).cpu()
            sizes = [hi - lo for *_, lo, hi in chunk]
            for (i, *_), part in zip(chunk, found.split(sizes), strict=True):
                classes[i, filled[i] : filled[i] + len(part)] = part
                filled[i] += len(part)
        return classes

    def run_looks(self, images: torch.Tensor, seeds: Sequence[int], trackers: Trackers) -> None:
        """Draw for every sample whose tracker has not stopped, look by look (``trackers.looks``): the draws up to the
        next look for all of them at once, then the trackers read them (in draw order) and the votes so far; a
        stopped sample leaves."""
        totals = torch.zeros(len(images), self.num_classes, dtype=torch.long)
        active = np.array([i for i, reason in enumerate(trackers.reason) if not reason], dtype=int)
        done, looks = 0, trackers.looks
        for look, size in enumerate(looks.sizes()):
            if not len(active):
                return
            spans = [(done, size)] * len(active)
            new = self.classes_between(images[active], [seeds[i] for i in active], spans, draws=looks.n_max)
            totals[active] += self.votes_of(new)
            stopped = trackers.look(look, active, totals[active].numpy(), size, new.numpy())
            active, done = active[~stopped], size

    def certify(
        self, images: torch.Tensor, seeds: Sequence[int], *, n0: int, n: int, alpha: float
    ) -> list[Certificate]:
        """Cohen et al.'s CERTIFY per sample: ``n0`` selection draws, ``n`` estimation draws from streams apart."""
        selection = self.counts(images, [derive_seed(s, "selection") for s in seeds], draws=n0)
        estimation = self.counts(images, [derive_seed(s, "estimation") for s in seeds], draws=n)
        return [
            certify_from_counts(sel.tolist(), est.tolist(), sigma=self.sigma, alpha=alpha)
            for sel, est in zip(selection, estimation, strict=True)
        ]

    def certify_sequential(
        self,
        images: torch.Tensor,
        seeds: Sequence[int],
        *,
        n0: int,
        rule: StoppingRule,
        labels: Sequence[int] | None = None,
    ) -> list[Certificate]:
        """Sequential CERTIFY per sample (``certify.sequential``): ``n0`` selection draws choose the class, then
        estimation draws (the same stream as ``certify``'s, block for block) until ``rule`` stops the sample. With
        ``labels``, a sample whose class is not its label draws no estimation: it cannot count as certified."""
        selection = self.counts(images, [derive_seed(s, "selection") for s in seeds], draws=n0)
        guesses = [top_class(votes.tolist()) for votes in selection]
        prior = ([int(votes[guess]) for votes, guess in zip(selection, guesses, strict=True)], n0)
        trackers = trackers_for(rule, guesses, sigma=self.sigma, prior=prior)
        for sample, label in enumerate(labels or []):
            trackers.reason[sample] = "wrong class" if trackers.guesses[sample] != label else ""
        self.run_looks(images, [derive_seed(s, "estimation") for s in seeds], trackers)
        return trackers.certificates()

    def predict(self, images: torch.Tensor, seeds: Sequence[int], *, n: int, alpha: float) -> list[int]:
        """Cohen et al.'s PREDICT per sample over ``n`` draws: a class, or ``bounds.ABSTAIN``."""
        votes = self.counts(images, [derive_seed(s, "predict") for s in seeds], draws=n)
        return [predict_from_counts(row.tolist(), alpha=alpha) for row in votes]

    def predict_sequential(self, images: torch.Tensor, seeds: Sequence[int], *, looks: Looks) -> PredictTrackers:
        """Sequential PREDICT per sample (``certify.sequential.PredictTrackers``) on ``predict``'s stream: each answer
        (``answers``) and the draws it took (``draws``)."""
        trackers = PredictTrackers(len(images), looks)
        self.run_looks(images, [derive_seed(s, "predict") for s in seeds], trackers)
        return trackers


def block_pieces(start: int, stop: int) -> list[tuple[int, int, int]]:
    """The draws [start, stop) of a sample as (block, first row, end row) pieces of its ``DRAW_BLOCK`` blocks."""
    pieces = []
    for block in range(start // DRAW_BLOCK, -(-stop // DRAW_BLOCK)):
        first = block * DRAW_BLOCK
        pieces.append((block, max(start, first) - first, min(stop, first + DRAW_BLOCK) - first))
    return pieces


def row_chunks(jobs: list[tuple[int, int, int, int]], rows: int) -> list[list[tuple[int, int, int, int]]]:
    """``jobs`` (sample, block, first row, end row) in order, cut into calls of at most ``rows`` rows (a job of more
    rows alone)."""
    chunks, current, size = [], [], 0
    for job in jobs:
        length = job[3] - job[2]
        if current and size + length > rows:
            chunks.append(current)
            current, size = [], 0
        current.append(job)
        size += length
    return [*chunks, current] if current else chunks


def block_noise_rows(block: int, draws: int) -> range:
    """The draws of block ``block`` among ``draws`` (the last block may be short)."""
    return range(block * DRAW_BLOCK, min(draws, (block + 1) * DRAW_BLOCK))


def block_noise(seed: int, block: int, shape: torch.Size, *, draws: int) -> torch.Tensor:
    """(B, *shape) standard normal noise of one block of a sample's draws, from its own seeded generator."""
    rows = len(block_noise_rows(block, draws))
    return torch.randn((rows, *shape), generator=generator(derive_seed(seed, "block", block)))
