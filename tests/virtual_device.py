"""A pretend CUDA device on a CPU-only machine, to catch tensors left on the host.

PyTorch refuses most operations that mix a CUDA tensor with a CPU tensor of one or more
dimensions (`cpu_sums += cuda_nll` raises), but a test suite without a GPU never sees it: every
tensor is on the CPU. Inside `virtual_cuda()` a tensor "on cuda" is an ordinary CPU tensor with a
tag, and the rules PyTorch applies to real devices are applied to the tags:

- `x.to("cuda")`, `x.cuda()`, `torch.zeros(..., device="cuda")`, `module.to("cuda")` run on the CPU
  and tag their results; `x.cpu()`, `x.to("cpu")`, `device="cpu"` give untagged (host) tensors;
- a tagged tensor reports `device` cuda:0 and `is_cuda` True, so code that reads the model's device
  (`next(model.parameters()).device`) and creates tensors there gets tagged ones;
- an operation's results are tagged when any of its inputs is (views, in-place ops, autograd's
  backward ops included: the check is a `TorchDispatchMode`, below autograd);
- an operation mixing a tagged tensor with an untagged one of one or more dimensions raises
  `DeviceMix`, as CUDA would; 0-dim host tensors are allowed (PyTorch allows CPU scalars), and so is
  `copy_` between the two (a cross-device copy), and host integer/bool index tensors (PyTorch moves
  them); `numpy()` of a tagged tensor raises too.

`torch.cuda.is_available()` says True inside, and the few `torch.cuda` calls a run makes on the host
side (synchronize, memory statistics, bf16 support) answer as a device would.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

CUDA = torch.device("cuda", 0)
HOST = torch.device("cpu")


class DeviceMix(RuntimeError):
    """A host tensor met a (virtual) device tensor in one operation."""


_TAGS = WeakIdKeyDictionary()


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and t in _TAGS


def _tag(obj, yes: bool):
    for t in tree_leaves(obj):
        if isinstance(t, torch.Tensor):
            if yes:
                _TAGS[t] = True
            else:
                _TAGS.pop(t, None)
    return obj


def _getter(name: str):
    return getattr(torch.Tensor, name)  # the descriptor (its __get__ is what the mode sees)


_DEVICE, _IS_CUDA, _DATA = _getter("device"), _getter("is_cuda"), _getter("data")
# cross-device by nature in PyTorch: a copy between devices, host indices into device tensors
_COPIES = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default, torch.ops.aten.copy.default}
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
             torch.ops.aten._index_put_impl_.default}


def _where(dev) -> bool | None:
    """True for a cuda destination, False for the host, None when `dev` names no device."""
    if isinstance(dev, torch.Tensor):
        return on_device(dev)
    if isinstance(dev, int) and not isinstance(dev, bool):
        return True  # .to(0), .cuda(0)
    if isinstance(dev, (str, torch.device)):
        kind = torch.device(dev).type
        return {"cuda": True, "cpu": False}.get(kind)  # meta (transformers' empty init): as it is
    return None


def _host(dev):
    return HOST if _where(dev) is not None and not isinstance(dev, torch.Tensor) else dev


class _Move(torch.autograd.Function):
    """A copy to the other side, whose backward copies the gradient back (as ToCopyBackward does)."""

    @staticmethod
    def forward(ctx, x, dest: bool):
        ctx.source = on_device(x)
        return _tag(x.clone(), dest)

    @staticmethod
    def backward(ctx, grad):
        return _tag(grad.clone(), ctx.source), None


def _moved(src: torch.Tensor, out: torch.Tensor, dest: bool) -> torch.Tensor:
    """`out` (src converted, or src itself) as a tensor on `dest`: a new one when the side changes."""
    return _Move.apply(out, dest) if on_device(src) != dest else _tag(out, dest)


class _Functions(TorchFunctionMode):
    """Python-level calls: where tensors are asked to live, and what they report."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE:
            return CUDA if on_device(args[0]) else func(*args, **kwargs)
        if owner is _IS_CUDA:
            return on_device(args[0])
        if owner is _DATA:
            return _tag(func(*args, **kwargs), on_device(args[0]))
        name = getattr(func, "__name__", "")
        if name in ("numpy", "__array__") and on_device(args[0]):
            raise DeviceMix("numpy() of a cuda tensor: move it to the host first (.cpu())")
        if name == "get_device" and on_device(args[0]):
            return 0
        if name in ("cuda", "cpu") and isinstance(args[0], torch.Tensor):
            return _moved(args[0], args[0], name == "cuda")
        dest = None
        if name == "to" and isinstance(args[0], torch.Tensor):
            for i, a in enumerate(args[1:], 1):
                if _where(a) is not None:
                    dest = _where(a)
                    if not isinstance(a, torch.Tensor):
                        args = args[:i] + (_host(a),) + args[i + 1:]
                    else:  # .to(other): other's dtype, our device rule
                        args = args[:i] + (a.dtype,) + args[i + 1:]
                    break
        if _where(kwargs.get("device")) is not None:
            dest = _where(kwargs["device"])
            kwargs["device"] = HOST
        out = func(*args, **kwargs)
        if dest is None:
            return out
        if name == "to":  # a real move makes a new tensor; the source stays where it was
            return _moved(args[0], out, dest)
        return _tag(out, dest)


