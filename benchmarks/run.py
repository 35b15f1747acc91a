"""Benchmarks P1-P5 (README, "Benchmarks"), P6 (status webhooks), P7 (batch submits), P8
(fan-out: one message to thousands of recipients), P9 (scheduled
sends), P11 (1,000 concurrent senders) and P12 (submit -> delivered latency at 10
messages/s), each beside a baseline measured in the same run (P6's: the same run without
webhooks; P7's: single submits; P8's: the provider's quota; P9's: the same worker idle; P12 has none: compare two
versions in the same run).

    python benchmarks/run.py --quick          # < 3 minutes on 2 cores
    python benchmarks/run.py --only P1,P2     # a subset
    python benchmarks/run.py --pool threads --concurrency 64   # try another worker setup
    python benchmarks/run.py --only P1,P12 --delivery-batch 8  # the doorbell's batches
    python benchmarks/run.py --only P1,P3 --amqp amqp://guest:guest@127.0.0.1:5672//
                                              # also P1, P3 with RabbitMQ as the broker
    python benchmarks/run.py --only P1,P3 --amqp amqp://... --cluster
                                              # and with a Redis Cluster status store

Starts its own Redis (no AOF), the Easemob simulator and every worker/API
process, runs, stops them and prints one JSON object with keys P1..P9, P11 and P12, each
``{"value", "baseline", "ratio", "goal", "met", ...details}``. Progress goes
to stderr. Figures are ratios against baselines on the same Redis with the
same pool and concurrency; absolute numbers move with the machine's load.
With ``--amqp`` P1 and P3 run a second time with that RabbitMQ as the broker
(keys ``P1_amqp``, ``P3_amqp``), each beside the Redis-broker figure of the same run; with
``--cluster`` too, a third time with a 3-primary Redis Cluster as the status store
(``P1_cluster``, ``P3_cluster``: benchmarks/cluster_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cluster_bench, harness
from benchmarks.baseline_app import NOOP_TASK, POST_TASK
from benchmarks.baseline_app import app as baseline_celery
from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.store import ReadStore

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"}}
PROVIDER_LATENCY = 0.05
P3_LIMIT = 100


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        defaults = Settings(_env_file=None)
        self.pool = args.pool or defaults.worker_pool
        self.concurrency = args.concurrency or defaults.worker_concurrency
        self.processes = args.processes
        self.server, self.redis = harness.start_redis()
        self.redis_url = self.server.url
        self.store_pids = [self.server.pid or 0]
        """The status store's server processes (their CPU is the run's "redis" figure)."""
        self.results: dict[str, Any] = {}
        self.worker_rss: dict[str, int] = {}
        self.broker_url: str | None = None
        """The broker of the runs under way (None: the benchmark's Redis)."""
        self.amqp_queues: list[str] = []

    # -- helpers -----------------------------------------------------------

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def dispatcher_env(self, sim: harness.Simulator, queue: str, **extra: str) -> dict[str, str]:
        env = {
            **harness.easemob_env(sim.url, sim.calls_per_second, sim.messages_per_minute),
            "DISPATCHER_REDIS_URL": self.redis_url,
            "DISPATCHER_QUEUE": queue,
            "DISPATCHER_LOG_LEVEL": "INFO",
            "DISPATCHER_REAPER_INTERVAL": "5",
        }
        if self.args.delivery_batch is not None:
            env["DISPATCHER_DELIVERY_BATCH"] = str(self.args.delivery_batch)
        if self.broker_url:
            env["DISPATCHER_BROKER_URL"] = self.broker_url
            self.amqp_queues.append(queue)
        env.update(extra)
        return env

    def baseline_env(self, queue: str, sim: harness.Simulator | None = None) -> dict[str, str]:
        env = {"BENCH_BROKER_URL": self.redis_url, "BENCH_QUEUE": queue}
        if sim is not None:
            env["BENCH_POST_URL"] = sim.messages_url
            env["BENCH_TOKEN"] = sim.token()
        return env

    def our_workers(
        self, env: dict[str, str], count: int, pool: str, concurrency: int
    ) -> list[harness.Process]:
        queues = ",".join(
            env[q] for q in ("DISPATCHER_QUEUE", "DISPATCHER_WEBHOOK_QUEUE") if q in env
        )
        return [
            harness.celery_worker(
                f"dispatcher-{i}", "dispatcher.worker", queues, env,
                pool=pool, concurrency=concurrency,
            )
            for i in range(count)
        ]  # fmt: skip

    def producer(self, env: dict[str, str]) -> Any:
        from dispatcher.producer import Dispatcher

        values: dict[str, Any] = {k.removeprefix("DISPATCHER_").lower(): v for k, v in env.items()}
        if "clients" in values:
            values["clients"] = json.loads(values["clients"])
        return Dispatcher(Settings(**values))

    def flush(self) -> None:
        self.redis.flushall()

    def other_cpu(self, sim: harness.Simulator | None) -> dict[str, float]:
        """CPU seconds so far of the producer (this process), Redis and the simulator."""
        redis_cpu = sum(harness.cpu_seconds(pid) for pid in self.store_pids)
        cpu = {"producer": time.process_time(), "redis": redis_cpu}
        if sim is not None:
            cpu["simulator"] = harness.cpu_seconds(sim.proc.pid)
        return cpu

    def delivered(self) -> int:
        return ReadStore(self.redis).stats().get("state:delivered", 0)

    def run_ours(
        self,
        sim: harness.Simulator,
        env: dict[str, str],
        n: int,
        *,
        pool: str,
        concurrency: int,
        processes: int = 1,
        timeout: float = 120,
        prefill: bool = False,
        on_timed_start: Callable[[], None] | None = None,
        client: str | None = None,
        after_timed: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Submit ``n`` texts with the producer API (as ``client``); time until all are
        delivered; then ``after_timed``, the workers still running.

        ``prefill``: submit them before the workers start and time only the delivery
        (the workers' throughput, not the producer's).
        """
        self.flush()
        dispatcher = self.producer(env)
        # Warm up every worker thread (token, scripts, connections) before the clock starts.
        warm = processes * concurrency
        for _ in range(warm + (n if prefill else 0)):
            dispatcher.submit(TEXT, client=client)
        workers = self.our_workers(env, processes, pool, concurrency)
        with harness.started(*workers):
            harness.wait_until(lambda: self.delivered() >= warm, 60)
            result = self.timed(
                workers,
                sim,
                n,
                submit=None if prefill else lambda i: dispatcher.submit(TEXT, client=client),
                finished=lambda: self.delivered() >= n + warm,
                timeout=timeout,
                label="dispatcher",
                unit="message",
                on_timed_start=on_timed_start,
            )
            if after_timed is not None:
                after_timed()
        dispatcher.close()
        return {**result, "prefilled": prefill}

    def run_baseline(
        self,
        task: str,
        env: dict[str, str],
        n: int,
        *,
        sim: harness.Simulator | None = None,
        pool: str,
        concurrency: int,
        timeout: float = 120,
        prefill: bool = False,
        processes: int = 1,
    ) -> dict[str, Any]:
        """Enqueue ``n`` bare tasks from this process; time until the broker is idle."""
        self.flush()
        queue = env["BENCH_QUEUE"]
        workers = [
            harness.celery_worker(
                f"bare-{pool}{concurrency}-{i}",
                "benchmarks.baseline_app",
                queue,
                env,
                pool=pool,
                concurrency=concurrency,
            )
            for i in range(processes)
        ]
        baseline_celery.conf.broker_url = self.redis_url

        def send(i: int) -> None:
            baseline_celery.send_task(task, args=(f"bench{i}",), queue=queue)

        for i in range(processes * concurrency):  # warm up the worker threads, as for ours
            send(-1 - i)
        if prefill:
            for i in range(n):
                send(i)
        with harness.started(*workers):
            harness.wait_until(lambda: harness.broker_backlog(self.redis, queue) <= n, 60)
            result = self.timed(
                workers,
                sim,
                n,
                submit=None if prefill else send,
                # Twice: an idle moment between a fetch and its unacked entry must not count.
                finished=lambda: (
                    harness.broker_idle(self.redis, queue)
                    and harness.broker_idle(self.redis, queue)
                ),
                timeout=timeout,
                label=f"bare-{task}",
                unit="task",
            )
        return {**result, "prefilled": prefill}

    def timed(
        self,
        workers: list[harness.Process],
        sim: harness.Simulator | None,
        n: int,
        *,
        submit: Callable[[int], Any] | None,
        finished: Callable[[], bool],
        timeout: float,
        label: str,
        unit: str,
        on_timed_start: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The clocked part of a run: submit ``n`` (unless prefilled) and wait for ``finished``,
        with the workers' and the other processes' CPU per ``unit`` and the workers' RSS."""
        spy = harness.py_spy(workers[0].pid, label)
        cpu0 = [harness.cpu_seconds(w.pid) for w in workers]
        others0 = self.other_cpu(sim)
        if on_timed_start is not None:
            on_timed_start()
        started = time.monotonic()
        self.timed_from = time.time()
        if submit is not None:
            for i in range(n):
                submit(i)
        submitted = time.monotonic()
        done = harness.wait_until(finished, timeout)
        cpu = sum(harness.cpu_seconds(w.pid) - c for w, c in zip(workers, cpu0, strict=True))
        others = {k: v - others0[k] for k, v in self.other_cpu(sim).items()}
        rss = max(harness.rss_bytes(w.pid) for w in workers)
        harness.stop_py_spy(spy)
        elapsed = done - started
        return {
            "per_second": round(n / elapsed, 1),
            "n": n,
            "seconds": round(elapsed, 3),
            "submit_seconds": round(submitted - started, 3),
            f"worker_cpu_ms_per_{unit}": round(1000 * cpu / n, 3),
            **{f"{k}_cpu_ms_per_{unit}": round(1000 * v / n, 3) for k, v in others.items()},
            "worker_rss_bytes": rss,
        }

    # -- P1 ----------------------------------------------------------------

    def p1(self, sim: harness.Simulator) -> None:
        n = self.n(2000, 10000)
        sim.reset()
        say(f"P1 baseline: bare no-op, {self.pool} -c {self.concurrency} x{self.processes}, n={n}")
        bare = self.run_baseline(
            NOOP_TASK,
            self.baseline_env(f"bare-{uuid.uuid4().hex[:6]}"),
            n,
            pool=self.pool,
            concurrency=self.concurrency,
            processes=self.processes,
        )
        say(f"P1 ours: n={n}")
        sim.reset()
        ours = self.run_ours(
            sim,
            self.dispatcher_env(sim, f"p1-{uuid.uuid4().hex[:6]}"),
            n,
            pool=self.pool,
            concurrency=self.concurrency,
            processes=self.processes,
        )
        self.worker_rss = {"ours": ours["worker_rss_bytes"], "bare": bare["worker_rss_bytes"]}
        self.results["P1"] = {
            "value": ours["per_second"],
            "baseline": bare["per_second"],
            "ratio": ratio(ours["per_second"], bare["per_second"]),
            "goal": "ratio >= 0.6",
            "met": (ratio(ours["per_second"], bare["per_second"]) or 0) >= 0.6,
            "unit": "messages/s end to end (submit -> delivered) vs bare no-op tasks/s",
            "pool": self.pool,
            "concurrency": self.concurrency,
            "worker_processes": self.processes,
            "ours": ours,
            "bare": bare,
        }
        self.p5_records()

    # -- P2 ----------------------------------------------------------------

    def p2(self, sim: harness.Simulator) -> None:
        n = self.n(2000, 6000)
        sim.reset(latency=PROVIDER_LATENCY)
        say(f"P2 baseline: bare POST task, threads -c 64, n={n}")
        bare = self.run_baseline(
            POST_TASK,
            self.baseline_env(f"bare-{uuid.uuid4().hex[:6]}", sim),
            n,
            sim=sim,
            pool="threads",
            concurrency=64,
            prefill=True,
        )
        n_prefork = self.n(120, 400)
        say(f"P2 baseline: bare POST task, prefork -c 2, n={n_prefork}")
        prefork = self.run_baseline(
            POST_TASK,
            self.baseline_env(f"bare-{uuid.uuid4().hex[:6]}", sim),
            n_prefork,
            sim=sim,
            pool="prefork",
            concurrency=2,
            prefill=True,
        )
        say(f"P2 ours: {self.pool} -c {self.concurrency} x{self.processes}, n={n}")
        ours = self.run_ours(
            sim,
            self.dispatcher_env(sim, f"p2-{uuid.uuid4().hex[:6]}"),
            n,
            pool=self.pool,
            concurrency=self.concurrency,
            processes=self.processes,
            prefill=True,
        )
        r = ratio(ours["per_second"], bare["per_second"])
        r_prefork = ratio(ours["per_second"], prefork["per_second"])
        self.results["P2"] = {
            "value": ours["per_second"],
            "baseline": bare["per_second"],
            "ratio": r,
            "goal": "ratio >= 1.0 and >= 10x the prefork -c 2 figure",
            "met": (r or 0) >= 1.0 and (r_prefork or 0) >= 10,
            "unit": f"delivered/s with {PROVIDER_LATENCY * 1000:.0f} ms provider latency "
            "(queue filled first: the workers' rate, not the producer's)",
            "pool": self.pool,
            "concurrency": self.concurrency,
            "worker_processes": self.processes,
            "prefork_c2": prefork["per_second"],
            "ratio_vs_prefork_c2": r_prefork,
            "ours": ours,
            "bare_threads_c64": bare,
            "bare_prefork_c2": prefork,
        }

    # -- P3 ----------------------------------------------------------------

    def p3(self, key: str = "P3") -> None:
        n = self.n(600, 2000)
        sim = harness.Simulator(calls_per_second=P3_LIMIT).start()
        try:
            sim.reset()
            say(f"P3: 4 worker processes, simulator at {P3_LIMIT} calls/s, n={n}")
            cold: dict[str, int] = {}
            run = self.run_ours(
                sim,
                self.dispatcher_env(sim, f"p3-{uuid.uuid4().hex[:6]}"),
                n,
                on_timed_start=lambda: cold.update(sim.stats()),
                pool=self.pool,
                concurrency=self.concurrency,
                processes=4,
                timeout=max(60, 3 * n / P3_LIMIT),
            )
            stats = sim.stats()
            if os.environ.get("BENCH_DUMP"):
                Path(os.environ["BENCH_DUMP"]).write_text(json.dumps(sim.requests()))
            calls = sorted(
                r["receivedAt"]
                for r in sim.requests()
                if r["method"] == "POST"
                and r["path"].endswith("/messages")
                and r["receivedAt"] >= self.timed_from  # not the warm-up message
            )
        finally:
            sim.stop()
        span = calls[-1] - calls[0] if len(calls) > 1 else 0.0
        achieved = round((len(calls) - 1) / span, 2) if span else None
        cold_429 = cold.get("rate_limited_429", 0)
        timed_429 = stats.get("rate_limited_429", 0) - cold_429
        timed_403 = stats.get("quota_exceeded_403", 0) - cold.get("quota_exceeded_403", 0)
        rejected = timed_429 + timed_403
        self.results[key] = {
            "value": achieved,
            "baseline": P3_LIMIT,
            "ratio": ratio(achieved, P3_LIMIT),
            "goal": "ratio >= 0.95 and zero 429s once the workers are warm "
            "(429s while 4x32 cold threads open their first connections: cold_start_429)",
            "met": (ratio(achieved, P3_LIMIT) or 0) >= 0.95 and rejected == 0,
            "unit": "provider calls/s achieved (simulator's own clock) vs its limit",
            "received_429": timed_429,
            "received_403_quota": timed_403,
            "cold_start_429": cold_429,
            "message_calls": len(calls),
            "delivered": self.delivered(),
            "worker_processes": 4,
            "run": run,
        }

    # -- P1 and P3 with RabbitMQ as the broker ---------------------------------

    def on_amqp(self, sim: harness.Simulator | None, only: set[str]) -> None:
        """P1 and P3 again with ``--amqp`` as the broker; each beside its Redis-broker figure."""
        self.broker_url = self.args.amqp
        try:
            if "P1" in only and sim is not None:
                ours = self.p1_again(sim, "amqp", "on RabbitMQ")
                on_redis = self.results.get("P1", {})
                self.results["P1_amqp"] = {
                    "value": ours["per_second"],
                    "baseline": on_redis.get("value"),
                    "ratio": ratio(ours["per_second"], on_redis.get("value")),
                    "ratio_vs_bare_noop": ratio(ours["per_second"], on_redis.get("baseline")),
                    "goal": "reported: RabbitMQ broker vs the Redis broker of this run",
                    "unit": "messages/s end to end (submit -> delivered), quorum queue, "
                    "publisher confirms",
                    "ours": ours,
                }
            if "P3" in only:
                say("P3 on RabbitMQ")
                self.p3("P3_amqp")
                on_redis = self.results.get("P3", {})
                self.results["P3_amqp"]["redis_broker_value"] = on_redis.get("value")
        finally:
            self.broker_url = None
            self.delete_amqp_queues()

    def p1_again(self, sim: harness.Simulator, tag: str, label: str) -> dict[str, Any]:
        """P1's run of ours once more, with the broker and status store set up now."""
        n = self.n(2000, 10000)
        say(f"P1 {label}: n={n}")
        sim.reset()
        return self.run_ours(
            sim,
            self.dispatcher_env(sim, f"p1-{tag}-{uuid.uuid4().hex[:6]}"),
            n,
            pool=self.pool,
            concurrency=self.concurrency,
            processes=self.processes,
        )

    def delete_amqp_queues(self) -> None:
        """The quorum queues these runs declared: they outlive their consumers otherwise."""
        from kombu.connection import Connection

        with Connection(self.args.amqp) as connection:  # type: ignore[no-untyped-call]
            for queue in self.amqp_queues:
                channel = connection.channel()
                try:
                    channel.queue_delete(queue)
                except connection.channel_errors:
                    pass
                finally:
                    if channel.is_open:
                        channel.close()
        self.amqp_queues.clear()

    # -- P5 ----------------------------------------------------------------

    def p5_records(self) -> None:
        """Bytes per delivered text message's status record (hash + history), from P1's data."""
        refs = []
        for key in self.redis.scan_iter(match=keys.ALL_RECORDS, count=1000):
            refs.append(keys.ref_of_record(key.decode()))
            if len(refs) >= 200:
                break
        sizes = []
        for ref in refs:
            size = int(self.redis.memory_usage(keys.message(ref), samples=0) or 0)
            size += int(self.redis.memory_usage(keys.history(ref), samples=0) or 0)
            sizes.append(size)
        self.p5_sizes = sizes

    def p5(self) -> None:
        sizes = getattr(self, "p5_sizes", [])
        per_record = round(statistics.mean(sizes)) if sizes else None
        ours, bare = self.worker_rss.get("ours"), self.worker_rss.get("bare")
        rss_ratio = ratio(ours, bare)
        self.results["P5"] = {
            "value": per_record,
            "baseline": None,
            "ratio": None,
            "goal": "reported; our budget: <= 2048 bytes per delivered text record "
            "and worker RSS <= 2x a bare Celery worker of the same pool",
            "met": per_record is not None
            and per_record <= 2048
            and rss_ratio is not None
            and rss_ratio <= 2.0,
            "unit": "Redis bytes per status record (MEMORY USAGE of hash + history)",
            "records_sampled": len(sizes),
            "worker_rss_bytes": ours,
            "bare_worker_rss_bytes": bare,
            "worker_rss_ratio": rss_ratio,
        }

    # -- P4 ----------------------------------------------------------------

    def p4(self) -> None:
        from benchmarks import http_bench

        self.results["P4"] = http_bench.run(self, say)

    # -- P7 ----------------------------------------------------------------

    def p7(self) -> None:
        from benchmarks import batch_bench

        self.results["P7"] = batch_bench.run(self, say)

    # -- P8 ----------------------------------------------------------------

    def p8(self) -> None:
        from benchmarks import fanout_bench

        self.results["P8"] = fanout_bench.run(self, say)

    # -- P9 ----------------------------------------------------------------

    def p9(self) -> None:
        from benchmarks import scheduled

        self.results["P9"] = scheduled.run(self, say)

    # -- P11 ---------------------------------------------------------------

    def p11(self) -> None:
        from benchmarks import overload_bench

        self.results["P11"] = overload_bench.run(self, say, self.args.p11_pool)

    # -- all ---------------------------------------------------------------

    def run(self, only: set[str]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            if only & {"P1", "P2", "P5", "P6", "P12"}:
                sim = harness.Simulator().start()
                try:
                    if only & {"P1", "P5"}:
                        self.p1(sim)
                    if "P2" in only:
                        self.p2(sim)
                    if self.args.amqp and "P1" in only:
                        self.on_amqp(sim, {"P1"})
                        if self.args.cluster:
                            cluster_bench.run(self, sim, {"P1"}, say)
                    if "P6" in only:
                        from benchmarks import webhooks_bench

                        self.results["P6"] = webhooks_bench.run(self, say, sim)
                    if "P12" in only:
                        from benchmarks import latency_bench

                        self.results["P12"] = latency_bench.run(self, say, sim)
                finally:
                    sim.stop()
            if "P3" in only:
                self.p3()
                if self.args.amqp:
                    self.on_amqp(None, {"P3"})
                    if self.args.cluster:
                        cluster_bench.run(self, None, {"P3"}, say)
            if "P4" in only:
                self.p4()
            if "P5" in only:
                self.p5()
            if "P7" in only:
                self.p7()
            if "P8" in only:
                self.p8()
            if "P9" in only:
                self.p9()
            if "P11" in only:
                self.p11()
        finally:
            self.redis.close()
            self.server.cleanup()
        keys_in_order: tuple[str, ...] = ("P1", "P1_amqp", "P1_cluster", "P2", "P3", "P3_amqp")
        keys_in_order += ("P3_cluster", "P4", "P5", "P6", "P7", "P8", "P9", "P11", "P12")
        out: dict[str, Any] = {k: self.results[k] for k in keys_in_order if k in self.results}
        out["machine"] = machine()
        out["seconds"] = round(time.monotonic() - started, 1)
        out["quick"] = self.quick
        return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "load_1min_at_end": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: under 3 minutes")
    parser.add_argument(
        "--only", default="P1,P2,P3,P4,P5,P6,P7,P8,P9,P11,P12", help="comma-separated subset"
    )
    parser.add_argument(
        "--p11-pool", type=int, default=None, help="P11 with this DISPATCHER_API_REDIS_CONNECTIONS"
    )
    parser.add_argument("--pool", default=None, help="worker pool (default: the product's)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument(
        "--delivery-batch",
        type=int,
        default=None,
        help="DISPATCHER_DELIVERY_BATCH of producers and workers (default: the product's)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="worker processes for P1/P2 (default: two per core, the recommended setup)",
    )
    parser.add_argument(
        "--amqp",
        default=None,
        metavar="URL",
        help="also run P1 and P3 with this RabbitMQ as the broker (P1_amqp, P3_amqp)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="with --amqp: also run P1 and P3 with a 3-primary Redis Cluster as the status "
        "store (P1_cluster, P3_cluster)",
    )
    args = parser.parse_args(argv)
    only = {p.strip().upper() for p in args.only.split(",") if p.strip()}
    result = Bench(args).run(only)
    print(json.dumps(result, indent=2))
    # Process logs are kept only when asked (or when the run failed: the path is in the error).
    if not os.environ.get("BENCH_KEEP_LOGS"):
        shutil.rmtree(harness.LOG_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
