"""The backend registry and the torch backend, against the float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convbench import backends
from convbench.backends.base import Prepared
from convbench.inputs import make_inputs
from convbench.measure.accuracy import compare
from convbench.spec import ConvSpec, parse
from convbench.suites import SUITES, fuzz
from convbench.sweep import reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _check(spec: ConvSpec, device: str, dtype: torch.dtype) -> float:
    b = backends.get("torch")
    inputs = make_inputs(spec, seed=3)
    data = inputs.to(device, dtype)
    fn = b.prepare(spec, data.weight, data.bias)
    y = fn(data.x)
    assert y.shape == spec.output_shape and y.dtype == dtype and y.device.type == device
    err = compare(y, reference(spec, inputs)).rel_l2_error
    assert err <= b.tolerance(dtype, device), (spec, err)
    return err


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("workload", SUITES["smoke"].workloads(), ids=lambda w: w.spec.name)
def test_torch_backend_smoke(workload, device: str, dtype: torch.dtype) -> None:
    _check(workload.spec, device, dtype)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_torch_backend_fuzzed(seed: int) -> None:
    (spec,) = fuzz(1, seed, max_flops=2e7)
    _check(spec, "cpu", torch.float32)


def test_reference_matches_the_definition() -> None:
    """The float64 reference against a loop over the definition of cross-correlation."""
    spec = parse("mb1g2ic4ih5iw6oc2oh4ow3kh2kw3sh1sw2ph1pw1dh1dw0")
    inp = make_inputs(spec, seed=5)
    x = F.pad(inp.x, (spec.pw, spec.pw_r, spec.ph, spec.ph_r))
    want = torch.zeros(spec.output_shape, dtype=torch.float64)
    cg, kg = spec.ic // spec.g, spec.oc // spec.g
    for k in range(spec.oc):
        grp = k // kg
        for oy in range(spec.oh):
            for ox in range(spec.ow):
                acc = inp.bias[k].item()
                for c in range(cg):
                    for r in range(spec.kh):
                        for s in range(spec.kw):
                            acc += (
                                x[
                                    0,
                                    grp * cg + c,
                                    oy * spec.sh + r * spec.dh,
                                    ox * spec.sw + s * spec.dw,
                                ].item()
                                * inp.weight[k, c, r, s].item()
                            )
                want[0, k, oy, ox] = acc
    torch.testing.assert_close(reference(spec, inp), want, rtol=1e-12, atol=1e-12)


def test_negative_padding_crops() -> None:
    spec = parse("mb1ic2ih10oc3oh4kh3")
    assert spec.ph == -2 and spec.ph_r == -2
    _check(spec, "cpu", torch.float32)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_algorithm_is_recorded() -> None:
    """A batched float32 problem goes to oneDNN; float64 (what the reference uses) to torch's
    own im2col, whatever the shape."""
    spec = parse("mb4ic8ih16oc8kh3ph1")
    b = backends.get("torch")
    for dtype, path in ((torch.float32, "Mkldnn"), (torch.float64, "Slow2d")):
        inp = make_inputs(spec).to("cpu", dtype)
        fn = b.prepare(spec, inp.weight, inp.bias)
        assert isinstance(fn, Prepared)
        assert fn.algorithm == path


def test_supports_reasons() -> None:
    b = backends.get("torch")
    spec = parse("mb1ic1ih4oc1kh3")
    assert b.supports(spec, "cpu", torch.float32) is None
    assert "int32 is not supported" in (b.supports(spec, "cpu", torch.int32) or "")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in (b.supports(spec, "cuda", torch.float32) or "")


def test_registry(registry) -> None:
    assert "torch" in backends.names()
    with pytest.raises(KeyError, match="unknown backend"):
        backends.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        backends.register(backends.get("torch"))
    with pytest.raises(TypeError):
        backends.register(object())  # type: ignore[arg-type]
