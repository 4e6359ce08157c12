#!/usr/bin/env python3
"""CPU time per job of each part of the loop: the server, the SDK worker and
the client, measured as the harness's W1 runs them.

Starts `steadfast serve` on a fresh data dir (or on PostgreSQL with
--database-url, migrated into a fresh schema by the caller), enqueues N jobs
with `steadfast bench peer enqueue` (batches of 1,000), then drains them with
`steadfast bench peer worker`. For each phase it reads the user+system CPU
time of every process from /proc and prints microseconds per job, with the
phase's wall time and jobs/s. CPU time is what each part costs whatever the
machine's other load; wall time is what the harness reports.

    bench/cpu_per_job.py [--jobs 20000] [--bin target/release/steadfast]
                         [--database-url postgres://app@host/db] [--json]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def thread_seconds(pid):
    """CPU seconds of each named thread of a process (threads of one name
    summed): where inside the server the time goes."""
    by_name = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        by_name[name] = by_name.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return by_name


def busy(before, after, wall):
    """Each thread group's CPU over the phase as a share of its wall time:
    near 1.0 means that thread bounds the phase."""
    return {name: round((after[name] - before.get(name, 0.0)) / wall, 2) for name in after
            if after[name] - before.get(name, 0.0) > 0.01 * wall}


def database_seconds():
    """CPU seconds of every PostgreSQL process on this machine (with the
    exited backends the postmaster reaped): what the database did."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, server, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if server.poll() is not None:
            sys.exit(f"the server exited: {server.returncode}")
        try:
            with socket.create_connection(url, timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("the server did not start listening in 30 s")


def records(rec_dir):
    n = 0
    for name in os.listdir(rec_dir):
        with open(os.path.join(rec_dir, name), "rb") as f:
            n += f.read().count(b"\n")
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--bin", default="target/release/steadfast")
    parser.add_argument("--database-url", help="serve on PostgreSQL (an app role's URL; tenant `bench` and a key are made)")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="steadfast-cpu-")
    port = free_port()
    env = dict(os.environ, STEADFAST_URL=f"http://127.0.0.1:{port}", STEADFAST_BENCH_QUEUE="bench")
    storage = ["--data-dir", os.path.join(work, "data")]
    if args.database_url:
        subprocess.run([args.bin, "tenant", "create", "bench", "--database-url", args.database_url], check=True,
                       stdout=subprocess.DEVNULL)
        key = subprocess.run([args.bin, "key", "create", "--tenant", "bench", "--role", "admin", "--database-url",
                              args.database_url], check=True, capture_output=True, text=True).stdout.strip()
        storage = ["--database-url", args.database_url]
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([args.bin, "serve", *storage, "--listen", f"127.0.0.1:{port}"], stdout=log,
                              stderr=log, env=env)
    try:
        wait_ready(("127.0.0.1", port), server)
        if not args.database_url:
            key_file = os.path.join(work, "data", "admin.key")
            for _ in range(100):
                if os.path.exists(key_file):
                    break
                time.sleep(0.05)
            with open(key_file) as f:
                key = f.read().strip()
        env["STEADFAST_KEY"] = key
        result = {"jobs": args.jobs, "backend": "postgres" if args.database_url else "sqlite"}

        # Enqueue: the client process and the server.
        database_before = database_seconds()
        server_before = cpu_seconds(server.pid)
        threads_before = thread_seconds(server.pid)
        started = time.monotonic()
        client = subprocess.Popen([args.bin, "bench", "peer", "enqueue", str(args.jobs)], env=env,
                                  stdout=subprocess.DEVNULL)
        client_cpu = 0.0
        while client.poll() is None:
            client_cpu = cpu_seconds(client.pid)
            time.sleep(0.01)
        if client.returncode != 0:
            sys.exit("the enqueue client failed")
        wall = time.monotonic() - started
        result["enqueue"] = {
            "wall_s": round(wall, 3),
            "jobs_per_s": round(args.jobs / wall),
            "server_us_per_job": round((cpu_seconds(server.pid) - server_before) / args.jobs * 1e6, 1),
            "client_us_per_job_at_least": round(client_cpu / args.jobs * 1e6, 1),
            "server_threads_busy": busy(threads_before, thread_seconds(server.pid), wall),
        }
        if args.database_url:
            result["enqueue"]["database_us_per_job"] = round((database_seconds() - database_before) / args.jobs * 1e6, 1)

        # Drain: the SDK worker and the server.
        rec_dir = os.path.join(work, "rec")
        os.makedirs(rec_dir)
        database_before = database_seconds()
        server_before = cpu_seconds(server.pid)
        threads_before = thread_seconds(server.pid)
        started = time.monotonic()
        worker = subprocess.Popen([args.bin, "bench", "peer", "worker", "--concurrency", str(args.concurrency),
                                   "--rec-dir", rec_dir], env=env, stdout=subprocess.DEVNULL)
        deadline = started + 600
        worker_cpu = 0.0
        while records(rec_dir) < args.jobs:
            if time.monotonic() > deadline or worker.poll() is not None:
                sys.exit("the drain did not finish")
            worker_cpu = cpu_seconds(worker.pid)
            time.sleep(0.005)
        wall = time.monotonic() - started
        worker_cpu = cpu_seconds(worker.pid)
        server_cpu = cpu_seconds(server.pid) - server_before
        threads_busy = busy(threads_before, thread_seconds(server.pid), wall)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        result["drain"] = {
            "wall_s": round(wall, 3),
            "jobs_per_s": round(args.jobs / wall),
            "server_us_per_job": round(server_cpu / args.jobs * 1e6, 1),
            "worker_us_per_job": round(worker_cpu / args.jobs * 1e6, 1),
            "server_threads_busy": threads_busy,
        }
        if args.database_url:
            result["drain"]["database_us_per_job"] = round((database_seconds() - database_before) / args.jobs * 1e6, 1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['backend']}, {args.jobs} jobs")
    for phase in ("enqueue", "drain"):
        parts = ", ".join(f"{k} {v}" for k, v in result[phase].items())
        print(f"  {phase}: {parts}")


if __name__ == "__main__":
    main()
