"""A start-up probe for `bench/startup_timeline.sh`: with this folder on PYTHONPATH and
CTXSCALE_TIMELINE set, every Python process (the CLI, and Ray's workers, which inherit both) prints
to stderr, with the wall clock, when it starts and when it has imported torch, imported ctxscale's
synthetic trainer, initialised CUDA, and first held device memory. Python imports `sitecustomize`
at start-up by itself; without the variable this file does nothing.

A thread polls `sys.modules` and torch's CUDA state every 50 ms rather than hooking imports, so the
probe cannot change what it measures beyond a few microseconds a poll.
"""
import os

if os.environ.get("CTXSCALE_TIMELINE"):
    import sys
    import threading
    import time

    def _say(what: str) -> None:
        print(f"TL {time.time():.3f} pid={os.getpid()} {what}", file=sys.stderr, flush=True)

    def _cuda():
        torch = sys.modules.get("torch")
        return torch.cuda if torch is not None and hasattr(torch, "cuda") else None

    _CHECKS = {
        "torch imported": lambda: _cuda() is not None,
        "ctxscale trainer imported": lambda: "ctxscale.train.synthetic" in sys.modules,
        "cuda initialised": lambda: _cuda() is not None and _cuda().is_initialized(),
        "device memory held": lambda: _cuda() is not None and _cuda().is_initialized() and _cuda().memory_allocated() > 0,
    }

    def _watch() -> None:
        pending, deadline = dict(_CHECKS), time.time() + 900  # a process that never gets there stops polling
        while pending and time.time() < deadline:
            for name, check in list(pending.items()):
                try:
                    reached = check()
                except Exception:  # a module half imported: try again at the next poll
                    reached = False
                if reached:
                    _say(name)
                    del pending[name]
            time.sleep(0.05)

    _say("start " + " ".join(sys.argv)[:120])
    threading.Thread(target=_watch, daemon=True).start()
