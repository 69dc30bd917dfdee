"""FFT convolution: correlation as a product of spectra, with ``torch.fft`` or ``scipy.fft``.

For the plain "valid" problem (after :func:`pad_input`) of an input Hp×Wp and a dilated kernel
Eh×Ew, the circular correlation over an F×F grid with F ≥ Hp agrees with the linear one at every
valid output (no index wraps), so F = ``next_fast_len(Hp)`` suffices. Per frequency the channel
sum is a small complex GEMM: Y[n, k] = Σ_c X[n, c] · conj(W[k, c]). The weight spectrum is made
in ``prepare``; strides subsample the stride-1 result, so FFT pays full price for them.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch
from torch.profiler import record_function

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    Prepared,
    device_reason,
    dtype_reason,
    pad_into,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["FFTScipyBackend", "FFTTorchBackend"]

_UNITS = 56
"""CPU tolerance in units of the dtype's rounding, set as GEMM_UNITS says. The FFT's error grows
with the logarithm of its size, the per-frequency sum's with the channels: 13 units at most on
the network suites (transforms of 8×8 to 240×240, channel sums of up to 2048) and 37 on a fuzzed
problem of a few dozen outputs; ten times the worst on the measured network layers is 83."""


def _geometry(spec: ConvSpec) -> tuple[int, int, int, int]:
    """(Hp, Wp, Fh, Fw): the padded input and the FFT grid."""
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    return hp, wp, scipy.fft.next_fast_len(hp, real=True), scipy.fft.next_fast_len(wp, real=True)


def _dilated(spec: ConvSpec, weight: torch.Tensor) -> torch.Tensor:
    """The kernel with dilation made explicit: (dh−1) zero rows between taps, likewise columns."""
    if spec.dh == spec.dw == 1:
        return weight
    eh, ew = (spec.kh - 1) * spec.dh + 1, (spec.kw - 1) * spec.dw + 1
    out = weight.new_zeros(*weight.shape[:2], eh, ew)
    out[:, :, :: spec.dh, :: spec.dw] = weight
    return out


class _FFTBase:
    dtypes = (torch.float32, torch.float64)

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, self.dtypes) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        if device != "cpu":
            return FLOAT_TOLERANCE[dtype]
        return _UNITS * unit_roundoff(dtype)

    @staticmethod
    def _params(spec: ConvSpec) -> dict[str, object]:
        hp, wp, fh, fw = _geometry(spec)
        return {"fft_size": [fh, fw], "padded_input": [hp, wp]}


class FFTTorchBackend(_FFTBase):
    name = "fft-torch"
    description = "FFT convolution with torch.fft (real FFTs, weight spectrum in prepare)"

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        _, _, fh, fw = _geometry(spec)
        n, g, kg, cg = spec.mb, spec.g, spec.oc // spec.g, spec.ic // spec.g
        with record_function("fft/filter_spectrum"):
            wf = torch.fft.rfft2(_dilated(spec, weight), s=(fh, fw))
            nf = wf.shape[-2] * wf.shape[-1]
            # (frequency·group, C/g, K/g): the right operands of one GEMM per frequency.
            wt = wf.conj().resolve_conj().reshape(g, kg, cg, nf).permute(3, 0, 2, 1)
            wt = wt.reshape(nf * g, cg, kg).contiguous()
        # Workspaces kept from call to call (fresh large buffers are paged in anew every
        # time); the zero border of ``xpad`` is the FFT's zero padding. Not re-entrant.
        real = {"dtype": weight.dtype, "device": weight.device}
        cplx = {"dtype": wf.dtype, "device": weight.device}
        xpad = torch.zeros(n, spec.ic, fh, fw, **real)
        xf = torch.empty(n, spec.ic, fh, fw // 2 + 1, **cplx)
        xt = torch.empty(nf, g, n, cg, **cplx)
        yt = torch.empty(nf * g, n, kg, **cplx)
        yf = torch.empty(n, g, kg, nf, **cplx)
        full = torch.empty(n, spec.oc, fh, fw, **real)
        rows = slice(0, (spec.oh - 1) * spec.sh + 1, spec.sh)
        cols = slice(0, (spec.ow - 1) * spec.sw + 1, spec.sw)

        def run(x: torch.Tensor) -> torch.Tensor:
            with record_function("fft/forward"):
                pad_into(spec, x, xpad)
                torch.fft.rfft2(xpad, out=xf)
            with record_function("fft/pointwise"):
                xt.copy_(xf.view(n, g, cg, nf).permute(3, 1, 0, 2))
                torch.bmm(xt.view(nf * g, n, cg), wt, out=yt)
                yf.copy_(yt.view(nf, g, n, kg).permute(2, 1, 3, 0))
            with record_function("fft/inverse"):
                torch.fft.irfft2(yf.view(n, spec.oc, fh, -1), s=(fh, fw), out=full)
                y = full[:, :, rows, cols]
            return y + bias.view(1, -1, 1, 1) if bias is not None else y.contiguous()

        return Prepared(run, f"fft {fh}x{fw}", self._params(spec))


class FFTScipyBackend(_FFTBase):
    """The FFTs are SciPy's (pocketfft); the per-frequency GEMMs go through torch's batched
    GEMM, as in ``fft-torch``, so the two backends differ in their FFT library alone (NumPy's
    ``matmul`` loops over thousands of small matrices one by one, at a third of the speed)."""

    name = "fft-scipy"
    description = "FFT convolution with scipy.fft on the CPU (workers = threads)"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        if device != "cpu":
            return "scipy.fft runs on the CPU only"
        return super().supports(spec, device, dtype)

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        _, _, fh, fw = _geometry(spec)
        n, g, kg, cg = spec.mb, spec.g, spec.oc // spec.g, spec.ic // spec.g
        workers = torch.get_num_threads()
        with record_function("fft/filter_spectrum"):
            wf = scipy.fft.rfft2(_dilated(spec, weight).numpy(), s=(fh, fw), workers=workers)
            nf = wf.shape[-2] * wf.shape[-1]
            wt = np.ascontiguousarray(wf.conj().reshape(g, kg, cg, nf).transpose(3, 0, 2, 1))
            wt = torch.from_numpy(wt.reshape(nf * g, cg, kg))
        # Workspaces kept from call to call, as for fft-torch. Not re-entrant.
        xpad = torch.zeros(n, spec.ic, fh, fw, dtype=weight.dtype)
        xt = np.empty((nf, g, n, cg), dtype=wf.dtype)
        yt = np.empty((nf, g, n, kg), dtype=wf.dtype)
        yf = np.empty((n, g, kg, nf), dtype=wf.dtype)
        xt_t = torch.from_numpy(xt).view(nf * g, n, cg)  # the same memory, seen by torch
        yt_t = torch.from_numpy(yt).view(nf * g, n, kg)
        b = None if bias is None else bias.numpy().reshape(1, -1, 1, 1)
        rows = slice(0, (spec.oh - 1) * spec.sh + 1, spec.sh)
        cols = slice(0, (spec.ow - 1) * spec.sw + 1, spec.sw)

        def run(x: torch.Tensor) -> torch.Tensor:
            with record_function("fft/forward"):
                pad_into(spec, x, xpad)
                xf = scipy.fft.rfft2(xpad.numpy(), workers=workers)
            with record_function("fft/pointwise"):
                np.copyto(xt, xf.reshape(n, g, cg, nf).transpose(3, 1, 0, 2))
                torch.bmm(xt_t, wt, out=yt_t)
                np.copyto(yf, yt.transpose(2, 1, 3, 0))
            with record_function("fft/inverse"):
                full = scipy.fft.irfft2(yf.reshape(n, spec.oc, fh, -1), s=(fh, fw), workers=workers)
                y = full[:, :, rows, cols]
            return torch.from_numpy(y + b if b is not None else np.ascontiguousarray(y))

        return Prepared(run, f"fft {fh}x{fw}", {**self._params(spec), "workers": workers})
