#!/usr/bin/env python3
"""Adds up a LibTorch Chrome trace (torch::autograd::profiler::RecordProfile, as written by
benchmarks/train_step.cpp --profile): self time per operator (its duration minus that of the
operators it called), grouped by the enclosing diffuse:: phase scope.
  python3 scripts/profile_summary.py trace.json [--top 25]"""
import collections
import json
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 2 if not args else 0
    top = int(args[args.index("--top") + 1]) if "--top" in args else 25
    events = [e for e in json.load(open(args[0])) if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    self_time = collections.Counter()  # (phase, op) -> us
    calls = collections.Counter()
    phase_time = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, child time]
        def close(item):
            ev, child = item
            phase = next((s[0]["name"] for s in stack if s[0]["name"].startswith("diffuse::")), "(no phase)")
            if ev["name"].startswith("diffuse::"):
                phase_time[ev["name"]] += ev["dur"]
            else:
                self_time[(phase, ev["name"])] += ev["dur"] - child
                calls[(phase, ev["name"])] += 1
            if stack:
                stack[-1][1] += ev["dur"]
        for e in evs:
            while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
                close(stack.pop())
            stack.append([e, 0.0])
        while stack:
            close(stack.pop())
    total = sum(phase_time.values())
    print(f"phases (inclusive, ms over the trace; {total / 1e3:.1f} ms in all)")
    for name, us in phase_time.most_common():
        print(f"  {name:24s} {us / 1e3:9.1f}  {100 * us / max(total, 1):5.1f}%")
    print(f"\ntop {top} operators by self time")
    print(f"  {'phase':20s} {'operator':40s} {'ms':>9s} {'calls':>7s} {'us/call':>8s}")
    for (phase, op), us in self_time.most_common(top):
        n = calls[(phase, op)]
        print(f"  {phase:20s} {op:40s} {us / 1e3:9.1f} {n:7d} {us / n:8.1f}")
    per_phase_calls = collections.Counter()
    for (phase, _), n in calls.items():
        per_phase_calls[phase] += n
    print("\noperator calls per phase: " + ", ".join(f"{p} {n}" for p, n in per_phase_calls.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
