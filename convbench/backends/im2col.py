"""Unfold + GEMM (``im2col``): columns of C/g·R·S entries per output pixel, then GEMM.

It sees the plain "valid" problem that :func:`pad_input` makes (padding modes, asymmetric and
negative padding done once, up front) and handles groups as a batched GEMM over groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import torch

from convbench.backends.base import (
    Block,
    Candidate,
    Prepared,
    fastest,
    has_onednn_matmul,
    onednn_linear,
    pad_input,
    pad_into,
    stage,
    tile_blocks,
    tuning_input,
)
from convbench.backends.direct import DirectFamily, add_bias
from convbench.spec import ConvSpec

__all__ = ["Im2colBackend"]

ONEDNN_POINTWISE = "all images, channels-last, oneDNN"
"""The label of the 1×1 form whose GEMM is oneDNN's matmul (see ``Im2colBackend._pointwise``)."""
PER_THREAD = " per thread"
"""The suffix of an unfolded candidate whose blocks go one per thread (``Im2colBackend._nhwc``)."""

Term = tuple[torch.Tensor, torch.Tensor]
"""One product of a sum of GEMMs: weights and the columns they multiply."""


def _like(weight: torch.Tensor) -> dict:
    """Where and in what dtype workspaces for ``weight``'s problem are made."""
    return {"dtype": weight.dtype, "device": weight.device}


def _gemm_calls(shapes: Iterable[tuple[int, int, int, int]]) -> list[list[int]]:
    """``[m, k, n, count, batch]`` for each distinct [m × k]·[k × n] product among ``shapes``
    ((m, k, n, batch), one entry per product: a product batched over groups or images is one
    per group or image), made ``batch`` at a time by one batched call, in order of first
    appearance: what a form's products amount to, recorded in its params so that its GEMMs
    can be timed alone as it makes them (``scripts/algorithm_targets.py``): eight [64 × 64]·[64
    × 3136] products, ResNet-50's res2a_branch2a at minibatch 8, ran 1.12–1.44× faster as one
    batched call than as eight (six rounds of 50 calls each, 2 threads)."""
    return [[m, k, n, count, batch] for (m, k, n, batch), count in Counter(shapes).items()]


