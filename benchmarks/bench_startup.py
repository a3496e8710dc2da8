"""Start-up time of the CLI and idle memory of ``moorage serve`` (issue 9, "fast start, small footprint").

    python benchmarks/bench_startup.py                   # embedded default vs Distribution 2.8.2
    python benchmarks/bench_startup.py --repeat 11 --s3-pg   # also S3 (Ceph RGW) + PostgreSQL (slow start)
    python benchmarks/bench_startup.py --compare-tree /tmp/before   # a second source tree, same run

Figures:

* ``moorage --help`` and ``moorage user list --data DIR`` (on a migrated data dir): wall time and CPU
  time (user+sys) of the whole process, median of ``--repeat`` runs.  Run as the console script runs
  (``from moorage.cli import main``), from the source tree, with its bytecode cached first (an
  installed package has its ``.pyc`` files; ``PYTHONDONTWRITEBYTECODE`` is unset for the runs).
* idle RSS (``VmRSS``, summed over the server's processes) and PSS of ``moorage serve --workers 1``
  on a fresh data dir, one second after it answers ``/v2/``, and again after a small push and pull
  (a 3-blob OCI image pushed, its manifest and blobs pulled); the same for ``--workers 2`` (master +
  two workers); Distribution 2.8.2 (Debian ``docker-registry``) measured the same way in the same run.

``ratio`` is Distribution/Moorage for memory (> 1: Moorage smaller).  On a shared machine wall times
swing with the load; CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import ocilayout  # noqa: E402
from tests.support.registry_proc import RegistryProcess, start_distribution  # noqa: E402

#: The console script's body (``moorage = moorage.cli:main``).
CONSOLE = "import sys; from moorage.cli import main; sys.argv[0] = 'moorage'; sys.exit(main())"
MiB = 1 << 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- CLI timing
def tree_env(tree: Path) -> dict[str, str]:
    """The environment a tree's processes run in: its bytecode written next to its sources (as an
    installed package has it; a private PYTHONPYCACHEPREFIX would recompile every library too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    env["PYTHONPATH"] = str(tree)
    return env


#: Imports everything a server and the migration child use, so that their bytecode is cached.
WARM = (
    "import sys, uvloop, alembic.command, moorage.server\n"
    "from moorage.config_load import load_settings\nfrom moorage.composition import build_app\n"
    "build_app(load_settings(None, data=sys.argv[1]))\n"
)


def warm(tree: Path, work: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", WARM, str(work / "warm-data")], env=tree_env(tree), cwd=work, check=True, capture_output=True
    )


