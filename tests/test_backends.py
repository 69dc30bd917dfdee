"""The backend registry and the torch backend, against the float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import check

from convbench import backends
from convbench.backends.base import Prepared
from convbench.inputs import make_inputs
from convbench.spec import parse
from convbench.sweep import reference


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
    assert check(spec, "torch", "cpu", torch.float32) is not None


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
