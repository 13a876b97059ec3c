#!/usr/bin/python3
"""Benchmark: how fast kilnd turns a submitted trivial job into a running process, and
how many trivial jobs per second it pushes through two slots.

Part 1 (latency): N sequential ``["true"]`` jobs on an idle kilnd --local-agent. For
each: the master's created_at -> scheduled_at and created_at -> started_at (its own
clock), and the client-observed submit -> RUNNING (polling GET every --poll-ms on a
kept-alive connection; a job the client first sees already ended counts at that moment)
and submit -> FINISHED. The next job is submitted only once the previous one ended.
Goal: master p50 created -> started <= 50 ms.

Part 2 (throughput): a fresh kilnd --slots 2; --jobs ``["true"]`` jobs (1 slot each)
submitted as fast as possible from --threads client threads; jobs/s from the first submit
to the last job seen ended (client) and from the first created_at to the last
finished_at (master).

Prints figures only; asserts nothing about speed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnd_process import (TERMINAL_STATES, FastClient, KilndProcess,  # noqa: E402
                           default_build_dir, machine_line, parse_time, percentile,
                           wait_terminal)


def summary(name: str, values_ms: list[float], goal_ms: float = 0) -> str:
    line = (f"  {name:<38} p50 {percentile(values_ms, 50):7.1f}  p90 "
            f"{percentile(values_ms, 90):7.1f}  p99 {percentile(values_ms, 99):7.1f}  max "
            f"{max(values_ms):7.1f} ms")
    if goal_ms:
        p50 = percentile(values_ms, 50)
        line += f"   (goal p50 <= {goal_ms:.0f} ms: {'met' if p50 <= goal_ms else 'NOT met'})"
    return line


def latency(build_dir: str, n: int, poll_s: float, slots: int, keep: bool) -> None:
    print(f"== latency: {n} sequential ['true'] jobs, kilnd --slots {slots}, "
          f"poll every {poll_s * 1000:.0f} ms")
    with KilndProcess(build_dir, slots=slots, keep=keep) as kilnd:
        c = FastClient(kilnd.url)
        # One warm-up job: first fork/exec of kiln-shim, page cache, SQLite statements.
        warm = c.submit(["true"])
        wait_terminal(c, warm["id"], poll_s)

        post_ms, seen_running_ms, seen_finished_ms = [], [], []
        saw_running = 0
        ids = []
        for _ in range(n):
            t0 = time.monotonic()
            job = c.submit(["true"])
            t1 = time.monotonic()
            post_ms.append((t1 - t0) * 1000)
            ids.append(job["id"])
            running_at = None
            while True:
                state = c.job(job["id"])["state"]
                now = time.monotonic()
                if running_at is None and (state == "RUNNING" or state in TERMINAL_STATES):
                    running_at = now
                    saw_running += state == "RUNNING"
                if state in TERMINAL_STATES:
                    if state != "FINISHED":
                        raise SystemExit(f"job {job['id']} ended {state}")
                    break
                time.sleep(poll_s)
            seen_running_ms.append((running_at - t0) * 1000)
            seen_finished_ms.append((now - t0) * 1000)

        sched_ms, start_ms, run_ms, event_running_ms, event_finished_ms = [], [], [], [], []
        for job_id in ids:
            r = c.job(job_id)
            created = parse_time(r["created_at"])
            sched_ms.append((parse_time(r["scheduled_at"]) - created) * 1000)
            start_ms.append((parse_time(r["started_at"]) - created) * 1000)
            run_ms.append((parse_time(r["finished_at"]) - parse_time(r["started_at"])) * 1000)
            events = c.request("GET", f"/api/v1/jobs/{job_id}/events")["events"]
            for e in events:
                if e["message"].startswith("RUNNING on"):
                    event_running_ms.append((parse_time(e["time"]) - created) * 1000)
                if "-> FINISHED" in e["message"]:
                    event_finished_ms.append((parse_time(e["time"]) - created) * 1000)
        c.close()
        print(f"  ({machine_line()})")
        print("  master clock:")
        print(summary("created_at -> scheduled_at", sched_ms))
        print(summary("created_at -> started_at", start_ms, goal_ms=50))
        print(summary("started_at -> finished_at", run_ms))
        print(summary("created_at -> RUNNING event", event_running_ms))
        print(summary("created_at -> FINISHED event", event_finished_ms))
        print("  client clock:")
        print(summary("POST /api/v1/jobs round trip", post_ms))
        print(summary("submit -> seen RUNNING (or ended)", seen_running_ms))
        print(summary("submit -> seen FINISHED", seen_finished_ms))
        print(f"  RUNNING was observed for {saw_running}/{n} jobs (the others were first seen "
              f"already ended)")


def throughput(build_dir: str, jobs: int, threads: int, poll_s: float, keep: bool) -> None:
    print(f"== throughput: {jobs} ['true'] jobs (1 slot each) on kilnd --slots 2, "
          f"{threads} submitting threads")
    with KilndProcess(build_dir, slots=2, keep=keep) as kilnd:
        warm = FastClient(kilnd.url)
        wait_terminal(warm, warm.submit(["true"])["id"], poll_s)
        rss_before = kilnd.rss_mb()

        per_thread = [jobs // threads + (i < jobs % threads) for i in range(threads)]
        errors: list[str] = []
        submitted = [0] * threads
        start = threading.Barrier(threads + 1)

        def submitter(i: int) -> None:
            c = FastClient(kilnd.url)
            start.wait()
            try:
                for _ in range(per_thread[i]):
                    c.submit(["true"])
                    submitted[i] += 1
            except Exception as e:  # reported below, not swallowed
                errors.append(f"thread {i}: {e}")
            c.close()

        workers = [threading.Thread(target=submitter, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        t0 = time.monotonic()
        for w in workers:
            w.join()
        t_submitted = time.monotonic()
        active = "state=QUEUED&state=SCHEDULED&state=RUNNING&limit=1"
        while warm.request("GET", f"/api/v1/jobs?{active}")["jobs"]:
            time.sleep(poll_s)
        t_done = time.monotonic()

        records: list[dict[str, Any]] = []
        token = None
        while True:
            page = warm.request("GET", "/api/v1/jobs?limit=1000" +
                                (f"&page_token={token}" if token else ""))
            records.extend(page["jobs"])
            token = page.get("next_page_token")
            if not token:
                break
        records = [r for r in records if r["id"] != 1]  # the warm-up job
        states: dict[str, int] = {}
        for r in records:
            states[r["state"]] = states.get(r["state"], 0) + 1
        created = min(parse_time(r["created_at"]) for r in records)
        finished = max(parse_time(r["finished_at"]) or 0 for r in records)
        print(f"  ({machine_line()})")
        if errors:
            print(f"  submit errors: {len(errors)}; first: {errors[0]}")
        n = sum(submitted)
        print(f"  submitted {n} jobs in {t_submitted - t0:.2f} s "
              f"({n / (t_submitted - t0):.0f} submits/s); end states {states}")
        print(f"  client: first submit -> all ended  {t_done - t0:7.2f} s = "
              f"{n / (t_done - t0):6.1f} jobs/s")
        print(f"  master: first created_at -> last finished_at {finished - created:7.2f} s = "
              f"{n / (finished - created):6.1f} jobs/s")
        print(f"  kilnd VmRSS {rss_before:.1f} MB before, {kilnd.rss_mb():.1f} MB after")
        warm.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=default_build_dir(),
                   help="build dir with bin/kilnd (default $KILN_BUILD_DIR or build/bench)")
    p.add_argument("-n", "--latency-jobs", type=int, default=200)
    p.add_argument("--poll-ms", type=float, default=2.0)
    p.add_argument("--latency-slots", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1000, help="jobs for the throughput part")
    p.add_argument("--threads", type=int, default=4, help="submitting client threads")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep kilnd's data dirs")
    args = p.parse_args()
    print(f"submit_latency ({machine_line()})")
    if not args.skip_latency:
        latency(args.build_dir, args.latency_jobs, args.poll_ms / 1000, args.latency_slots,
                args.keep)
    if not args.skip_throughput:
        throughput(args.build_dir, args.jobs, args.threads, 0.02, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
