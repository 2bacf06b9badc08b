"""Conditional flow matching for vectors: the training loss and the guided Euler sampler.

The path from noise ``z`` to data ``x1`` is the straight line of Lipman et al. (2023) with a small
``sigma_min``: ``y_t = (1 - (1 - sigma_min) t) z + t x1``, whose velocity is ``u = x1 - (1 - sigma_min) z``.
The network learns ``v(y_t, t | c) ~ u`` with a mean squared error. As in the VITA-QinYu release (and
Matcha-TTS / CosyVoice), ``t`` is drawn uniformly and warped by ``1 - cos(pi t / 2)``, which puts more
training (and sampling steps) near the noise end, and the condition is zeroed for a share of the samples
so that one network also knows the unconditional velocity (classifier-free guidance).

Sampling integrates ``dx/dt = v`` from ``x_0 = temperature * z`` with Euler steps on the same cosine grid;
with guidance ``w`` the velocity is ``w v(x, t | c) - (w - 1) v(x, t | 0)`` (release: w = 1.7).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t, cond) -> v


def cosine_time(t: torch.Tensor) -> torch.Tensor:
    """The release's time warp ``1 - cos(pi t / 2)``: 0 -> 0, 1 -> 1, small steps near the noise."""
    return 1 - torch.cos(t * 0.5 * math.pi)


def flow_matching_loss(
    estimator: Velocity, x1: torch.Tensor, cond: torch.Tensor, sigma_min: float = 1e-6, cond_drop: float = 0.2
) -> torch.Tensor:
    """MSE between the predicted and the true velocity at a random time of the noise-to-data path.

    ``x1 [B, D]`` are data vectors, ``cond [B, C]`` their conditions; ``cond_drop`` is the share of
    samples whose condition is zeroed (the release: 0.2). The release's YAML says ``l1``, its code
    computes this MSE; the code is followed. Randomness comes from torch's global generator.
    """
    b = x1.shape[0]
    t = cosine_time(torch.rand(b, 1, device=x1.device, dtype=x1.dtype))
    z = torch.randn_like(x1)
    y = (1 - (1 - sigma_min) * t) * z + t * x1
    u = x1 - (1 - sigma_min) * z
    if cond_drop > 0:
        keep = (torch.rand(b, 1, device=x1.device) >= cond_drop).to(cond.dtype)
        cond = cond * keep
    return F.mse_loss(estimator(y, t[:, 0], cond), u)


def guided_velocity(estimator: Velocity, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """``w v(x|c) - (w-1) v(x|0)``; ``guidance`` 1.0 is the conditional velocity alone (one network call),
    0.0 the unconditional one. Both calls go through the network as one batch."""
    if guidance == 1.0:
        return estimator(x, t, cond)
    t = t.reshape(-1).expand(x.shape[0])
    both = estimator(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
    v_cond, v_uncond = both.chunk(2)
    return guidance * v_cond - (guidance - 1.0) * v_uncond


@torch.no_grad()
def euler_sample(
    estimator: Velocity,
    cond: torch.Tensor,
    dim: int,
    steps: int = 20,
    guidance: float = 1.7,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    trajectory: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate the guided flow from noise to data: ``cond [B, C]`` -> vectors ``[B, dim]``.

    Args:
        estimator: the velocity network ``(x, t, cond) -> v``.
        cond: the conditions (zeros: unconditional samples).
        dim: the vectors' size.
        steps: Euler steps on the cosine grid ``1 - cos(pi/2 * k/steps)`` (release: 20).
        guidance: classifier-free guidance weight ``w`` (release: 1.7; 1.0 = none).
        temperature: scale of the starting noise (release: 1.0).
        generator: torch generator of the starting noise (a fixed seed gives the same vectors).
        noise: the starting noise ``[B, dim]`` itself, instead of drawing it.
        trajectory: if given, every intermediate ``x`` (steps + 1 tensors, noise first) is appended to it.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    b = cond.shape[0]
    if noise is None:
        noise = torch.randn(b, dim, generator=generator, device="cpu" if generator is None else generator.device)
    x = noise.to(device=cond.device, dtype=cond.dtype) * temperature
    grid = cosine_time(torch.linspace(0, 1, steps + 1, device=cond.device, dtype=cond.dtype))
    if trajectory is not None:
        trajectory.append(x.clone())
    for k in range(steps):
        t = grid[k].expand(b)
        x = x + (grid[k + 1] - grid[k]) * guided_velocity(estimator, x, t, cond, guidance)
        if trajectory is not None:
            trajectory.append(x.clone())
    return x
