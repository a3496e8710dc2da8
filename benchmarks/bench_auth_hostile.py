"""Figures for the authentication items of issue 8, against a live ``moorage serve``:

* the ReDoS attack (a grant pattern ``a*a*...*b`` and a scope naming ``"a"*100``): time of the
  token request, and of a login sent while it runs;
* the glob matcher alone against the regex it replaced, on growing names (the regex is only
  run on short names: it is exponential);
* 300 parallel wrong passwords against ``auth.login_rate_limit`` 10: how many got a 401 (a
  bcrypt check) and how many a 429.

    python benchmarks/bench_auth_hostile.py [--workers 2] [--attack-timeout 20]

Before/after: the server runs the source tree the script lives in, so copy the script into
another tree (``git archive <commit> | tar -x -C DIR``) and run it there; the attack's wait is
bounded by ``--attack-timeout`` (on the old code it never ends by itself).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.authsrv import ADMIN_PASSWORD, start_auth_server, token_response  # noqa: E402

ADMIN = ("admin", ADMIN_PASSWORD)
PATTERN = "a*a*a*a*a*a*a*a*a*a*a*a*b"


def bench_matcher() -> None:
    try:
        from moorage.registry.globs import glob_match
    except ImportError:  # a tree from before the matcher
        return

    old = re.compile("^" + ".*".join(re.escape(p) for p in PATTERN.split("*")) + "$")
    for n in (16, 20, 24, 28, 100, 255):
        t = time.perf_counter()
        glob_match(PATTERN, "a" * n)
        g = time.perf_counter() - t
        r = float("nan")
        if n <= 28:
            t = time.perf_counter()
            old.match("a" * n)
            r = time.perf_counter() - t
        print(f"matcher n={n:3d}: glob {g * 1e6:9.1f} us   old regex {r * 1e3:10.1f} ms")


def bench_server(workers: int, attack_timeout: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    env = {"MOORAGE_WORKERS": str(workers), "MOORAGE_AUTH__BCRYPT_ROUNDS": "10"}
    proc = start_auth_server(tmp, env)
    label = f"{Path(__file__).resolve().parents[1]} ({workers} workers)"
    try:
        s = requests.Session()
        s.auth = ADMIN
        for u in ("eve", "alice"):
            s.post(f"{proc.url}/api/v1/users", json={"name": u, "password": f"{u}-pw"}, timeout=30)
        pat = s.post(f"{proc.url}/api/v1/tokens", json={"user": "eve", "scope": [f"{PATTERN}:pull"]}, timeout=30).json()["token"]
        token_response(proc, [], ("alice", "alice-pw"))  # warm
        # first: on the old code the attack below freezes a worker for good
        s.post(f"{proc.url}/api/v1/users", json={"name": "victim", "password": "victim-pw"}, timeout=30)
        with ThreadPoolExecutor(64) as pool:
            t = time.perf_counter()
            codes = list(pool.map(lambda i: token_response(proc, [], ("victim", f"x{i}")).status_code, range(300)))
            wall = time.perf_counter() - t
        print(
            f"{label}: 300 parallel wrong passwords (limit 10): {codes.count(401)} x 401, "
            f"{codes.count(429)} x 429, other {len(codes) - codes.count(401) - codes.count(429)}; {wall:.2f} s"
        )
        took: dict[str, float] = {}

        def attack() -> None:
            t = time.perf_counter()
            try:
                requests.get(
                    f"{proc.url}/auth/token",
                    auth=("eve", pat),
                    timeout=attack_timeout,
                    params={"service": "moorage", "scope": "repository:" + "a" * 100 + ":pull"},
                )
                took["attack"] = time.perf_counter() - t
            except requests.RequestException:
                took["attack"] = float("inf")

        th = threading.Thread(target=attack)
        th.start()
        time.sleep(0.2)
        t = time.perf_counter()
        try:
            code = requests.get(f"{proc.url}/auth/token", auth=("alice", "alice-pw"), timeout=attack_timeout).status_code
        except requests.RequestException:
            code = 0
        login = time.perf_counter() - t
        th.join()
        print(f"{label}: attack token request {took['attack']:.3f} s; login during it {login:.3f} s (status {code})")

    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--attack-timeout", type=float, default=30.0)
    args = ap.parse_args()
    bench_matcher()
    bench_server(args.workers, args.attack_timeout)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
