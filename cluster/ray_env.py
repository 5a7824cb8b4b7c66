"""Starting or joining Ray with the settings these machines need."""

from __future__ import annotations

import os

# must be set before ray is imported: no usage reporting, no auth prompts, traffic on loopback
for _k, _v in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}.items():
    os.environ.setdefault(_k, _v)

import ray  # noqa: E402


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 200) -> None:
    """Start a local Ray (``address`` None, bound to 127.0.0.1) or join a cluster; no-op if
    Ray is already initialised in this process."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        num_gpus=0 if not _has_cuda() else None,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 1024**2,
        _node_ip_address="127.0.0.1",
    )


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def cluster_gpus() -> float:
    """GPUs the connected cluster offers."""
    return float(ray.cluster_resources().get("GPU", 0.0))
