"""Start-up overhead of the local job sandbox, measured beside the unsandboxed start.

    python bench/isolation.py                 # 40 rounds, /bin/true and python -c pass
    python bench/isolation.py --rounds 100 --json /tmp/isolation.json

Each round starts the same job through the local executor twice, once sandboxed and once
not, in alternating order, and times the launch to the job's exit (working dir, uid lease,
namespaces, the new root, rlimits, exec, and the teardown). It prints the median and p90 of
each, their ratio and the milliseconds the sandbox adds. Target: < 20 ms added. Jobs are
as small as possible so the sandbox's cost isn't hidden behind the job's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from api import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlroom.adapters.execution.local_executor import LocalExecutor
from controlroom.adapters.execution.sandbox import Sandbox
from controlroom.commands.ports import PYTHON, Launch
from controlroom.settings import SandboxSettings

JOBS = {"/bin/true": ["/bin/true"], "python -c pass": [PYTHON, "-I", "-c", "pass"]}
TARGET_ADDED_MS = 20.0


def start_to_exit_ms(executor: LocalExecutor, argv: list[str]) -> float:
    """Milliseconds from launch to the job's exit, its working dir removed."""
    started = time.perf_counter()
    execution = executor.launch(files={"main.py": ""}, launch=Launch(argv=argv), env={})
    code = execution.proc.wait()
    execution.cleanup()
    elapsed = (time.perf_counter() - started) * 1000
    if code != 0:
        raise SystemExit(f"{argv} exited with {code}: {execution.proc.stderr.read()!r}")  # type: ignore[union-attr]
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    sandbox = Sandbox(SandboxSettings())
    if (why := sandbox.probe()) is not None:
        print(f"no sandbox on this host: {why}", file=sys.stderr)
        return 1
    plain, boxed = LocalExecutor(), LocalExecutor(sandbox=sandbox)
    results = {}
    print(f"{'job':<16} {'unsandboxed p50/p90 ms':>24} {'sandboxed p50/p90 ms':>22} "
          f"{'ratio':>6} {'added ms':>9}  target < {TARGET_ADDED_MS:.0f} ms")
    for name, job in JOBS.items():
        times: dict[str, list[float]] = {"plain": [], "boxed": []}
        for executor in (plain, boxed):  # warm-up: imports, page cache
            start_to_exit_ms(executor, job)
        for i in range(args.rounds):
            order = [("plain", plain), ("boxed", boxed)]
            for label, executor in order if i % 2 else reversed(order):
                times[label].append(start_to_exit_ms(executor, job))
        a, b = sorted(times["plain"]), sorted(times["boxed"])
        added = statistics.median(b) - statistics.median(a)
        results[name] = {"unsandboxed_ms": {"p50": statistics.median(a), "p90": percentile(a, 90)},
                         "sandboxed_ms": {"p50": statistics.median(b), "p90": percentile(b, 90)},
                         "ratio": statistics.median(b) / statistics.median(a), "added_ms": added,
                         "target_met": added < TARGET_ADDED_MS}
        r = results[name]
        print(f"{name:<16} {r['unsandboxed_ms']['p50']:>14.1f} / {r['unsandboxed_ms']['p90'] or 0:<7.1f}"
              f" {r['sandboxed_ms']['p50']:>12.1f} / {r['sandboxed_ms']['p90'] or 0:<7.1f}"
              f" {r['ratio']:>6.2f} {added:>9.1f}  {'PASS' if r['target_met'] else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "jobs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
