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


def timed_together(calls, seconds: float, rounds: int = 5) -> list[float]:
    """Seconds per call of each of ``calls``, timed in turn: each call warmed up once, then ``rounds`` rounds in
    which every call runs for ``seconds / rounds`` (at least 3 calls); each call's figure is its fastest round.
    Interleaving puts every call under the same load, and the fastest round drops the rounds another tenant of
    a shared machine slowed down, so the ratios of one run compare the code rather than the moment."""
    for call in calls:
        call()
    best = [float("inf")] * len(calls)
    for _ in range(rounds):
        for k, call in enumerate(calls):
            best[k] = min(best[k], timed_warm(call, seconds / rounds))
    return best


def timed_warm(call, seconds: float) -> float:
    """``timed`` without its warm-up call."""
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
