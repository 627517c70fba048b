"""The memory a call can still allocate on a device: CUDA's free memory and what torch's caching allocator holds
unused, or for CPU (and MPS) the system's available memory capped by this process's cgroup limit."""

from __future__ import annotations


def available_memory(device=None) -> int | None:
    """Bytes a call on ``device`` (a ``torch.device`` or its name; default CPU) can still allocate: for CUDA the
    free device memory plus what torch's caching allocator holds unused; for CPU (and MPS, which shares it) the
    system's available memory, or what is left under this process's cgroup limit if less; ``None`` for other
    devices."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return _system_available()
    if device.type == "cpu":
        return _system_available()
    return None


def _system_available() -> int:
    try:
        import psutil
    except ImportError:
        available = _meminfo_available()
    else:
        available = int(psutil.virtual_memory().available)
    headroom = _cgroup_headroom()
    return min(available, headroom) if headroom is not None else available


def _meminfo_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


CGROUP_FILES = (  # (limit, usage, stat, reclaimable page cache key): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/fs/cgroup/memory/memory.stat",
        "total_inactive_file",
    ),
)


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (where a container's OOM killer strikes), or None."""
    for limit_file, usage_file, stat_file, reclaimable_key in CGROUP_FILES:
        try:
            with open(limit_file) as file:
                limit = file.read().strip()
            with open(usage_file) as file:
                usage = int(file.read().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 1 << 60:  # "max", or v1's "no limit"
            return None
        reclaimable = 0
        try:
            with open(stat_file) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == reclaimable_key:
                        reclaimable = int(value)
        except (OSError, ValueError):
            pass
        return max(int(limit) - usage + reclaimable, 0)
    return None
