"""Latency the guardrails plugin adds to a clean request, measured in-process (Flask test client, mock upstream).

    .venv/bin/python bench/guardrails_overhead.py [--n 400] [--words 200]

Each case runs the same clean request through a gateway without the plugin
and with it (default warn-only config, and every detector on redact/block),
interleaved so machine noise hits all of them alike; prints median and p95
per request and the added median. Nothing listens on a port.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from routeplane_guardrails import BUILTIN_DETECTORS, GuardrailsPlugin  # noqa: E402

from routeplane.testing import Gateway  # noqa: E402


def gateways() -> Dict[str, Gateway]:
    strict = GuardrailsPlugin(
        upgoing={n: "redact" for n, d in BUILTIN_DETECTORS.items() if "upgoing" in d.directions},
        downgoing={n: ("block" if n in ("api_keys", "private_keys", "suspicious_commands") else "redact")
                   for n in BUILTIN_DETECTORS})
    return {"no plugin": Gateway(), "warn (default)": Gateway(plugins=[GuardrailsPlugin()]),
            "redact/block all": Gateway(plugins=[strict])}


def clean_text(words: int) -> str:
    vocab = "the gateway routes each request to a provider and streams tokens back version 1.2.3 ok".split()
    return " ".join(vocab[i % len(vocab)] for i in range(words))


def measure(run: Callable[[], Any], n: int, clock: Callable[[], float]) -> List[float]:
    out = []
    for _ in range(n):
        t0 = clock()
        run()
        out.append((clock() - t0) * 1000.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests per case and gateway")
    ap.add_argument("--words", type=int, default=200, help="words in the prompt; the mock streams one per chunk")
    args = ap.parse_args()
    text = clean_text(args.words)
    gws = gateways()
    bodies = {
        "non-streaming": {"model": "default", "messages": [{"role": "user", "content": text}]},
        f"stream, {args.words + 2} chunks": {"model": "default", "messages": [{"role": "user", "content": text}],
                                             "stream": True},
    }
    print(f"prompt {len(text)} chars, {args.n} requests per cell, python {sys.version.split()[0]}")
    for case, body in bodies.items():
        for gw in gws.values():  # warm up, and check the answer really is unchanged
            assert gw.request(body).status == 200
        # Wall time, and CPU time of this thread (steadier when other processes load the machine).
        for label, clock in (("wall", time.perf_counter), ("cpu", time.thread_time)):
            samples: Dict[str, List[float]] = {name: [] for name in gws}
            for _ in range(4):  # interleave rounds
                for name, gw in gws.items():
                    samples[name] += measure(lambda gw=gw, body=body: gw.request(body), args.n // 4, clock)
            base = statistics.median(samples["no plugin"])
            print(f"\n{case} ({label} time)")
            for name, xs in samples.items():
                xs.sort()
                med, p95 = statistics.median(xs), xs[int(len(xs) * 0.95) - 1]
                added = "" if name == "no plugin" else f"   added {med - base:+.3f} ms ({(med / base - 1) * 100:+.0f}%)"
                print(f"  {name:18s} median {med:7.3f} ms   p95 {p95:7.3f} ms{added}")


if __name__ == "__main__":
    main()
