"""A recorder of device-to-host reads: the ops that, on CUDA, make the host wait for the device.

On a GPU such a read stalls the host until every queued kernel has run, so the next kernels are
launched late (a "sync"). On CPU nothing waits, but the same ops run, so counting them on CPU tells
what a GPU step would do. Recorded: ``aten::_local_scalar_dense`` (``.item()``, ``int(t)``,
``bool(t)``, ``if t:``), the ops whose output size depends on the values (``nonzero``,
``masked_select``, indexing with a boolean mask, ``unique``, ``repeat_interleave`` without an output
size), and ``Tensor.tolist`` / ``Tensor.numpy`` (copies to the host; on CPU they dispatch no op, so
they are caught at the Python level).
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.nonzero_numpy.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
    aten.repeat_interleave.Tensor,
    aten.equal.default,
}

OWN_FRAMES = ("_host_reads.py", "_python_dispatch.py", "torch/_ops.py", "torch/_compile.py", "torch/_dynamo/")


class HostReads(TorchDispatchMode):
    """``with HostReads() as reads: ...``; ``reads.ops`` lists (op name, the caller's qinyu_lit line).

    ``ignore``: ops called directly from files under these paths are not recorded (host work by design: the collate on host
    tensors in a loader; optimizer internals, whose step counters live on the host unless captured)."""

    def __init__(self, ignore: tuple[str, ...] = ()):
        super().__init__()
        self.ops: list[tuple[str, str]] = []
        self.ignore = ignore

    def _record(self, name: str) -> None:
        stack = traceback.extract_stack()
        while stack and any(p in stack[-1].filename for p in OWN_FRAMES):
            stack.pop()  # the recorder's own frames: the innermost one left is the line that made the read
        if stack and any(part in stack[-1].filename for part in self.ignore):
            return
        frames = [f for f in stack if "qinyu_lit" in f.filename or "transformers" in f.filename]
        where = f"{frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else "?"
        self.ops.append((name, where))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING and not (func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None):
            self._record(str(func))
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self._record(f"{func} (boolean mask)")
        return func(*args, **kwargs)

    def __enter__(self):
        self._patched = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name, real in self._patched.items():
            setattr(torch.Tensor, name, self._wrap(name, real))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, real in self._patched.items():
            setattr(torch.Tensor, name, real)
        return super().__exit__(*exc)

    def _wrap(self, name, real):
        def wrapper(tensor, *args, **kwargs):
            self._record(f"Tensor.{name}")
            return real(tensor, *args, **kwargs)

        return wrapper
