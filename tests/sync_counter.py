"""A count of host-device synchronisations, usable on a CPU (shared by the tests that limit them)."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostSyncCounter(TorchDispatchMode):
    """Counts what makes the host wait for an accelerator: a value read back (``item``, ``bool``, ``int``: one
    ``_local_scalar_dense``), ``nonzero`` and boolean-mask indexing (their output size lives on the device),
    and ``tolist``/``cpu``/``numpy`` (a CPU tensor's skip the dispatcher, so they are counted as Python calls)."""

    _READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
              "aten.is_nonzero.default", "aten.equal.default"}

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.count = 0
        for name in ("tolist", "cpu", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in self._READS:
            self.count += 1
        elif name.startswith(("aten.index.", "aten.index_put")):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            self.count += any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        return func(*args, **kwargs)
