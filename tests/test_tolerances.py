"""Every backend's tolerance tested as what it is: the bound that tells the backend's real error
from an error ten times larger.

For every registered backend and every dtype it accepts on the CPU, the relative L2 error
against the float64 reference is measured on the layers of the four network suites at
minibatch 1. The worst must lie within the tolerance (the backend is correct on real layers),
and ten times the worst must lie above it (a result ten times less accurate than the backend
really is would be caught). A tolerance loosened tenfold fails here, and so does one tightened
past what the backend really does.

Which layers: a backend's error on a layer is set by the layer's reduction — its length C/g·R·S,
its kernel R×S (and with it the Winograd tile; the FFT size grows with the input but its error
only with the logarithm of it) — not by how many outputs share that reduction, which only
average the error. So for each backend and dtype every distinct (C/g, R, S) among the layers it
accepts is measured once, on its layer of least work (fewest FLOPs, then the smallest input):
the 67 layers hold 27 distinct reductions, and VGG-16's costly 3×3 layers repeat those of
cheaper ResNet-50 and MobileNetV2 layers. FFT pays for its weight spectrum, oc·ic/g·Hp·(Wp/2 + 1)
complex numbers (for a 1×1 kernel, Hp·Wp/2 times the weights) over one tile of the whole image,
the tiling of largest error that ``prepare`` may pick and which is measured besides the one it
picked here, so for FFT the reductions whose layer's spectrum exceeds ``MAX_SPECTRUM`` are left
out: ResNet-50's 1×1 kernels over 128 to 2048 channels. The 22 kept span kernels of 1×1 to
11×11, transforms of 8×8 to 240×240, channel sums of up to 960 and reductions of up to 4608
terms. Threads: torch's default, as in the rest of the
suite.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from convbench import backends
from convbench.backends.fft import whole
from convbench.inputs import make_inputs
from convbench.measure.accuracy import compare
from convbench.spec import ConvSpec, parse
from convbench.suites import get_suite
from convbench.sweep import reference

NETWORKS = ("resnet50", "vgg16", "alexnet", "mobilenet_v2")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
LAYERS = [w.spec for name in NETWORKS for w in get_suite(name).workloads(1)]
MAX_SPECTRUM = 2**24  # complex entries: 256 MiB in float64
# A problem every backend accepts on a device where it runs (as backends.device_reason uses).
PROBE = parse("mb1ic1ih4oc1kh3")

Errors = dict[tuple[str, torch.dtype], list[tuple[str, float]]]


def _spectrum(spec: ConvSpec) -> int:
    """Entries of an FFT backend's weight spectrum over the padded input (its FFT grid is at
    least that large)."""
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    return spec.oc * (spec.ic // spec.g) * hp * (wp // 2 + 1)


def _work(spec: ConvSpec) -> tuple[int, int]:
    """How costly a layer is to measure: its FLOPs, then its input's size."""
    return spec.flops, spec.ic * spec.ih * spec.iw


def _chosen(backend: backends.Backend, dtype: torch.dtype) -> list[ConvSpec]:
    """One layer per distinct reduction (C/g, R, S) that ``backend`` accepts in ``dtype``, the
    one of least work; for FFT only those within ``MAX_SPECTRUM``."""
    cheapest: dict[tuple[int, int, int], ConvSpec] = {}
    for spec in LAYERS:
        if backend.supports(spec, "cpu", dtype):
            continue
        key = (spec.ic // spec.g, spec.kh, spec.kw)
        if key not in cheapest or _work(spec) < _work(cheapest[key]):
            cheapest[key] = spec
    return [
        spec for spec in cheapest.values()
        if not backend.name.startswith("fft") or _spectrum(spec) <= MAX_SPECTRUM
    ]  # fmt: skip


@pytest.fixture(scope="module")
def errors() -> Errors:
    """Per (backend, dtype), each chosen layer's relative L2 error; one reference per layer."""
    runs: dict[str, list[tuple[backends.Backend, torch.dtype]]] = defaultdict(list)
    for b in backends.all_backends():
        for dtype in DTYPES:
            for spec in _chosen(b, dtype):
                runs[spec.name].append((b, dtype))
    out: Errors = defaultdict(list)
    for spec in LAYERS:
        if spec.name not in runs:
            continue
        inputs = make_inputs(spec)
        ref = reference(spec, inputs)
        for b, dtype in runs[spec.name]:
            data = inputs.to("cpu", dtype)
            with torch.no_grad():
                y = b.prepare(spec, data.weight, data.bias)(data.x)
                err = compare(y, ref).rel_l2_error
                if b.name.startswith("fft"):
                    # prepare picks the fastest tiling, which differs from machine to machine:
                    # the tolerance must also hold for the one of largest error, one tile.
                    y = b.build(spec, whole(spec), data.weight, data.bias)(data.x)  # type: ignore[attr-defined]
                    err = max(err, compare(y, ref).rel_l2_error)
            out[b.name, dtype].append((spec.name, err))
    return out


CASES = [
    (b.name, dtype) for b in backends.all_backends() for dtype in DTYPES
    if b.supports(PROBE, "cpu", dtype) is None
]  # fmt: skip


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{_dtype_name(d)}" for n, d in CASES])
def test_tolerance_separates_real_error_from_ten_times_it(
    errors: Errors, name: str, dtype: torch.dtype
) -> None:
    what = f"{name} {_dtype_name(dtype)}"
    measured = errors[name, dtype]
    assert measured, f"{what}: none of the network layers accepted"
    layer, worst = max(measured, key=lambda m: m[1])
    tol = backends.get(name).tolerance(dtype, "cpu")
    assert worst <= tol, f"{what}: error {worst:.3g} on {layer} exceeds the tolerance {tol:.3g}"
    if worst == 0.0:
        pytest.skip(
            f"{what} reproduces the float64 reference bit for bit on all {len(measured)} "
            "layers: there is no error for its tolerance to separate"
        )
    assert 10 * worst > tol, (
        f"{what}: the tolerance {tol:.3g} is over ten times the worst error {worst:.3g} "
        f"({layer}): an error ten times the real one would pass"
    )
