"""What the benchmark scripts share: timing a call after its warm-up (JIT compilation excluded), and the CPU."""
import platform
import subprocess
import time


def timed(call, seconds: float) -> float:
    """Seconds per call of ``call``: one warm-up call, then at least 3 calls and at least ``seconds`` in all."""
    call()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def cpu_model() -> str:
    """``lscpu``'s model name (every speed table names the CPU it ran on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
