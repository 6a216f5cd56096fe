"""What makes a stored row traceable: package versions and the hardware that ran it."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


_PACKAGES = ("ctxscale", "ray", "torch", "numpy", "pandas", "pyarrow")
# the version columns `versions` fills, for the store's schema
VERSION_KEYS = tuple(f"{name}_version" for name in _PACKAGES + ("python",))


def versions() -> dict:
    return {f"{name}_version": _version(name) for name in _PACKAGES} | {"python_version": platform.python_version()}


def provenance() -> dict:
    """Versions and hardware of this process, as flat columns."""
    return versions() | hardware()


def hardware() -> dict:
    info = {"host": socket.gethostname(), "platform": platform.platform(),
            "cpu_count": os.cpu_count() or 0, "gpu_name": "", "gpu_count": 0}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
    except ImportError:
        pass
    return info
