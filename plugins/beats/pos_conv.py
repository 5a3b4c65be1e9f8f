"""BEATs' convolutional positional embedding: weight-normalised grouped Conv1d + GELU.

The model defines it as a grouped convolution (kernel 128, padding 64, last output dropped). PyTorch's
grouped direct convolution reaches well under the matmul rate on CPU, so without autograd we evaluate the
same linear map with FFTs (overlap-save, fixed 256-point blocks): per frequency a small complex matmul
per group. It is exact up to float rounding (~1e-6 relative) and ~10x cheaper; with autograd on, the
plain convolution is used so the module stays trainable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 256     # FFT size of one overlap-save block; yields BLOCK - kernel + 1 outputs per block


class PosConv(nn.Module):
    """Parameters named as upstream's weight-normed conv (`bias`, `weight_g` (1, 1, K), `weight_v`)."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.dim, self.kernel, self.groups = dim, kernel, groups
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.weight_v, std=(4.0 / (kernel * dim)) ** 0.5)
        self._spectrum: tuple[tuple, torch.Tensor] | None = None

    def weight(self) -> torch.Tensor:
        """g * v / ||v||, the norm over output and input channels separately for each kernel tap."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, P, D) -> GELU(conv(x)) (B, P, D), to be added to x."""
        if torch.is_grad_enabled() or self.kernel >= BLOCK:
            y = self.direct(x)
        else:
            y = self.fft(x)
        return F.gelu(y)

    def direct(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv1d(x.transpose(1, 2), self.weight().to(x.dtype), self.bias.to(x.dtype),
                     padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:        # an even kernel gives one output too many
            y = y[..., :-1]
        return y.transpose(1, 2)

    def _weight_spectrum(self) -> torch.Tensor:
        """conj(FFT(kernel)) as (F, G, out, in), cached until the parameters change."""
        key = (self.weight_v._version, self.weight_g._version, self.weight_v.data_ptr(),
               self.weight_g.data_ptr(), self.weight_v.device)
        if self._spectrum is None or self._spectrum[0] != key:
            w = self.weight().float().detach()                              # (D, D/G, K)
            spec = torch.fft.rfft(w, n=BLOCK).conj()                        # (D, D/G, F)
            out_per_group = self.dim // self.groups
            spec = spec.view(self.groups, out_per_group, -1, spec.shape[-1]).permute(3, 0, 1, 2)
            self._spectrum = (key, spec.contiguous())
        return self._spectrum[1]

    def fft(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-correlation y[t] = sum_k w[k] x[t + k - K/2] by overlap-save FFT blocks."""
        batch, length, dim = x.shape
        step = BLOCK - self.kernel + 1
        blocks = -(-length // step)
        left = self.kernel // 2
        right = (blocks - 1) * step + BLOCK - left - length
        xp = F.pad(x.float().transpose(1, 2), (left, right))                # (B, D, L')
        segs = xp.unfold(2, BLOCK, step)                                    # (B, D, nb, BLOCK)
        spec = torch.fft.rfft(segs, dim=-1)                                 # (B, D, nb, F)
        n_freq = spec.shape[-1]
        per_group = dim // self.groups
        # (F, G, in, B * nb): one small complex matmul per frequency and group.
        s = spec.view(batch, self.groups, per_group, blocks, n_freq).permute(4, 1, 2, 0, 3)
        s = s.reshape(n_freq, self.groups, per_group, batch * blocks)
        y = torch.matmul(self._weight_spectrum(), s)                        # (F, G, out, B * nb)
        y = y.view(n_freq, dim, batch, blocks).permute(2, 1, 3, 0)          # (B, D, nb, F)
        y = torch.fft.irfft(y, n=BLOCK, dim=-1)[..., :step]                 # valid part of each block
        y = y.reshape(batch, dim, blocks * step)[..., :length].transpose(1, 2)
        return (y + self.bias.float()).to(x.dtype)
