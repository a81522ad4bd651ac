"""The engine's static-shape decode step, the one a CUDA graph captures and replays on GPU.

A step decodes a padded row count (the next power of two, capped at the slot count) over the cache's full
capacity, so its shapes never change and one capture per (width, capacity) serves every step. Padded rows
write K/V only at their own next position, which lies beyond their valid ids (a waiting row's prefill
overwrites it). The step also advances the active rows' lengths, picks every row's greedy id and its
log-prob, and copies the ids into its own input: a greedy decode of unchanged rows costs one replay and one
device->host copy per step. Without CUDA (tests set `KVEngine.padded_decode`) the same body runs eagerly,
which is how CPU tests check the captured computation.

`KVEngine.compile_decode` (off by default) runs the step's layers through `torch.compile` before the
capture (`KVEngine.compiled_layers`: the norm/projection/rotary and output/MLP halves of a layer, compiled once
for all layers; cache writes and attention stay eager). Measured on an H100 (1.5B-shaped model, B = 16): the
eager step replayed 1,431 kernels (~51 per layer: two RMSNorms of ~8 ops, rotary ~10, 7 projections, cache
writes, attention, residuals), the GPU busy up to ~6 ms per step where streaming the weights needs ~1 ms;
Inductor fuses the elementwise ops around the matmuls. The first call compiles (tens of seconds). The eager
layer has since been cut from 47 to 26 dispatched ops on CUDA (counted on CPU, bf16, Qwen2 layer; see
`models/decoder.py`: fused RMSNorm, 3-op rotary, one additive attention mask per step; an unmerged LoRA
projection as base + A + addmm), not yet timed on a GPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dreamgym.models.engine import KVEngine

log = logging.getLogger(__name__)

__all__ = ["PaddedDecoder"]


@dataclass
class PaddedStep:
    """One padded decode step's static tensors (a CUDA graph's inputs and outputs) and how to run it."""

    ids: torch.Tensor  # (width,) ids fed
    active: torch.Tensor  # (width,) 1 for rows [0, a) whose lengths advance
    a: int = -1
    run: Any = None
    logits: torch.Tensor | None = None  # (width, V)
    picked: torch.Tensor | None = None  # (2, width) float64: greedy ids, their log-probs


class PaddedDecoder:
    """The padded steps of one engine (its cache, eager step, flags and timings), captured once each."""

    def __init__(self, engine: "KVEngine"):
        self.engine = engine
        self.steps: dict[tuple[int, int], PaddedStep] = {}  # (width, capacity) -> step
        self._last: PaddedStep | None = None

    def drop(self) -> None:
        """Forget every captured step (the cache tensors or the weights they captured changed)."""
        self.steps = {}

    def step(self, ids: torch.Tensor | None, a: int, want_logits: bool = True):
        """Decode rows [0, a): feed `ids` (a,), or with `ids` None the previous step's greedy picks. Returns
        the logits (a, V), or with want_logits=False the greedy (ids, log-probs) as lists (one copy)."""
        cache = self.engine.cache
        S, C = cache.slots, cache.capacity
        width = min(S, 1 << (a - 1).bit_length())
        g = self.steps.get((width, C))
        if g is None:
            g = self.steps[(width, C)] = self._build(width, C)
        if g.a != a:
            g.active.zero_()
            g.active[:a] = 1
            g.a = a
        if ids is not None:
            g.ids.zero_()
            g.ids[:a] = ids
        elif g is not self._last:  # the previous step ran another width: take over its picks
            g.ids[:a] = self._last.ids[:a]
        self._last = g
        g.run()
        if want_logits:
            return g.logits[:a].clone()
        picked = g.picked[:, :a].tolist()  # one copy: row 0 ids, row 1 log-probs (float64: both exact)
        return [int(x) for x in picked[0]], picked[1]

    def _build(self, width: int, C: int) -> PaddedStep:
        """The step of `width` rows over capacity C: a CUDA graph on GPU (warmed up on a side stream, the
        lengths restored after it), an eager closure otherwise or when capture fails."""
        eng, cache = self.engine, self.engine.cache
        device = cache.K.device
        st = PaddedStep(ids=torch.zeros(width, dtype=torch.long, device=device),
                        active=torch.zeros(width, dtype=torch.long, device=device))

        def body() -> None:
            pos = cache.lengths[:width].clamp(max=C - 1)
            logits = eng._step_eager(st.ids, pos, width, C, compiled=eng.compile_decode)
            cache.lengths[:width] += st.active
            logp = torch.log_softmax(logits.float(), dim=-1)  # == pick_tokens' greedy pick (temperature 1)
            best = logp.argmax(-1)
            st.picked = torch.stack((best.double(), logp.gather(-1, best[:, None])[:, 0].double()))
            st.logits = logits
            st.ids.copy_(best)

        run = body
        if not (cache.K.is_cuda and eng.cuda_graphs):
            st.run = run
            return st
        t0 = time.perf_counter()
        saved = cache.lengths.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # writes garbage K/V at each row's next position: see the module docstring
                run()
        torch.cuda.current_stream().wait_stream(stream)
        cache.lengths.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                run()
        except Exception as e:  # noqa: BLE001 -- a kernel that cannot be captured: decode eagerly from now on
            log.warning("KVEngine: CUDA graph capture failed (%s: %s); decoding without graphs", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "", exc_info=True)
            eng.cuda_graphs = False
            torch.cuda.synchronize()
            cache.lengths.copy_(saved)
            st.run = body  # this call finishes eagerly on the padded shapes; the next ones take the eager path
            return st
        st.run = graph.replay
        eng.timing["capture_s"] += time.perf_counter() - t0
        return st
