"""What the benchmark scripts share: timing a call after its warm-up (JIT compilation excluded)."""
import time


def timed(call, seconds: float) -> float:
    """Seconds per call of ``call``: one warm-up call, then at least 3 calls and at least ``seconds`` in all."""
    call()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls
