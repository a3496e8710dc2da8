"""Cost of the events extension on the push path: manifest PUT latency, interleaved, on three
registries (filesystem + SQLite) started side by side:

* ``off``     -- ``events.enabled: false`` (no listener at all);
* ``audit``   -- the default: the audit entry is written in the request's one small insert;
* ``hanging`` -- plus a webhook whose receiver never answers (timeout 30 s).

    python3 benchmarks/bench_events.py [N]

Prints median and p90 per registry and the ratios to ``off``.  The receiver's hang must not
show up in the push latency: delivery is off the request path.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.http import Client  # noqa: E402
from tests.support.webhook_receiver import Receiver  # noqa: E402
from tests.test_events import start, write_config  # noqa: E402


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    rx = Receiver(mode="hang", hang_for=600).start()
    regs = {
        "off": start(tmp / "off", write_config(tmp / "off.yaml", [], enabled=False)),
        "audit": start(tmp / "audit", write_config(tmp / "audit.yaml", [])),
        "hanging": start(
            tmp / "hang",
            write_config(
                tmp / "hang.yaml",
                [{"name": "slow", "url": rx.url(), "secret": "s", "actions": ["push"], "repositories": ["*"], "timeout": 30}],
            ),
        ),
    }
    try:
        clients = {k: Client(r.url) for k, r in regs.items()}
        times: dict[str, list[float]] = {k: [] for k in regs}
        layer = b"x" * 4096
        for i in range(n + 5):
            for name, c in clients.items():
                digest = c.push_blob("bench/app", layer + str(i).encode())
                doc = {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": digest,
                        "size": len(layer) + len(str(i)),
                    },
                    "layers": [],
                }
                t0 = time.perf_counter()
                assert c.push_manifest("bench/app", f"t{i}", json.dumps(doc).encode()).status_code == 201
                if i >= 5:  # warm-up
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["off"])
        print(f"manifest PUT, {n} interleaved pushes per registry (receiver hanging: {rx.hanging} request(s) held)")
        for name, ts in times.items():
            ts.sort()
            med, p90 = statistics.median(ts), ts[int(len(ts) * 0.9)]
            print(f"  {name:<8} median {med * 1000:7.2f} ms   p90 {p90 * 1000:7.2f} ms   median/off {med / base:5.2f}")
    finally:
        for r in regs.values():
            r.stop()
        rx.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
