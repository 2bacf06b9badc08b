"""VoiceDesign's velocity network: a small DiT over a sequence of length 1 (the release's ``dit_estimator``).

The noisy speaker embedding ``x [B, D]`` and the text condition ``c [B, C]`` are concatenated into one
position of ``D + C`` channels (release: 192 + 192 = 384, so there is no input projection). Each of the
``num_layers`` layers then applies

    time FiLM          x <- gain(t) * x + bias(t)           (t: sinusoid -> MLP)
    3 ConvNeXt blocks  depthwise conv, style-adaptive LayerNorm (gain and bias from c), Linear-GELU-Linear
    1 DiT block        adaLN-zero: LayerNorm, shift/scale/gate from c, self-attention and a conv FFN

and a linear head maps the ``D + C`` channels back to the velocity ``[B, D]``. Over one position the
attention is a projection of its value and the convolutions use only their centre taps; the layers are
kept as convolutions and attention anyway so the release's weights load one to one (``voice_design_official``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, channels: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of the flow time ``t [B]`` in [0, 1] -> ``[B, channels]`` (sin half, cos half)."""
    half = channels // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channels of ``x [B, C, T]`` without learned gain (the condition supplies it)."""
    return F.layer_norm(x.transpose(1, 2), (x.shape[1],), eps=eps).transpose(1, 2)


class StyleAdaptiveNorm(nn.Module):
    """LayerNorm whose gain and bias are predicted from the condition (starts as a plain LayerNorm)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.to_gain_bias = nn.Linear(cond_dim, 2 * channels)
        with torch.no_grad():  # gain 1, bias 0 at init: the block starts unconditioned
            self.to_gain_bias.bias[:channels].fill_(1.0)
            self.to_gain_bias.bias[channels:].zero_()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x [B, T, C]``, ``cond [B, cond_dim]``."""
        gain, bias = self.to_gain_bias(cond)[:, None].chunk(2, dim=-1)
        return gain * F.layer_norm(x, (x.shape[-1],), eps=1e-5) + bias


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, condition-adaptive norm, pointwise MLP, residual."""

    def __init__(self, channels: int, filter_size: int, cond_dim: int, kernel_size: int = 7):
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = StyleAdaptiveNorm(channels, cond_dim)
        self.up = nn.Linear(channels, filter_size)
        self.down = nn.Linear(filter_size, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.depthwise(x).transpose(1, 2), cond)
        return x + self.down(F.gelu(self.up(h))).transpose(1, 2)


class DiTBlock(nn.Module):
    """Self-attention and a conv feed-forward, each modulated by shift/scale/gate from the condition.

    adaLN-zero: the modulation's last layer starts at zero, so every gate is 0 and the block is the
    identity at init (DiT, Peebles & Xie 2023)."""

    def __init__(self, channels: int, num_heads: int, cond_dim: int, kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} attention heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.attn_out = nn.Linear(channels, channels)
        self.ffn_in = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.ffn_out = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.cond_in = nn.Linear(cond_dim, channels) if cond_dim != channels else nn.Identity()
        self.modulation = nn.Linear(channels, 6 * channels)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mod = self.modulation(F.silu(self.cond_in(cond)))[:, :, None]
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.chunk(6, dim=1)
        x = x + gate_a * self._attend(_layer_norm(x, 1e-6) * (1 + scale_a) + shift_a)
        h = _layer_norm(x, 1e-6) * (1 + scale_f) + shift_f
        h = self.ffn_out(self.dropout(F.gelu(self.ffn_in(h), approximate="tanh")))
        return x + gate_f * h

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        b, c, t = h.shape
        q, k, v = self.qkv(h.transpose(1, 2)).view(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, head_dim]
        return self.attn_out(out.transpose(1, 2).reshape(b, t, c)).transpose(1, 2)


class EstimatorLayer(nn.Module):
    """Time FiLM, then ``num_convnext`` ConvNeXt blocks and one DiT block, all conditioned on ``cond``."""

    def __init__(self, channels: int, filter_size: int, num_heads: int, cond_dim: int, dropout: float, num_convnext: int = 3):
        super().__init__()
        self.time_film = nn.Linear(channels, 2 * channels)
        self.convnext = nn.ModuleList(ConvNeXtBlock(channels, filter_size, cond_dim) for _ in range(num_convnext))
        self.dit = DiTBlock(channels, num_heads, cond_dim, dropout=dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        gain, bias = self.time_film(time)[:, :, None].chunk(2, dim=1)
        x = gain * x + bias
        for block in self.convnext:
            x = block(x, cond)
        return self.dit(x, cond)


class FlowEstimator(nn.Module):
    """The velocity ``v(x, t | c)`` of the conditional flow: ``[B, dim]``, ``[B]``, ``[B, cond_dim]`` -> ``[B, dim]``.

    Args:
        dim: the generated vector's size (speaker embedding: 192).
        cond_dim: the condition's size (release: 192, the text projection's output).
        filter_size: width of the ConvNeXt MLPs and of the time MLP (release 512).
        num_layers: estimator layers (release 4).
        num_heads: attention heads of the DiT blocks (release 4).
        dropout: dropout inside the DiT feed-forward (release 0.01).
    """

    def __init__(self, dim: int, cond_dim: int, filter_size: int = 512, num_layers: int = 4, num_heads: int = 4,
                 dropout: float = 0.01):  # fmt: skip
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.channels = channels = dim + cond_dim  # x and c side by side: the release's "hidden 384"
        if channels % 2:
            raise ValueError(f"dim + cond_dim must be even (the time sinusoid has sin and cos halves), got {channels}")
        self.time_mlp = nn.Sequential(nn.Linear(channels, filter_size), nn.SiLU(), nn.Linear(filter_size, channels))
        self.layers = nn.ModuleList(
            EstimatorLayer(channels, filter_size, num_heads, cond_dim, dropout) for _ in range(num_layers)
        )
        self.head = nn.Linear(channels, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)
        h = torch.cat([x, cond], dim=1)[:, :, None]  # one position, D + C channels
        time = self.time_mlp(timestep_embedding(t, self.channels).to(x.dtype))
        for layer in self.layers:
            h = layer(h, cond, time)
        return self.head(h[:, :, 0])