class _Ops(TorchDispatchMode):
    """ATen operations (after autograd): the mixing rule and the tags' propagation."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        tagged = [t for t in tensors if on_device(t)]
        if tagged and func not in _COPIES:
            host = [t for t in tensors if not on_device(t) and t.dim() > 0
                    and not (func in _INDEXING and (t.dtype in (torch.long, torch.int, torch.bool)))]
            if host:
                raise DeviceMix(f"{func}: a cuda tensor {tuple(tagged[0].shape)} {tagged[0].dtype} and a "
                                f"host tensor {tuple(host[0].shape)} {host[0].dtype} in one operation")
        out = func(*args, **kwargs)
        if tagged:
            _tag(out, True)
        return out


def put(module: nn.Module) -> nn.Module:
    """Tag `module`'s parameters, buffers and gradients as on the device (no copy)."""
    for t in list(module.parameters()) + list(module.buffers()):
        _tag(t, True)
        if t.grad is not None:
            _tag(t.grad, True)
    return module


def _module_mover(original, dest_of):
    def move(self, *args, **kwargs):
        dest = dest_of(args, kwargs)
        if dest is not None:
            args = tuple(_host(a) for a in args)
            if "device" in kwargs:
                kwargs["device"] = _host(kwargs["device"])
        out = original(self, *args, **kwargs)
        if dest is not None:
            for t in list(self.parameters()) + list(self.buffers()):
                _tag(t, dest)
                if t.grad is not None:
                    _tag(t.grad, dest)
        return out
    return move


def _to_dest(args, kwargs):
    for a in list(args) + [kwargs.get("device")]:
        if not isinstance(a, torch.dtype) and _where(a) is not None:
            return _where(a)
    return None


@contextlib.contextmanager
def virtual_cuda(monkeypatch):
    """Inside the block, 'cuda' is a tagged CPU: see the module docstring. `monkeypatch` (pytest's)
    undoes the `torch.cuda` and `nn.Module` patches on leaving."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a, **k: None)
    for stat in ("max_memory_allocated", "memory_allocated", "max_memory_reserved", "memory_reserved"):
        monkeypatch.setattr(torch.cuda, stat, lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    # (free, total) of the pretend GPU: an H100's 80 GiB, so memory checks take the CUDA path
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (80 << 30, 80 << 30))
    monkeypatch.setattr(nn.Module, "to", _module_mover(nn.Module.to, _to_dest))
    monkeypatch.setattr(nn.Module, "cuda", _module_mover(nn.Module.cuda, lambda a, k: True))
    monkeypatch.setattr(nn.Module, "cpu", _module_mover(nn.Module.cpu, lambda a, k: False))
    with _Functions(), _Ops():
        yield
