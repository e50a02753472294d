"""Benchmark Confab against baselines measured in the same run.

    python -m confab.tools.bench [--servers bare,direct,confab[,confab-quiet,confab-pg,confab-noanalytics]]
                                 [--scenarios ...]
                                 [--duration S] [--scale F] [--shards N] [--json FILE]

Each server runs in its own process group with a marker in its environment, so
its every process (Thespian's detached admin included) is measured and stopped;
the load generator (``load.py``) runs in a process of its own. Prints one table:
rate, p50, p99, peak RSS of the server processes and CPU per message (Confab: the
edge's and each shard's) per scenario, and ratios of Confab against the bare gRPC
baseline (on asyncio's own loop) and the direct (no actors) baseline, followed by
the targets and whether this run met them.

``confab`` is Confab as ``confab serve`` runs with the bundled configuration: logging
at INFO, so one access line per call, JSON on its stderr (a file here, as under a
service manager that keeps its output). The targets and every ratio are its figures.
``confab-quiet`` (only when named) is the same server with ``--log-level WARNING``:
no access lines, to see what they cost.

``confab-pg`` (only when named) is the same single-host server on a PostgreSQL store:
a server of its own is started for the run, with fsync on, as durable as the SQLite
store's synchronous=FULL; its processes' CPU per message is noted apart, and a last
table sets its rates against ``confab``'s.

``confab-noanalytics`` (only when named) is the same server with ``engine.analytics: false``:
the shards count no conversation analytics, to see what counting them costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from confab.protos import health_pb2, health_pb2_grpc
from confab.tools.bench.load import SCENARIOS
from confab.tools.postgres_server import PostgresServer, PostgresUnavailable

SERVERS = ("bare", "direct", "confab")
# measured only when --servers names them
ON_REQUEST = ("confab-quiet", "confab-pg", "confab-noanalytics")
# Conversations Confab keeps in memory per shard during the benchmark: small enough that
# the cold scenario passes it, so the table shows RSS flattening once the cap is reached.
BENCH_RESIDENT_CAP = 50_000


@dataclass
class Measurement:
    server: str
    scenario: str
    rate: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float
    errors: int
    checks: dict[str, Any] = field(default_factory=dict)
    # CPU microseconds per message: the serving process (Confab's edge), and per shard process.
    edge_us: float = 0.0
    shard_us: list[float] = field(default_factory=list)


class Server:
    """A server under test: started, sampled for RSS, stopped with everything it started."""

    def __init__(self, kind: str, workdir: Path, shards: int, edges: int | None = None) -> None:
        self.kind = kind
        self.marker = uuid.uuid4().hex
        self.postgres: PostgresServer | None = None
        data = workdir / kind
        data.mkdir(parents=True)
        store: list[str] = []
        if kind == "confab-pg":
            self.postgres = PostgresServer(fsync=True).start()
            try:
                store = ["--store", self.postgres.create_database("confab_bench")]
            except BaseException:
                self.postgres.close()
                raise
        if kind.startswith("confab"):
            config = workdir / f"{kind}-bench.yaml"
            analytics = "false" if kind == "confab-noanalytics" else "true"
            config.write_text(
                f"engine:\n  resident_conversations_per_shard: {BENCH_RESIDENT_CAP}\n"
                f"  analytics: {analytics}\n"
            )
            command = [
                sys.executable,
                "-m",
                "confab.tools.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data),
                "--shards",
                str(shards),
                "--config",
                str(config),
                # The bundled logging (INFO: an access line per call) unless the quiet variant.
                *(["--log-level", "WARNING"] if kind == "confab-quiet" else []),
                *store,
                *(["--edges", str(edges)] if edges else []),
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "confab.tools.bench.baselines",
                kind,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data),
            ]
        # Its logs (the access lines) go to a file, written as they would be for real; a pipe
        # would need a reader in this process, taking CPU from the two under test.
        self.log_path = workdir / f"{kind}.log"
        try:
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env={**os.environ, "CONFAB_BENCH_RUN": self.marker},
                    start_new_session=True,
                )
        except BaseException:
            if self.postgres is not None:
                self.postgres.close()
            raise
        assert self.process.stdout is not None
        self.target = ""
        for line in self.process.stdout:
            if "serving on " in line:
                self.target = line.rsplit("serving on ", 1)[1].split()[0]
                break
        if not self.target:
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.log_path.read_text(errors='replace')}")
        # Keep reading its output so it never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("CONFAB_BENCH_RUN") == self.marker:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _health(self) -> Any:
        with grpc.insecure_channel(self.target) as channel:
            return health_pb2_grpc.HealthStub(channel).GetDetailedHealth(health_pb2.DetailedHealthRequest())

    def resident_conversations(self) -> int | None:
        if not self.kind.startswith("confab"):
            return None
        return int(self._health().details["resident_conversations"])

    def cpu_seconds(self) -> tuple[float, list[float]]:
        """CPU time so far of the serving process, and of each shard process (Confab)."""
        shards = (
            [int(s["pid"]) for s in self._health().details["shard_detail"]]
            if self.kind.startswith("confab")
            else []
        )

        def used(pid: int) -> float:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                return 0.0
            return float(times.user + times.system)

        # With several edges (--edges), the serving processes are the host and its edge processes.
        edges = [p.pid for p in psutil.Process(self.process.pid).children() if _is_edge(p)]
        return used(self.process.pid) + sum(used(pid) for pid in edges), [used(pid) for pid in shards]

    def database_cpu_seconds(self) -> float:
        """CPU time so far of the PostgreSQL server's processes (0 without one)."""
        if self.postgres is None:
            return 0.0
        total = 0.0
        for process in self.postgres.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        try:
            self._stop_server()
        finally:
            if self.postgres is not None:
                self.postgres.close()

    def _stop_server(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        for process in self.processes():
            process.kill()


def _is_edge(process: psutil.Process) -> bool:
    try:
        return "confab.tools.edge" in process.cmdline()
    except psutil.Error:
        return False


class RssSampler(threading.Thread):
    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self.started_at = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter() - self.started_at, self.server.rss()))
            self._stop_event.wait(0.2)

    def finish(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join()
        return self.samples

    @staticmethod
    def at(samples: list[tuple[float, int]], when: float) -> int:
        earlier = [rss for t, rss in samples if t <= when]
        return earlier[-1] if earlier else samples[0][1]


def run_scenario(server: Server, scenario: str, duration: float, scale: float) -> Measurement:
    before = server.rss()
    edge_before, shards_before = server.cpu_seconds()
    database_before = server.database_cpu_seconds()
    resident_before = server.resident_conversations() if scenario == "cold" else None
    sampler = RssSampler(server)
    sampler.start()
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "confab.tools.bench.load",
            "--target",
            server.target,
            "--scenario",
            scenario,
            "--duration",
            str(duration),
            "--scale",
            str(scale),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    samples = sampler.finish()
    edge_after, shards_after = server.cpu_seconds()
    database_used = server.database_cpu_seconds() - database_before
    result = json.loads(output)
    messages = max(1, int(result["messages"]))
    measurement = Measurement(
        server=server.kind,
        scenario=scenario,
        rate=result["rate"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        peak_rss_mb=max(rss for _, rss in samples) / 2**20,
        errors=result["errors"],
        checks=result["checks"],
        edge_us=(edge_after - edge_before) / messages * 1e6,
        shard_us=[
            (after - earlier) / messages * 1e6
            for earlier, after in zip(shards_before, shards_after, strict=False)
        ],
    )
    if server.postgres is not None:
        measurement.checks["postgres_cpu_us"] = round(database_used / messages * 1e6)
    if scenario == "cold" and server.kind != "bare":  # the bare server keeps no conversations
        resident = server.resident_conversations()
        after = server.rss()
        touched = result["messages"]
        measurement.checks["conversations"] = touched
        # Conversations this scenario added to memory (direct keeps every one it touched).
        added = resident - (resident_before or 0) if resident is not None else touched
        measurement.checks["resident"] = resident if resident is not None else touched
        if added > 0:
            measurement.checks["kb_per_resident"] = round((after - before) / 1024 / added, 2)
        # RSS once half the conversations were touched, and at the end: flat once the cap is reached.
        progress = result["progress"]
        if progress:
            half = next(t for t, done in progress if done >= touched / 2)
            measurement.checks["rss_mb_at_half"] = round(RssSampler.at(samples, half) / 2**20, 1)
            measurement.checks["rss_mb_at_end"] = round(after / 2**20, 1)
    return measurement


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_table(measurements: list[Measurement]) -> None:
    by = {(m.server, m.scenario): m for m in measurements}
    # Wide enough for the servers measured only on request (confab-quiet, confab-pg).
    width = max([7, *(len(m.server) for m in measurements)])
    header = (
        f"{'scenario':<10} {'server':<{width}} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7}"
        f" {'/bare':>6} {'/direct':>7} {'cpu us/msg':>16}  notes"
    )
    print(header)
    print("-" * len(header))
    for m in measurements:
        bare = by.get(("bare", m.scenario))
        direct = by.get(("direct", m.scenario))
        over_bare = ratio(m.rate, bare.rate) if bare and m.server != "bare" else ""
        over_direct = ratio(m.rate, direct.rate) if direct and m.server.startswith("confab") else ""
        notes = ", ".join(f"{k}={v}" for k, v in m.checks.items())
        if m.errors:
            notes = f"errors={m.errors} " + notes
        # The serving process, then each shard's (their CPU per message of the whole run).
        cpu = f"{m.edge_us:.0f}" + "".join(f"+{us:.0f}" for us in m.shard_us)
        print(
            f"{m.scenario:<10} {m.server:<{width}} {m.rate:>9.0f} {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} "
            f"{m.peak_rss_mb:>7.0f} {over_bare:>6} {over_direct:>7} {cpu:>16}  {notes}"
        )


def print_targets(measurements: list[Measurement]) -> None:
    by = {(m.server, m.scenario): m for m in measurements}

    def get(server: str, scenario: str) -> Measurement | None:
        return by.get((server, scenario))

    rows: list[tuple[str, str, bool]] = []
    c64, bare64 = get("confab", "unary-c64"), get("bare", "unary-c64")
    if c64 and bare64:
        rows.append(("unary-c64 >= 0.6 x bare", ratio(c64.rate, bare64.rate), c64.rate >= 0.6 * bare64.rate))
        # The edge's CPU per call against the bare server's whole process per call.
        rows.append(
            (
                "edge CPU per call <= 1.3 x bare's",
                ratio(c64.edge_us, bare64.edge_us),
                0 < c64.edge_us <= 1.3 * bare64.edge_us,
            )
        )
    c1, bare1 = get("confab", "unary-c1"), get("bare", "unary-c1")
    if c1 and bare1:
        rows.append(
            (
                "unary-c1 p50 <= 2.0 x bare p50",
                ratio(c1.p50_ms, bare1.p50_ms),
                c1.p50_ms <= 2.0 * bare1.p50_ms,
            )
        )
    hot, bare_hot = get("confab", "hot"), get("bare", "hot")
    if hot and bare_hot:
        ok = (
            hot.rate >= 0.6 * bare_hot.rate
            and bool(hot.checks.get("gap_free"))
            and bool(hot.checks.get("distinct_counts"))
        )
        rows.append(("hot >= 0.6 x bare, counts gap-free", ratio(hot.rate, bare_hot.rate), ok))
    for scenario, factor in (("stream", 1.5), ("batch", 5.0)):
        m = get("confab", scenario)
        if m and bare64:
            rows.append(
                (
                    f"{scenario} >= {factor:g} x bare unary-c64",
                    ratio(m.rate, bare64.rate),
                    m.rate >= factor * bare64.rate,
                )
            )
    cold = get("confab", "cold")
    if cold and "kb_per_resident" in cold.checks:
        kb = cold.checks["kb_per_resident"]
        rows.append(("cold <= 2 KB RSS per resident conversation", f"{kb} KB", kb <= 2.0))
        half, end = cold.checks.get("rss_mb_at_half"), cold.checks.get("rss_mb_at_end")
        if half and end:
            rows.append(("cold RSS flat past the cap (end/half <= 1.1)", ratio(end, half), end <= 1.1 * half))
    if not rows:
        return
    print()
    print(f"{'target':<44} {'measured':>9}  met")
    for name, measured, met in rows:
        print(f"{name:<44} {measured:>9}  {'yes' if met else 'NO'}")


def print_store_comparison(measurements: list[Measurement]) -> None:
    """Confab on PostgreSQL against Confab on SQLite, scenario by scenario."""
    by = {(m.server, m.scenario): m for m in measurements}
    rows = [
        (scenario, by[("confab", scenario)], by[("confab-pg", scenario)])
        for scenario in dict.fromkeys(m.scenario for m in measurements)
        if ("confab", scenario) in by and ("confab-pg", scenario) in by
    ]
    if not rows:
        return
    print()
    print(
        f"{'store':<10} {'sqlite msg/s':>12} {'postgres msg/s':>14} {'pg/sqlite':>9} {'p50 ms sqlite/pg':>17}"
    )
    for scenario, sqlite, postgres in rows:
        print(
            f"{scenario:<10} {sqlite.rate:>12.0f} {postgres.rate:>14.0f}"
            f" {ratio(postgres.rate, sqlite.rate):>9} {sqlite.p50_ms:>8.2f}/{postgres.p50_ms:<8.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="Confab benchmarks against same-run baselines")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, of {', '.join(SERVERS + ON_REQUEST)} "
        " (confab-quiet: --log-level WARNING, no access lines; confab-pg: on a PostgreSQL store;"
        " confab-noanalytics: engine.analytics false)",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per timed scenario")
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier for stream and cold")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    parser.add_argument("--edges", type=int, help="confab serve --edges N (default: the server's own)")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for name in servers:
        if name not in SERVERS + ON_REQUEST:
            parser.error(f"unknown server {name!r}; known: {SERVERS + ON_REQUEST}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; known: {SCENARIOS}")

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="confab-bench-") as workdir:
        for kind in servers:
            try:
                server = Server(kind, Path(workdir), args.shards, args.edges)
            except PostgresUnavailable as exc:
                parser.error(f"{kind}: {exc}")
            try:
                for scenario in scenarios:
                    print(f"  {kind:<7} {scenario} ...", file=sys.stderr, flush=True)
                    measurements.append(run_scenario(server, scenario, args.duration, args.scale))
            finally:
                server.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"confab shards: {args.shards}, duration {args.duration}s, scale {args.scale}"
    )
    print_table(measurements)
    print_targets(measurements)
    print_store_comparison(measurements)
    if args.json:
        Path(args.json).write_text(json.dumps([m.__dict__ for m in measurements], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