def _phase_grid(spec: ConvSpec) -> tuple[int, int, int]:
    """The views' grid: the rows and columns of each stride phase of the padded input, and
    the index, plus one, of the last output pixel on the (image, row, column) grid of
    phases: the views' GEMMs compute pixels 0 to that, the wasted columns included."""
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    hq, wq = -(-hp // spec.sh), -(-wp // spec.sw)
    return hq, wq, (spec.mb - 1) * hq * wq + (spec.oh - 1) * wq + spec.ow


class Im2colBackend(DirectFamily):
    """Columns (C/g·R·S entries per output pixel), then GEMM — the columns either copied
    (unfolded) or read in place as views of the padded input.

    Unfolded, channels innermost (NHWC): the padded input is written once into a
    channels-last buffer kept from call to call, the unfolding copies whole channel vectors,
    and each GEMM, [pixels × C·R·S]·[C·R·S × K], yields the output in channels-last order,
    returned as an NCHW view (torch's own channels-last layout). The columns are made for a
    block of output pixels at a time (several images, or rows of one), sized so that a block's
    columns are still in cache when its GEMM reads them, yet long enough for the GEMM. The
    GEMM is ``torch.mm`` (BLAS: MKL in torch's x86 builds) or, with one group in float32,
    oneDNN's matmul on weights packed once (:func:`onednn_linear`), which ran the unfolded
    form 1.12–1.24× faster on ResNet-50's 3×3 layers (0.82 against 0.72× torch at 256
    channels of 14×14, minibatch 8; 0.71–0.77 against 0.61–0.67× at 128 of 28×28; 0.85–0.88
    against 0.71–0.72× at minibatch 1; all block sizes, one run each) and gained nothing on
    the 7×7 stem (0.59–0.67 against 0.61–0.67× at minibatch 1, 0.54–0.59 against 0.61–0.64× at
    8): prepare times both.

    As views (:meth:`_views`): with the padded input laid out (C, N, H, W) and the outputs
    computed on its grid, the columns of kernel tap (r, s) for output pixel p are the input at
    p + r·W + s — the whole column matrix is R·S overlapping windows of that buffer, so its
    GEMM is R·S GEMMs of [K × C/g]·[C/g × pixels], accumulated, and nothing is copied but the
    padding. A stride splits the input into its stride phases (one copy of it) so that each
    tap again reads one phase at a fixed offset. The price: W − OW wasted output columns per
    row (3 % at 56×56, 14 % at 14×14, 29 % at 7×7) and GEMMs whose inner dimension is only
    C/g; the output comes back as a (C, N, H, W)-strided view.

    Cost model: the unfolding writes R·S·C/g numbers per output pixel (R·S times the input),
    and its GEMM does 2·K·C·R·S/g flops per pixel at a rate that falls for narrow products
    (K or C·R·S of a few dozen) and for short ones. The views copy nothing, but their GEMMs
    run at the rate of an inner dimension C/g with the output read and written R·S times, so
    they pay where the unfolding is dear next to the GEMM — large images with few channels
    (64 channels at 56×56, minibatch 8: 0.57× torch unfolded, 0.72–0.75× as views; 128 at
    28×28: 0.66× and 0.79×, each pair measured in one run) — and lose where images are small
    and channels many (512 at 7×7, minibatch 8: 0.85× unfolded, 0.54× as views), or the
    kernel is large and strided (ResNet-50's 7×7 stem on 3 channels: 49 GEMMs of inner
    dimension 3, 0.25× against 0.54×); even 1 to 8 channels with a small kernel run faster as
    views (these figures before the oneDNN GEMM). prepare times unfolded blocks of about
    2048, 8192 and 32768 pixels (by each GEMM library) and the views
    in runs of 4096 pixels (the best of 2048 to 8192 at 64 to 512 channels; a run's inputs and
    outputs then stay in the cores' L2) — :func:`fastest`; in float16 and bfloat16 only the
    unfolded blocks. Fewer than 2048 pixels never won here (128 to 1024 tried again with
    oneDNN's matmul: no faster on 3×3 layers of 64 to 256 channels or on the stem), nor did
    ``F.unfold``'s [C·R·S × pixels] with the transposed GEMM, nor columns unfolded along the
    width only (S·C/g a pixel, R products over row views: 0.65–0.77× torch against the views'
    0.77× on 64 channels of 56², minibatch 8), nor the views channels-last (a product per tap
    over row offsets, by MKL or by oneDNN's matmul adding into the sum: 0.41–0.74× against
    0.78× there), nor a compiled loop for the unfolding (the stem's runs of 21 numbers: no
    faster than torch's copy, which writes them at about 27 GB/s). A 1×1 problem needs no
    columns: they are the padded input itself (subsampled by the stride), multiplied as it lies.

    Half the L2 (a Zen 3, 512 KB a core) did not make smaller pieces win either: on the stem
    at minibatch 8, unfolded blocks of 512 to 8192 pixels ran 0.33–0.57× torch by either
    library and the views 0.12–0.20×; on 64 channels of 56² at minibatch 1, blocks of 1024 to
    3136 pixels and views of 1024 to 4096 all ran 0.65–0.78×, within the rounds' spread (each
    set in one run). There the copy bounds the stem: on one image its padding took 0.14 ms, its
    unfolding 0.52 ms (7.4 MB at 14 GB/s; a Numba loop wrote them at 8.9 GB/s) and its oneDNN
    GEMM 1.63 ms, 2.29 together and 2.47 as one call, where torch's whole convolution took
    1.65–1.76 ms: the GEMM alone is about as fast as it.

    Per thread: with more than one thread and more than one block, prepare also times the
    blocks shared out among torch's threads, each thread unfolding and multiplying its own,
    one after another, into columns of its own, its GEMM on that thread alone (oneDNN's own
    GEMM convolution works so), in blocks of about 512 and 2048 pixels (``PER_THREAD_ROWS``)
    by each library. A block's columns then stay in its core's cache from its unfolding to its
    product, which all threads at once split between them one way for the copy and another
    for the GEMM. The copies gain nothing by it (the stem's, four blocks of 28 rows: 0.55–0.59
    ms on one thread, 0.48–0.53 on two, 1.0–1.2 for twice as many on two apart), the products'
    traffic does. On the Zen 3 (``scripts/algorithm_targets.py --family im2col``, one run before and
    one after): res2a_branch2b (64 channels, 56²) from 0.67× torch to 0.84× at minibatch 8
    (504-pixel blocks), 0.75× to 0.79× at 1; the stem from 0.61× to 0.65× at 8 and 0.47× to
    0.53× at 1 (2016 pixels). Timed alone in alternating rounds, the stem's per-thread blocks
    ran 0.68–0.69× torch at minibatch 8 where the blocks all threads make ran 0.47–0.57× (two
    runs), and res2a_branch2b's 0.84–0.92× against 0.70×. In a second run on the same host,
    whose speed swung threefold from one second to the next (torch's stem at minibatch 1 took
    2.2 or 6.5 ms), ``prepare`` kept the shared blocks for those two layers at minibatch 8
    (0.51× and 0.71×) and the per-thread ones for res3b_branch2b to res4b_branch2b.
    """

    name = "im2col"
    description = "columns (unfolded channels-last, or views of the input) + GEMM, timed in prepare"
    # Pixels per GEMM the unfolded candidates aim for.
    TARGET_ROWS = (2048, 8192, 32768)
    # Pixels per block where each thread unfolds and multiplies blocks of its own.
    PER_THREAD_ROWS = (512, 2048)
    # Output pixels per run of the views' GEMMs.
    VIEW_PIXELS = 4096

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        if spec.kh == spec.kw == 1:
            return self._prepare_pointwise(spec, weight, bias)
        threads = torch.get_num_threads()
        sizes = [(rows, False) for rows in self.TARGET_ROWS]
        if threads > 1:
            sizes += [(rows, True) for rows in self.PER_THREAD_ROWS]
        forms: dict[tuple[int, bool], int] = {}  # (pixels per block, per thread): rows asked
        for rows, apart in sizes:
            blocks = tile_blocks(spec.mb, spec.oh, spec.ow, rows)
            # One block is one thread's: made by each thread apart only where there are more.
            if not apart or len(blocks) > 1:
                forms[max(b.tiles for b in blocks), apart] = rows
        crs = spec.ic // spec.g * spec.kh * spec.kw
        libraries = [""]
        if spec.g == 1 and has_onednn_matmul(weight):
            libraries.append(" oneDNN")
        ways = {
            f"{pixels}{PER_THREAD if apart else ''}{lib}": (pixels, rows, bool(lib), apart)
            for (pixels, apart), rows in forms.items()
            for lib in libraries
        }
        builds: list[Candidate] = [
            (label, lambda w=way: self._nhwc(spec, weight, bias, w[1], w[2], w[3]))
            for label, way in ways.items()
        ]
        # The views round the output once per tap, as ``direct`` does: kept to the dtypes
        # whose tolerance was set with that many roundings in mind.
        if weight.dtype in (torch.float32, torch.float64):
            builds.append(
                (
                    f"views {self.VIEW_PIXELS}",
                    lambda: self._views(spec, weight, bias, self.VIEW_PIXELS),
                )
            )
        label, run, times = fastest(builds, tuning_input(spec, weight))
        kg, cg = spec.oc // spec.g, spec.ic // spec.g
        if label.startswith("views"):
            params = {
                "columns": "views",
                "gemm": [kg, cg, self.VIEW_PIXELS],
                "gemms_per_run": spec.kh * spec.kw,
                "gemm_library": "torch.mm",
                "gemm_calls": self.views_calls(spec, bias is not None, self.VIEW_PIXELS),
                "tuned_ms": times,
            }
            return Prepared(run, "im2col views", params)
        pixels, rows, onednn, apart = ways[label]
        params = {
            "columns": "unfolded",
            "gemm": [pixels, crs, kg],
            "gemm_library": "oneDNN matmul" if onednn else "torch.mm",
            "gemm_calls": self.nhwc_calls(spec, bias is not None, rows, onednn),
            "gemms_at_once": self.gemms_at_once(spec, rows) if apart else 1,
            "tuned_ms": times,
        }
        library = " oneDNN" if onednn else ""
        return Prepared(run, f"im2col{library}{', per thread' if apart else ''}", params)

    def _prepare_pointwise(
        self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> Prepared:
        """One GEMM per image, or — timed against it where there are several images — one
        for all of them: small images make short GEMMs (49 pixels at 7×7), and the copy into
        (C, N, H, W) order costs less than the rate they lose (minibatch 8, 512 to 2048
        channels at 7×7: 0.82× torch per image, 1.09× all at once; at 56×56 the other way).
        With one group in float32, also all images copied channels-last for oneDNN's matmul,
        which runs the 49-pixel products of a single 7×7 image at 200–260 GFLOP/s where
        ``torch.mm`` runs them at 150–185 (K × C of 2048 × 1024, 2048 × 512, 512 × 2048 and
        512 × 1024): ResNet-50's 1×1 layers of 7×7 images at minibatch 1 went from 0.96–1.13×
        torch (the code before, one run) to 1.36–1.68× (four runs the same day)."""
        forms = [("per image", lambda: self._pointwise(spec, weight, bias, False))]
        if spec.mb > 1:
            forms.append(("all images", lambda: self._pointwise(spec, weight, bias, True)))
        if spec.g == 1 and has_onednn_matmul(weight):
            forms.append(
                (ONEDNN_POINTWISE, lambda: self._pointwise(spec, weight, bias, True, True))
            )
        label, run, times = fastest(forms, tuning_input(spec, weight))
        onednn = label == ONEDNN_POINTWISE
        calls = self.pointwise_calls(spec, label != "per image", onednn)
        params = {
            "columns": "input",
            "gemm": calls[0][:3],
            "gemm_library": "oneDNN matmul" if onednn else "torch.matmul",
            "gemm_calls": calls,
            "images_per_gemm": label,
            "tuned_ms": times,
        }
        return Prepared(run, "im2col pointwise", params)

    @staticmethod
    def nhwc_calls(spec: ConvSpec, bias: bool, rows: int, onednn: bool) -> list[list[int]]:
        """:func:`_gemm_calls` of :meth:`_nhwc`'s products: one per block and group, the
        bias a column of the product where it rides in it (one group, not oneDNN)."""
        kg = spec.oc // spec.g
        width = spec.ic // spec.g * spec.kh * spec.kw + (spec.g == 1 and bias and not onednn)
        return _gemm_calls(
            (blk.tiles, width, kg, spec.g)
            for blk in tile_blocks(spec.mb, spec.oh, spec.ow, rows)
            for _ in range(spec.g)
        )

    @staticmethod
    def gemms_at_once(spec: ConvSpec, rows: int) -> int:
        """How many of :meth:`_nhwc`'s products run at once, one a thread, where each thread
        makes blocks of its own: torch's threads, or fewer where there are fewer blocks."""
        return min(torch.get_num_threads(), len(tile_blocks(spec.mb, spec.oh, spec.ow, rows)))

    @staticmethod
    def views_calls(spec: ConvSpec, bias: bool, pixels: int) -> list[list[int]]:
        """:func:`_gemm_calls` of :meth:`_views`' products: R·S per run of pixels and group,
        the first tap's a column more where the bias rides in it (one group)."""
        kg, cg = spec.oc // spec.g, spec.ic // spec.g
        last = _phase_grid(spec)[2]
        first = cg + (spec.g == 1 and bias)
        return _gemm_calls(
            (kg, cg if tap else first, min(pixels, last - start), spec.g)
            for start in range(0, last, pixels)
            for tap in range(spec.kh * spec.kw)
            for _ in range(spec.g)
        )

    @staticmethod
    def pointwise_calls(spec: ConvSpec, all_images: bool, onednn: bool) -> list[list[int]]:
        """:func:`_gemm_calls` of :meth:`_pointwise`'s products: one call, of one product or
        batched over groups (all images) or over images and groups (per image)."""
        kg, cg, p = spec.oc // spec.g, spec.ic // spec.g, spec.oh * spec.ow
        if onednn:
            return [[spec.mb * p, cg, kg, 1, 1]]
        if all_images:
            return [[kg, cg, spec.mb * p, spec.g, spec.g]]
        return [[kg, cg, p, spec.mb * spec.g, spec.mb * spec.g]]

    @staticmethod
    def _nhwc(
        spec: ConvSpec,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows: int,
        onednn: bool = False,
        per_thread: bool = False,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Columns for about ``rows`` output pixels at a time: several images, or rows of one;
        their GEMM by ``torch.mm`` (BLAS) or, with ``onednn`` (one group, where
        :func:`has_onednn_matmul`), by oneDNN's matmul, the bias added as it writes.

        With ``per_thread``, the blocks are shared out among torch's threads, each of which
        unfolds and multiplies its own, one block at a time, into columns of its own
        (:func:`~convbench.backends.numba_pool.on_pool`; each operator then runs on the one
        thread that calls it). A profiler sees only the caller's share, the first."""
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        kh, kw, oh, ow = spec.kh, spec.kw, spec.oh, spec.ow
        crs = cg * kh * kw
        # (G, R·S·C/g, K/g): each group's weights in the columns' (r, s, c) order.
        wt = weight.reshape(g, kg, cg, kh, kw).permute(0, 3, 4, 2, 1).reshape(g, crs, kg)
        # With one group the bias rides in the GEMM: a column of ones after the columns,
        # the bias as the weights' last row (a pass over the output saved: 1.4 of 16 ms on
        # ResNet-50's stem at minibatch 8); oneDNN adds it itself.
        folded = g == 1 and bias is not None and not onednn
        if folded:
            wt = torch.cat([wt, bias.view(1, 1, kg)], dim=1)
        wt = wt.contiguous()
        width = wt.shape[1]
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        ws = _like(weight)
        xpad = torch.zeros(spec.mb, hp, wp, spec.ic, **ws)  # NHWC; a kept zero border
        blocks = tile_blocks(spec.mb, oh, ow, rows)
        parts = Im2colBackend.gemms_at_once(spec, rows) if per_thread else 1
        n = len(blocks)
        shares = [blocks[p * n // parts : (p + 1) * n // parts] for p in range(parts)]
        most = max(b.tiles for b in blocks)
        spaces = [torch.ones(most, g, width, **ws) for _ in range(parts)]
        cols = spaces[0]
        sn, sh, sw, sc = xpad.stride()
        shape = (oh, ow, g, kh, kw, cg)
        strides = (spec.sh * sh, spec.sw * sw, cg * sc, spec.dh * sh, spec.dw * sw, sc)

        linear = onednn_linear(wt[0].t(), bias, most) if onednn else None
        bias_added = folded or onednn  # by the GEMM itself

        def gemm(a: torch.Tensor, out: torch.Tensor) -> None:
            """out[pixel, group, k] = Σ a[pixel, group, :] · wt[group, :, k] (+ bias with
            oneDNN)."""
            if linear is not None:
                out.view(-1, kg).copy_(linear(a.view(-1, width)))
            elif g == 1:
                torch.mm(a.view(-1, width), wt[0], out=out.view(-1, kg))
            else:
                out.copy_(torch.matmul(a.transpose(0, 1), wt).transpose(0, 1))

        def unfolding(blk: Block, space: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """A block's taps (a view of the kept input) and where its columns go."""
            bn = blk.images.stop - blk.images.start
            br = blk.rows.stop - blk.rows.start
            start = blk.images.start * sn + blk.rows.start * spec.sh * sh
            taps = xpad.as_strided(
                (bn, br, *shape[1:]), (sn, *strides), xpad.storage_offset() + start
            )
            into = space[: blk.tiles, :, :crs].unflatten(0, (bn, br, ow)).unflatten(4, shape[3:])
            return taps, into

        work = [
            [(blk, *unfolding(blk, space), space[: blk.tiles]) for blk in share]
            for share, space in zip(shares, spaces, strict=True)
        ]

        def run(x: torch.Tensor) -> torch.Tensor:
            pad_into(spec, x, xpad.permute(0, 3, 1, 2))
            y = torch.empty(x.shape[0], oh, ow, spec.oc, **ws)

            def part(p: int) -> None:
                for blk, taps, into, a in work[p]:
                    with stage("im2col/unfold"):
                        into.copy_(taps)
                    with stage("im2col/gemm"):
                        gemm(a, y[blk.images, blk.rows].view(blk.tiles, g, kg))

            if parts == 1:
                part(0)
            else:
                # Imported here: Numba takes a second to import, which no other command
                # should pay.
                from convbench.backends.numba_pool import on_pool, use_threads

                use_threads(torch.get_num_threads())
                on_pool(part, parts)
            y = y.permute(0, 3, 1, 2)
            return y if bias_added else add_bias(y, bias)

        if linear is None or len(blocks) > 1:
            return run
        ((_, taps, into, _),) = work[0]

        def run_whole(x: torch.Tensor) -> torch.Tensor:
            """One block: oneDNN's result is the output itself (no copy into one)."""
            pad_into(spec, x, xpad.permute(0, 3, 1, 2))
            with stage("im2col/unfold"):
                into.copy_(taps)
            with stage("im2col/gemm"):
                y = linear(cols.view(-1, width))
            return y.view(x.shape[0], oh, ow, spec.oc).permute(0, 3, 1, 2)

        return run_whole

    @staticmethod
    def _views(
        spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None, pixels: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The columns as views of the padded input, in (C, N, H, W) order and split into its
        stride phases; R·S accumulated GEMMs per run of about ``pixels`` output pixels."""
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        kh, kw, sh, sw = spec.kh, spec.kw, spec.sh, spec.sw
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        # Phase (a, b) holds the padded input's rows a, a + sh, ... and columns b, b + sw, ...
        hq, wq, last = _phase_grid(spec)
        area = spec.mb * hq * wq
        ws = _like(weight)
        two_d = g == 1
        # With one group the bias rides in the first tap's GEMM: a channel of ones after the
        # input's, the bias as that tap's extra weight column.
        folded = two_d and bias is not None
        phases = torch.zeros(sh * sw, spec.ic + folded, spec.mb, hq, wq, **ws)
        phases[:, spec.ic :] = 1
        xpad = None if sh == sw == 1 else torch.zeros(spec.mb, spec.ic, hp, wp, **ws)
        # Tap (r, s) reads phase ((r·dh) mod sh, (s·dw) mod sw) at a fixed offset from the
        # output pixel; taps are visited phase by phase, so one phase's columns stay cached.
        taps = sorted(
            (((r * spec.dh) % sh) * sw + (s * spec.dw) % sw,
             (r * spec.dh) // sh * wq + (s * spec.dw) // sw, r, s)
            for r in range(kh)
            for s in range(kw)
        )  # fmt: skip
        used = sorted({t[0] for t in taps})
        # (R, S, G, K/g, C/g): each tap's [K × C/g] matrix, per group.
        wt = weight.reshape(g, kg, cg, kh, kw).permute(3, 4, 0, 1, 2).contiguous()
        _, _, r0, s0 = taps[0]
        first = torch.cat([wt[r0, s0, 0], bias.view(kg, 1)], dim=1) if folded else None

        def term(ph: int, offset: int, r: int, s: int, start: int) -> Term:
            """A tap's weights and its columns for the run of pixels from ``start``: views
            of the kept phases (for one group, plain matrices)."""
            stop = min(last, start + pixels) + offset
            if not two_d:
                return wt[r, s], phases[ph].view(g, cg, area)[:, :, start + offset : stop]
            if first is not None and (r, s) == (r0, s0):
                return first, phases[ph].view(-1, area)[:, start + offset : stop]
            return wt[r, s, 0], phases[ph, : spec.ic].view(cg, area)[:, start + offset : stop]

        runs = [
            (slice(start, min(last, start + pixels)), [term(*t, start) for t in taps])
            for start in range(0, last, pixels)
        ]
        start_value = None if bias is None or folded else bias.view(g, kg, 1)

        def products(out: torch.Tensor, terms: list[Term]) -> None:
            """out = the sum of the terms' products (per group), plus the bias: folded into
            the first product, or added with it, not in a pass of its own."""
            (w, a), rest = terms[0], terms[1:]
            if two_d:
                torch.mm(w, a, out=out)
                for w, a in rest:
                    out.addmm_(w, a)
                return
            if start_value is None:
                torch.bmm(w, a, out=out)
            else:
                torch.baddbmm(start_value, w, a, out=out)
            for w, a in rest:
                out.baddbmm_(w, a)

        def run(x: torch.Tensor) -> torch.Tensor:
            with stage("im2col/unfold"):
                if xpad is None:
                    pad_into(spec, x, phases[0, : spec.ic].transpose(0, 1))
                else:
                    pad_into(spec, x, xpad)
                    for ph in used:
                        a, b = divmod(ph, sw)
                        part = xpad[:, :, a::sh, b::sw].transpose(0, 1)
                        phases[ph, : spec.ic, :, : part.shape[2], : part.shape[3]].copy_(part)
            y = torch.empty(spec.oc, spec.mb, hq, wq, **ws)
            out = y.view(kg * g, area) if two_d else y.view(g, kg, area)
            with stage("im2col/gemm"):
                for pixels_of_run, terms in runs:
                    products(out[..., pixels_of_run], terms)
            return y[:, :, : spec.oh, : spec.ow].transpose(0, 1)

        return run

    @staticmethod
    def _pointwise(
        spec: ConvSpec,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        all_images: bool,
        onednn: bool = False,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A 1×1 kernel: the columns are the padded input itself, subsampled by the stride;
        one GEMM per image on the input as it lies, or one for all images on the input
        copied into (C, N, H, W) order, or with ``onednn`` (one group) into channels-last
        order for oneDNN's matmul, [N·H·W × C]·[C × K]: the layout its kernels want (on
        [C × pixels] as it lies they ran at 0.33–0.73 of ``torch.mm``'s rate on ResNet-50's
        1×1 shapes), and its output channels-last."""
        g, kg, cg, p = spec.g, spec.oc // spec.g, spec.ic // spec.g, spec.oh * spec.ow
        rows = weight.reshape(g, kg, cg)

        strided = spec.sh > 1 or spec.sw > 1

        def inputs(x: torch.Tensor) -> torch.Tensor:
            xp = pad_input(spec, x)
            return xp[:, :, :: spec.sh, :: spec.sw][:, :, : spec.oh, : spec.ow] if strided else xp

        if not all_images:

            def run(x: torch.Tensor) -> torch.Tensor:
                xp = inputs(x)
                if strided:
                    with stage("im2col/unfold"):
                        xp = xp.contiguous()
                with stage("im2col/gemm"):
                    y = torch.matmul(rows, xp.reshape(xp.shape[0], g, cg, p))
                return add_bias(y.view(-1, spec.oc, spec.oh, spec.ow), bias)

            return run

        if onednn:
            nhwc = torch.empty(spec.mb, spec.oh, spec.ow, spec.ic, **_like(weight))
            linear = onednn_linear(rows[0], bias, spec.mb * p)

            def run_nhwc(x: torch.Tensor) -> torch.Tensor:
                with stage("im2col/unfold"):
                    nhwc.copy_(inputs(x).permute(0, 2, 3, 1))
                with stage("im2col/gemm"):
                    y = linear(nhwc.view(-1, spec.ic))
                return y.view(spec.mb, spec.oh, spec.ow, spec.oc).permute(0, 3, 1, 2)

            return run_nhwc

        cols = torch.empty(spec.ic, spec.mb, spec.oh, spec.ow, **_like(weight))

        def run_all(x: torch.Tensor) -> torch.Tensor:
            with stage("im2col/unfold"):
                cols.copy_(inputs(x).transpose(0, 1))
            with stage("im2col/gemm"):
                a = cols.view(g, cg, -1)
                if bias is None:
                    y = torch.bmm(rows, a)
                else:
                    y = torch.baddbmm(bias.view(g, kg, 1), rows, a)
            return y.view(spec.oc, spec.mb, spec.oh, spec.ow).transpose(0, 1)

        return run_all