def run_timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, user+sys CPU seconds) of one run; raises if the command fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[3:]} exited {proc.returncode}: {err.strip()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def cli_figures(tree: Path, work: Path, repeat: int) -> dict[str, float]:
    """Median wall and CPU time of ``moorage --help`` and ``moorage user list``."""
    env = tree_env(tree)
    data = work / "data"
    subprocess.run(
        [sys.executable, "-c", CONSOLE, "migrate", "--data", str(data)], env=env, cwd=work, check=True, capture_output=True
    )
    out: dict[str, float] = {}
    for name, args in (("help", ["--help"]), ("user_list", ["user", "list", "--data", str(data)])):
        argv = [sys.executable, "-c", CONSOLE, *args]
        run_timed(argv, env, work)  # warm: bytecode written, files in the page cache
        walls, cpus = [], []
        for _ in range(repeat):
            wall, cpu = run_timed(argv, env, work)
            walls.append(wall)
            cpus.append(cpu)
        out[f"{name}_wall"] = statistics.median(walls)
        out[f"{name}_cpu"] = statistics.median(cpus)
    walls = []
    for _ in range(repeat):  # the interpreter alone: what no change to Moorage can remove
        walls.append(run_timed([sys.executable, "-c", "pass"], env, work)[0])
    out["python_wall"] = statistics.median(walls)
    return out


# ----------------------------------------------------------------------------- memory
from proctree import tree_pids  # noqa: E402  (shared with bench_core and bench_load)


def _field(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mib(proc: RegistryProcess) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the server's process tree."""
    assert proc.proc is not None
    pids = tree_pids(proc.proc.pid)
    rss = sum(_field(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss / 1024, pss / 1024


def push_pull(base: str) -> None:
    """Push a small OCI image (config + two layers + manifest), then pull it back."""
    s = requests.Session()
    blobs = [
        ocilayout.canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
        os.urandom(256 * 1024),
        os.urandom(2 * MiB),
    ]
    for data in blobs:
        r = s.post(f"{base}/v2/bench/footprint/blobs/uploads/", timeout=30)
        r.raise_for_status()
        loc = requests.compat.urljoin(base + "/", r.headers["Location"])
        r = s.put(
            loc,
            params={"digest": ocilayout.sha256_digest(data)},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"PUT blob: {r.status_code} {r.text[:200]}")
    manifest = ocilayout.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": ocilayout.MT_OCI_MANIFEST,
            "config": {"mediaType": ocilayout.MT_OCI_CONFIG, "digest": ocilayout.sha256_digest(blobs[0]), "size": len(blobs[0])},
            "layers": [
                {"mediaType": ocilayout.MT_OCI_LAYER_TAR, "digest": ocilayout.sha256_digest(b), "size": len(b)} for b in blobs[1:]
            ],
        }
    )
    r = s.put(
        f"{base}/v2/bench/footprint/manifests/v1", data=manifest, headers={"Content-Type": ocilayout.MT_OCI_MANIFEST}, timeout=30
    )
    if r.status_code != 201:
        raise RuntimeError(f"PUT manifest: {r.status_code} {r.text[:200]}")
    r = s.get(f"{base}/v2/bench/footprint/manifests/v1", headers={"Accept": ocilayout.MT_OCI_MANIFEST}, timeout=30)
    r.raise_for_status()
    for layer in [json.loads(r.content)["config"], *json.loads(r.content)["layers"]]:
        got = s.get(f"{base}/v2/bench/footprint/blobs/{layer['digest']}", timeout=30)
        if got.status_code != 200 or ocilayout.sha256_digest(got.content) != layer["digest"]:
            raise RuntimeError(f"GET blob {layer['digest']}: {got.status_code}")
    r = s.get(f"{base}/v2/_catalog", timeout=30)
    r.raise_for_status()


def serve_figures(proc: RegistryProcess, settle: float) -> dict[str, float]:
    time.sleep(settle)
    rss0, pss0 = memory_mib(proc)
    push_pull(proc.url)
    time.sleep(settle)
    rss1, pss1 = memory_mib(proc)
    return {"rss_idle": rss0, "pss_idle": pss0, "rss_pushpull": rss1, "pss_pushpull": pss1}


def moorage_serve(tree: Path, work: Path, env: dict[str, str] | None = None, workers: int = 1) -> RegistryProcess:
    """``moorage serve`` from ``tree`` (run from ``work``, so that the tree on PYTHONPATH is the
    code that runs), with the bytecode cache its CLI figures warmed."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "data").mkdir(exist_ok=True)
    full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MOORAGE_")}
    full.update(
        {
            "PYTHONPATH": str(tree),
            "PYTHONPYCACHEPREFIX": None,
            "PYTHONDONTWRITEBYTECODE": None,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    proc = RegistryProcess(
        argv=[
            sys.executable,
            "-m",
            "moorage.cli",
            "serve",
            "--addr",
            "127.0.0.1:{port}",
            "--data",
            str(work / "data"),
            "--workers",
            str(workers),
        ],
        workdir=work,
        kind="moorage",
        env=full,
        cwd=work,
        start_timeout=60,
        data_dir=work / "data",
    )
    return proc.start()


def s3_pg_figures(
    stack: ExitStack, work: Path, trees: dict[str, Path], results: dict[str, dict[str, float]], settle: float
) -> None:
    """Moorage on Ceph RGW + PostgreSQL (both started here; slow)."""
    from tests.support.ceph import start_rgw
    from tests.support.postgres import create_database, start_postgres

    log("starting PostgreSQL and Ceph RGW")
    pg_url = stack.enter_context(start_postgres(work / "pg"))
    rgw = stack.enter_context(start_rgw(work / "rgw"))
    for label, tree in trees.items():
        name = f"bench_{label.lower()}_{os.getpid()}"
        env = {
            "MOORAGE_STORAGE__DRIVER": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": name.replace("_", "-"),
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
            "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
            "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
            "MOORAGE_STORAGE__S3__REGION": rgw.region,
            "MOORAGE_DATABASE__URL": create_database(pg_url, name),
            "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
        }
        log(f"{label}: serve (S3 + PostgreSQL)")
        proc = moorage_serve(tree, work / label / "serve-s3", env)
        try:
            results[label].update({f"s3pg_{k}": v for k, v in serve_figures(proc, settle).items()})
        finally:
            proc.stop()


# ----------------------------------------------------------------------------- report
def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}" if unit == "ms" else f"{v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="runs per CLI figure (median)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading memory")
    ap.add_argument("--s3-pg", action="store_true", help="also Moorage on Ceph RGW + PostgreSQL (slow to start)")
    ap.add_argument("--compare-tree", type=Path, help="another source tree to measure the same way (before/after)")
    ap.add_argument("--no-distribution", action="store_true")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    args = ap.parse_args()

    trees = {"Moorage": REPO_ROOT}
    if args.compare_tree:
        trees = {"compare": args.compare_tree.resolve(), **trees}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="moorage-bench-startup-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        for label, tree in trees.items():
            log(f"{label}: CLI start-up, {args.repeat} runs each")
            (work / label).mkdir()
            warm(tree, work / label)
            results[label] = cli_figures(tree, work / label, args.repeat)
        for label, tree in trees.items():
            log(f"{label}: serve (fs + SQLite), idle and after push/pull")
            proc = moorage_serve(tree, work / label / "serve")
            try:
                results[label].update(serve_figures(proc, args.settle))
            finally:
                proc.stop()
            log(f"{label}: serve --workers 2 (fs + SQLite)")
            proc = moorage_serve(tree, work / label / "serve-w2", workers=2)
            try:
                results[label].update({f"w2_{k}": v for k, v in serve_figures(proc, args.settle).items()})
            finally:
                proc.stop()
        if args.s3_pg:
            try:
                s3_pg_figures(stack, work, trees, results, args.settle)
            except Exception as exc:  # noqa: BLE001 - the other figures still print
                log(f"S3 + PostgreSQL figures failed: {exc}")
                args.s3_pg = False
        if not args.no_distribution:
            log("Distribution 2.8.2")
            dist = start_distribution(work / "distribution")
            try:
                results["Distribution"] = serve_figures(dist, args.settle)
            finally:
                dist.stop()

    rows = [
        ("python -c pass (the interpreter alone)", "ms", "python_wall", False),
        ("moorage --help, wall", "ms", "help_wall", False),
        ("moorage --help, CPU (user+sys)", "ms", "help_cpu", False),
        ("moorage user list, wall", "ms", "user_list_wall", False),
        ("moorage user list, CPU (user+sys)", "ms", "user_list_cpu", False),
        ("serve fs+SQLite: RSS idle after start", "MiB", "rss_idle", True),
        ("serve fs+SQLite: PSS idle after start", "MiB", "pss_idle", True),
        ("serve fs+SQLite: RSS after push/pull", "MiB", "rss_pushpull", True),
        ("serve fs+SQLite: PSS after push/pull", "MiB", "pss_pushpull", True),
        ("serve --workers 2: RSS idle (sum of 3 procs)", "MiB", "w2_rss_idle", True),
        ("serve --workers 2: PSS idle (sum of 3 procs)", "MiB", "w2_pss_idle", True),
        ("serve --workers 2: PSS after push/pull", "MiB", "w2_pss_pushpull", True),
    ]
    if args.s3_pg:
        rows += [
            ("serve S3+PG: RSS idle after start", "MiB", "s3pg_rss_idle", True),
            ("serve S3+PG: RSS after push/pull", "MiB", "s3pg_rss_pushpull", True),
        ]
    dist = results.get("Distribution", {})
    labels = list(trees)
    head = f"{'figure':42} {'unit':>4} {'Distribution':>12}" + "".join(f" {lb:>10} {'ratio':>7}" for lb in labels)
    print(head)
    for title, unit, key, vs_dist in rows:
        dkey = key.removeprefix("s3pg_").removeprefix("w2_")
        dv = dist.get(dkey) if vs_dist else None
        line = f"{title:42} {unit:>4} {fmt(dv, unit):>12}"
        for lb in labels:
            v = results[lb].get(key)
            ratio = f"{dv / v:.2f}x" if dv and v else "-"
            line += f" {fmt(v, unit):>10} {ratio:>7}"
        print(line)
    print(
        f"(median of {args.repeat} runs for times; ratio = Distribution/Moorage, > 1: Moorage smaller; "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
