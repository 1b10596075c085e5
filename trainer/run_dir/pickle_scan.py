"""Which Python objects a torch-saved file would create when unpickled, read without unpickling it.

DeepSpeed's own loader (``zero_to_fp32``) unpickles its checkpoint files with ``weights_only=False``: a crafted
file would run its code there. Before handing a checkpoint to it, every pickle inside every ``.pt`` is walked
opcode by opcode (``pickletools``) and each global it names is checked against what a checkpoint holds: torch
and numpy tensor rebuilders, the classes and constants (``torch.float32``) of torch, numpy, DeepSpeed and
``collections``, and a few harmless builtins. Anything else (``posix.system``, ``builtins.eval``, an unknown
module) refuses the file. A global whose name the walk cannot follow (built from computed values) refuses it too.
"""
from __future__ import annotations

import importlib
import inspect
import pickletools
import zipfile
from pathlib import Path

CLASS_MODULES = ("torch", "numpy", "deepspeed", "collections")
FUNCTIONS = {
    "torch._utils": None,  # _rebuild_tensor_v2, _rebuild_parameter, ... (any _rebuild_*)
    "torch._tensor": None,
    "torch.serialization": {"_get_layout"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "_codecs": {"encode"},
    "builtins": {"set", "frozenset", "slice", "complex", "bytearray", "range"},
    "copyreg": {"_reconstructor"},  # builds an instance of a class named (and checked) separately
}
PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # torch.save writes protocol 2


class PickleRefused(ValueError):
    """A file whose pickle names something a checkpoint never holds."""


def allowed(module: str, name: str) -> bool:
    module = PY2_NAMES.get(module, module)
    if module in FUNCTIONS:
        names = FUNCTIONS[module]
        if names is None:
            return name.startswith("_rebuild")
        if name in names:
            return True
    if module.split(".")[0] not in CLASS_MODULES or name.startswith("_") and not name.startswith("__"):
        return False
    try:  # only within the packages above: importing them is what loading the checkpoint does anyway
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return False
    return inspect.isclass(obj) or not callable(obj)  # a class, or a constant such as torch.float32


def globals_in(data: bytes) -> list[tuple[str, str] | None]:
    """Every global a pickle names; None for one whose name is not a literal the walk can follow."""
    found: list[tuple[str, str] | None] = []
    recent: list[object] = []  # the last pushed values, strings where they are literal
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            found.append((module, name))
            recent.append(None)
        elif op.name == "STACK_GLOBAL":
            pair = recent[-2:] if len(recent) >= 2 else []
            found.append((pair[0], pair[1]) if len(pair) == 2 and all(isinstance(x, str) for x in pair) else None)
            recent.append(None)
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif op.name in ("MEMOIZE",):
            memo[len(memo)] = recent[-1] if recent else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        else:
            recent.append(None)
        del recent[:-4]
    return found


def check_file(path: Path) -> None:
    """Refuse ``path`` (a torch.save zip, or a bare pickle) if any pickle in it names a global outside the list."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                pickles = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
        else:
            pickles = [path.read_bytes()]
        for data in pickles:
            for g in globals_in(data):
                if g is None or not allowed(*g):
                    what = "a global it builds at load time" if g is None else f"{g[0]}.{g[1]}"
                    raise PickleRefused(f"{path} would run {what} when loaded (pickled code?); refused. Pass "
                                        "--allow-pickle only for a checkpoint your own run wrote")
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        if isinstance(e, PickleRefused):
            raise
        raise PickleRefused(f"cannot read the DeepSpeed checkpoint: {path} is not a readable torch file "
                            f"({' '.join(str(e).split())[:100]})") from None


def check_checkpoint(folder: Path) -> None:
    """Every file DeepSpeed's consolidation unpickles: the shards in ``global_step*/``."""
    for f in sorted(folder.glob("global_step*/*")):
        if f.suffix in (".pt", ".pth", ".bin", ".pkl") and f.is_file():
            check_file(f)
