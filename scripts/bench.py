#!/usr/bin/env python3
"""The measuring half of scripts/bench: runs one case at a time and writes the report.

    bench.py loadgen  --id ID --title T --figure F [--proc NAME=PID ...] -- shopmesh loadgen ...
    bench.py timed    --id ID --title T --tool wrk|pgbench --warmup W --seconds S [...] -- CMD
    bench.py redis    --id ID --title T --seconds S [...] -- redis-benchmark ... {requests} ...
    bench.py product-bench --id ID --title T -- cargo bench -p shopmesh-product ...
    bench.py report   --results FILE --out BASE

Each case appends one JSON object to --results. Around the measured part of a case it reads
utime+stime (and, for whole process trees, the time of reaped children) from /proc/<pid>/stat for
every process group of the system under load (shopmesh, nginx, postgres, redis, rabbitmq, the
MongoDB stand-in), the load tool itself, and the whole machine (/proc/stat), so that it can give
CPU-seconds per 1,000 operations per process and what else ran on the machine meanwhile.

scripts/bench starts and stops everything; this file starts nothing but the load tool.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

TICK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1
MEASURING_STARTED = "loadgen: measuring started"
MEASURING_ENDED = "loadgen: measuring ended"

# The processes of the system under load, in the order of the report's columns.
GROUPS = ["shopmesh", "nginx", "postgres", "redis", "rabbitmq", "mongo"]


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def shown(command):
    """A command line as logged: the value of --admin-token (a live access token) masked."""
    out = list(command)
    for i, arg in enumerate(out[:-1]):
        if arg == "--admin-token":
            out[i + 1] = "***"
    return " ".join(out)


# --- /proc ----------------------------------------------------------------------------------


def read_procs():
    """pid -> (comm, ppid, own ticks (utime+stime), reaped children's ticks (cutime+cstime))."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as f:
                data = f.read()
        except OSError:
            continue
        close = data.rfind(")")
        comm = data[data.find("(") + 1 : close]
        fields = data[close + 2 :].split()
        # After the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17), counted
        # from field 3 at index 0.
        procs[int(name)] = (
            comm,
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]),
        )
    return procs


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def tree(procs, roots):
    """The roots and all their descendants."""
    children = {}
    for pid, (_, ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def machine_busy_ticks():
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


class Groups:
    """How to find each process group. Whole trees count the time of reaped children too (a
    worker or backend that exits is then still counted, in its parent). PostgreSQL is shared with
    anything else on the machine (e.g. a CI run): its figure is the whole server less the live
    backends of databases that are not the bench's."""

    def __init__(self, procs_args, pg_db):
        self.roots = {}
        for spec in procs_args or []:
            name, _, pid = spec.partition("=")
            if pid:
                self.roots.setdefault(name, []).append(int(pid))
        self.pg_db = re.compile(pg_db) if pg_db else None

    def sample(self, procs):
        """group -> (mode, values): "tree" {pid: own + reaped children's ticks}, or for postgres
        "tree-minus" {"all": the server's tree, "foreign": other databases' live backends}."""
        out = {}
        for name, roots in self.roots.items():
            pids = tree(procs, roots)
            out[name] = ("tree", {p: procs[p][2] + procs[p][3] for p in pids})
        by_comm = lambda comm: [p for p, v in procs.items() if v[0] == comm]  # noqa: E731
        postmasters = [
            p for p in by_comm("postgres") if procs.get(procs[p][1], ("",))[0] != "postgres"
        ]
        if postmasters:
            everything = tree(procs, postmasters)
            out["postgres-server"] = (
                "tree",
                {p: procs[p][2] + procs[p][3] for p in everything},
            )
            # The whole server, reaped backends included (a pgbench or pool connection that
            # closed during the case is still counted, in the postmaster), less the live backends
            # of other databases (another client of the shared server, e.g. a CI run).
            foreign = {}
            for pid in everything:
                backend = re.match(
                    r"postgres: [^:]+: \S+ (\S+) (\S*\(\d+\)|\[local\])", cmdline(pid)
                )
                if backend and self.pg_db and not self.pg_db.search(backend.group(1)):
                    foreign[pid] = procs[pid][2] + procs[pid][3]
            out["postgres"] = (
                "tree-minus",
                {"all": out["postgres-server"][1], "foreign": foreign},
            )
        redis = [p for p in by_comm("redis-server") if ":6379" in cmdline(p)] or by_comm(
            "redis-server"
        )
        if redis:
            out["redis"] = ("tree", {p: procs[p][2] + procs[p][3] for p in tree(procs, redis)})
        beam = by_comm("beam.smp")
        if beam:
            out["rabbitmq"] = ("tree", {p: procs[p][2] + procs[p][3] for p in tree(procs, beam)})
        return out


def rss_kib(pids):
    """(resident KiB summed over pids, the largest peak resident KiB of any of them)."""
    resident = peak = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        resident += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return resident, peak


class MemorySampler:
    """The resident memory of the shopmesh process tree every 200 ms while a case runs: its
    largest sum, and the kernel's peak (VmHWM, since the process started)."""

    def __init__(self, groups):
        self.roots = groups.roots.get("shopmesh", [])
        self.max_kib = 0
        self.peak_kib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while True:
            resident, peak = rss_kib(tree(read_procs(), self.roots))
            self.max_kib = max(self.max_kib, resident)
            self.peak_kib = max(self.peak_kib, peak)
            if self.stop.wait(0.2):
                return

    def __enter__(self):
        if self.roots:
            self.thread.start()
        return self

    def __exit__(self, *_):
        if self.roots:
            self.stop.set()
            self.thread.join()

    def figures(self):
        if not self.roots or not self.max_kib:
            return {}
        return {
            "shopmesh_rss_max_mib": round(self.max_kib / 1024, 1),
            "shopmesh_rss_peak_mib": round(self.peak_kib / 1024, 1),
        }


def snapshot(groups):
    procs = read_procs()
    return {
        "at": time.monotonic(),
        "machine": machine_busy_ticks(),
        "groups": groups.sample(procs),
        "loadavg": open("/proc/loadavg", encoding="ascii").read().split()[:3],
    }


def cpu_between(before, after):
    """CPU-seconds per group between two snapshots, and the machine's busy and wall time."""
    seconds = {}
    for name, (mode, now) in after["groups"].items():
        then = before["groups"].get(name, (mode, {}))[1]
        if mode == "tree":
            ticks = sum(now.values()) - sum(then.values())
        else:
            foreign_then = then.get("foreign", {})
            ticks = (sum(now["all"].values()) - sum(then.get("all", {}).values())) - sum(
                v - foreign_then.get(p, 0) for p, v in now["foreign"].items()
            )
        seconds[name] = max(ticks, 0) / TICK
    wall = after["at"] - before["at"]
    busy = (after["machine"] - before["machine"]) / TICK
    return seconds, busy, wall


def cpu_figures(before, after, client_seconds, ops):
    seconds, busy, wall = cpu_between(before, after)
    if client_seconds is not None:
        seconds["client"] = client_seconds
    tracked = sum(v for k, v in seconds.items() if k in GROUPS or k == "client")
    seconds["other"] = max(busy - tracked, 0.0)
    per_1000 = {k: (v / ops * 1000 if ops else None) for k, v in seconds.items()}
    return {
        "cpu_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cpu_seconds_per_1000": {
            k: (round(v, 4) if v is not None else None) for k, v in per_1000.items()
        },
        "machine_busy_seconds": round(busy, 2),
        "machine_busy_percent": round(busy / (wall * NPROC) * 100, 1) if wall > 0 else None,
        "window_seconds": round(wall, 2),
        "loadavg_before": before["loadavg"],
    }


# --- results ----------------------------------------------------------------------------------


def append_result(path, result):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


def base_result(args, driver):
    return {
        "id": args.id,
        "title": args.title,
        "driver": driver,
        "concurrency": args.concurrency,
        "pairs": args.pair or [],
        "note": args.note or "",
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * p))]


def run_loadgen(args):
    """shopmesh loadgen: CPU sampled at its 'measuring started' / 'measuring ended' lines."""
    json_path = os.path.join(args.workdir, f"{args.id}.loadgen.json")
    command = args.command + ["--json", json_path]
    log(f"{args.id}: {shown(command)}")
    groups = Groups(args.proc, args.pg_db)
    marks = {}
    memory = MemorySampler(groups)
    with (
        open(os.path.join(args.workdir, f"{args.id}.stdout"), "w", encoding="utf-8") as out,
        memory,
    ):
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True)

        def sample():
            snap = snapshot(groups)
            procs = read_procs()
            snap["client"] = sum(procs[p][2] + procs[p][3] for p in tree(procs, [child.pid]))
            return snap

        assert child.stderr is not None
        for line in child.stderr:
            # The before/after samples are taken the moment loadgen says so.
            if line.startswith(MEASURING_STARTED):
                marks["before"] = sample()
            elif line.startswith(MEASURING_ENDED):
                marks["after"] = sample()
            sys.stderr.write(f"  {line}")
        child.wait()
    result = base_result(args, "shopmesh loadgen")
    if child.returncode != 0 or "before" not in marks or "after" not in marks:
        result["error"] = f"loadgen exited with {child.returncode}"
        return result
    with open(json_path, encoding="utf-8") as f:
        report = json.load(f)
    kind, _, rest = args.figure.partition(":")
    if kind == "scenario":
        scenario = next(s for s in report["scenarios"] if s["scenario"] == rest)
        ops, rate, latency = scenario["iterations"], scenario["rate"], scenario["latency_ms"]
        errors = sum(scenario["errors"].values())
        error_detail = scenario["errors"]
    else:
        scenario_name, _, endpoint = rest.partition(":")
        entry = next(
            e
            for e in report["endpoints"]
            if e["scenario"] == scenario_name and e["endpoint"] == endpoint
        )
        ops, rate, latency = entry["requests"], entry["rps"], entry["latency_ms"]
        errors = sum(entry["errors"].values())
        error_detail = entry["errors"]
    # CPU per 1,000 of the case's unit: every request of the run, or (checkout) every checkout.
    unit_count = ops if kind == "scenario" else report["requests"]
    before, after = marks["before"], marks["after"]
    client_seconds = (after["client"] - before["client"]) / TICK
    result.update(
        {
            "unit": "checkout" if kind == "scenario" else "request",
            "ops": ops,
            "ops_per_sec": rate,
            "p50_ms": latency["p50"],
            "p99_ms": latency["p99"],
            "errors": errors,
            "error_detail": error_detail,
            "requests": report["requests"],
            "request_errors": report["errors"],
            "measured_seconds": report["duration_secs"],
            "endpoints": [
                {
                    k: e[k]
                    for k in ("scenario", "endpoint", "requests", "rps", "errors", "latency_ms")
                }
                for e in report["endpoints"]
            ],
            "user_waits": report["user_waits"],
        }
    )
    if kind == "scenario":
        checkout = next(
            (e for e in report["endpoints"] if e["endpoint"] == "POST /api/cart/checkout"), None
        )
        if checkout:
            result["checkout_request_p50_ms"] = checkout["latency_ms"]["p50"]
            result["checkout_request_p99_ms"] = checkout["latency_ms"]["p99"]
        result["paid"] = report["checkouts"]["paid"]
    result.update(cpu_figures(before, after, client_seconds, unit_count))
    result.update(memory.figures())
    return result


def duration_ms(text):
    value = float(re.match(r"[\d.]+", text).group(0))
    unit = text[len(re.match(r"[\d.]+", text).group(0)) :]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}.get(unit, 1.0)


def parse_wrk(output, seconds):
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(v) for v in socket.groups()) if socket else 0
    )
    return {
        "unit": "request",
        "ops": total,
        "ops_per_sec": rate,
        "p50_ms": duration_ms(latency["50"]) if "50" in latency else None,
        "p99_ms": duration_ms(latency["99"]) if "99" in latency else None,
        "errors": errors,
        "measured_seconds": seconds,
    }


def parse_pgbench(output, seconds, log_prefix):
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))
    total = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", output)
    latencies = []
    directory, prefix = os.path.split(log_prefix)
    for name in os.listdir(directory):
        if name.startswith(prefix + "."):
            with open(os.path.join(directory, name), encoding="ascii") as f:
                # client_id transaction_no latency_us script_no epoch epoch_us
                latencies.extend(int(line.split()[2]) for line in f if line.strip())
            os.remove(os.path.join(directory, name))
    latencies.sort()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "unit": "transaction",
        "ops": total,
        "ops_per_sec": tps,
        "p50_ms": p50 / 1000 if p50 is not None else None,
        "p99_ms": p99 / 1000 if p99 is not None else None,
        "errors": int(failed.group(1)) if failed else 0,
        "measured_seconds": seconds,
    }


def run_child(command):
    """Runs a load tool to its end; returns (exit code, output, its CPU-seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.returncode, done.stdout + done.stderr, cpu


def run_timed(args):
    """wrk or pgbench: a warm-up run thrown away, then the measured run of --seconds."""
    groups = Groups(args.proc, args.pg_db)
    log_prefix = os.path.join(args.workdir, f"{args.id}.pgbench")

    def command(seconds, measured):
        extra = ["-l", "--log-prefix", log_prefix] if args.tool == "pgbench" and measured else []
        return [part.replace("{seconds}", str(seconds)) for part in args.command] + extra

    if args.warmup > 0:
        log(f"{args.id}: warm-up {args.warmup} s")
        code, output, _ = run_child(command(args.warmup, False))
        if code != 0:
            sys.stderr.write(output)
    measured = command(args.seconds, True)
    log(f"{args.id}: {shown(measured)}")
    before = snapshot(groups)
    code, output, client_cpu = run_child(measured)
    after = snapshot(groups)
    with open(os.path.join(args.workdir, f"{args.id}.out"), "w", encoding="utf-8") as f:
        f.write(output)
    result = base_result(args, args.tool)
    if code != 0:
        sys.stderr.write(output)
        result["error"] = f"{args.tool} exited with {code}"
        return result
    parsed = (
        parse_wrk(output, args.seconds)
        if args.tool == "wrk"
        else parse_pgbench(output, args.seconds, log_prefix)
    )
    result.update(parsed)
    result.update(cpu_figures(before, after, client_cpu, parsed["ops"]))
    return result


def run_redis(args):
    """redis-benchmark counts requests, not time: a warm-up run of 50,000 GETs gives the rate,
    and the measured run asks for --seconds worth of it."""
    groups = Groups(args.proc, args.pg_db)

    def command(requests):
        return [part.replace("{requests}", str(requests)) for part in args.command]

    def parse(output):
        row = [line for line in output.splitlines() if line.startswith('"GET"')][0]
        values = [v.strip('"') for v in row.split(",")]
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
        # "p99_latency_ms","max_latency_ms"
        return float(values[1]), float(values[4]), float(values[6])

    code, output, _ = run_child(command(50_000))
    if code != 0:
        result = base_result(args, "redis-benchmark")
        result["error"] = f"redis-benchmark exited with {code}: {output[-500:]}"
        return result
    warm_rate = parse(output)[0]
    requests = max(int(warm_rate * args.seconds), 10_000)
    log(f"{args.id}: {shown(command(requests))}")
    before = snapshot(groups)
    code, output, client_cpu = run_child(command(requests))
    after = snapshot(groups)
    result = base_result(args, "redis-benchmark")
    if code != 0:
        result["error"] = f"redis-benchmark exited with {code}: {output[-500:]}"
        return result
    rate, p50, p99 = parse(output)
    result.update(
        {
            "unit": "request",
            "ops": requests,
            "ops_per_sec": rate,
            "p50_ms": p50,
            "p99_ms": p99,
            "errors": 0,
            "measured_seconds": round(requests / rate, 2),
        }
    )
    result.update(cpu_figures(before, after, client_cpu, requests))
    return result


def run_product_bench(args):
    """cargo bench -p shopmesh-product: its printed rows for one hot SKU."""
    log(f"{args.id}: {shown(args.command)}")
    code, output, client_cpu = run_child(args.command)
    with open(os.path.join(args.workdir, f"{args.id}.out"), "w", encoding="utf-8") as f:
        f.write(output)
    result = base_result(args, "cargo bench -p shopmesh-product")
    if code != 0:
        sys.stderr.write(output[-3000:])
        result["error"] = f"cargo bench exited with {code}"
        return result
    rows = {}
    for line in output.splitlines():
        # case, concurrency, ops, errors, ops/s, p50 ms, p99 ms
        m = re.match(r"(reserve, one hot SKU|reserve, 1000 SKUs)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            rows.setdefault(m.group(1), []).append(
                {
                    "concurrency": int(m.group(2)),
                    "ops": int(m.group(3)),
                    "errors": int(m.group(4)),
                    "ops_per_sec": float(m.group(5)),
                    "p50_ms": float(m.group(6)),
                    "p99_ms": float(m.group(7)),
                }
            )
    hot = rows.get("reserve, one hot SKU", [])
    if not hot:
        result["error"] = "no 'reserve, one hot SKU' rows in the output"
        return result
    # The row closest to the comparison concurrency (the bench runs 1, 8 and 64).
    pick = min(hot, key=lambda r: (abs(r["concurrency"] - (args.concurrency or 32)), -r["concurrency"]))
    result.update(
        {
            "unit": "reservation",
            "ops": pick["ops"],
            "ops_per_sec": pick["ops_per_sec"],
            "p50_ms": pick["p50_ms"],
            "p99_ms": pick["p99_ms"],
            "errors": pick["errors"],
            "concurrency": pick["concurrency"],
            "rows": rows,
            "bench_process_cpu_seconds": round(client_cpu, 2),
            "hot_sku_check": next(
                (line.strip() for line in output.splitlines() if line.startswith("hot SKU check")),
                None,
            ),
        }
    )
    return result


# --- the report -------------------------------------------------------------------------------


def command_output(command):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return (done.stdout + done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def machine():
    model = None
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {
        "nproc": NPROC,
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": command_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "rustc": command_output(["rustc", "--version"]),
        "nginx": command_output([os.environ.get("NGINX_BIN", "nginx"), "-v"]),
        "postgres": command_output(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version"]
        ),
        "redis": command_output(["redis-server", "--version"]),
        "rabbitmq": command_output(["rabbitmqctl", "-q", "version"]),
        "wrk": command_output(["sh", "-c", "wrk -v 2>&1 | head -1"]) if shutil.which("wrk") else None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio_text(result, by_id):
    parts = []
    for pair in result.get("pairs", []):
        ceiling = by_id.get(pair)
        if not ceiling or "error" in ceiling or not ceiling.get("ops_per_sec"):
            continue
        share = result["ops_per_sec"] / ceiling["ops_per_sec"] * 100
        parts.append(f"{share:.1f} % of {pair}" if share < 10 else f"{share:.0f} % of {pair}")
    return "; ".join(parts)


def text_tables(results):
    by_id = {r["id"]: r for r in results}
    lines = []
    header = (
        f"{'case':<18} {'what':<52} {'driver':<16} {'conc':>4} {'ops/s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6}  share of its ceiling(s)"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['id']:<18} {r['title'][:52]:<52} FAILED: {r['error']}")
            continue
        lines.append(
            f"{r['id']:<18} {r['title'][:52]:<52} {r['driver'][:16]:<16} "
            f"{r.get('concurrency') or '-':>4} {fmt(r['ops_per_sec']):>9} "
            f"{fmt(r['p50_ms'], 2):>7} {fmt(r['p99_ms'], 2):>7} {r.get('errors', 0):>6}  "
            f"{ratio_text(r, by_id)}"
        )
    lines += ["", "CPU-seconds per 1,000 operations (request, transaction or checkout), per process:"]
    columns = GROUPS + ["client", "other"]
    header = (
        f"{'case':<18} {'unit':<12} "
        + " ".join(f"{c:>9}" for c in columns)
        + f" {'machine busy':>13}"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        if "error" in r or "cpu_seconds_per_1000" not in r:
            continue
        per = r["cpu_seconds_per_1000"]
        cells = []
        for c in columns:
            v = per.get(c)
            cells.append(f"{'-' if v is None else f'{v:.3f}':>9}")
        lines.append(
            f"{r['id']:<18} {r['unit']:<12} "
            + " ".join(cells)
            + f" {fmt(r.get('machine_busy_percent'), 0) + ' %':>13}"
        )
    memory = [r for r in results if "shopmesh_rss_max_mib" in r]
    if memory:
        lines += [
            "",
            "shopmesh resident memory (MiB): largest sample during the case (every 200 ms), and the",
            "process's peak since it started (VmHWM):",
        ]
        header = f"{'case':<18} {'max RSS':>9} {'peak':>9}"
        lines += [header, "-" * len(header)]
        for r in memory:
            lines.append(
                f"{r['id']:<18} {r['shopmesh_rss_max_mib']:>9.1f} {r['shopmesh_rss_peak_mib']:>9.1f}"
            )
    return "\n".join(lines)


HOW_TO_READ = """## How to read it

- Every case is closed loop: that many connections (or loadgen workers), each sending its next
  request when its last one was answered, so ops/s is what the system and the load tool together
  reach on the machine, with the load tool on the same two cores.
- "share of its ceiling" divides the case's ops/s by the ops/s of the cases named: `nginx-fixed`
  (the same load generator against nginx answering a fixed response: the most HTTP this load
  generator gets through one nginx worker here), `pgbench` (PostgreSQL selecting the product row a
  product page reads), `redis-get` (redis-benchmark GET), `healthz` (the gateway with nothing
  behind it), and for the load generator itself `nginx-fixed-wrk` (wrk, a C load tool, against the
  same nginx).
- CPU-seconds per 1,000 operations come from utime+stime in /proc/PID/stat sampled when the
  measured part of the case starts and ends (loadgen prints both moments; wrk, pgbench and
  redis-benchmark are sampled around their measured run), for the process trees of shopmesh,
  nginx, redis, rabbitmq and the MongoDB stand-in (reaped children included), and for postgres
  the whole server (reaped backends included) less the live backends of databases other than the
  bench's (the server is shared with anything else running; `postgres-server` in the JSON is the
  whole server). "client"
  is the load tool; "other" is the machine's busy time (/proc/stat) left over: the kernel, and
  whatever else ran meanwhile (a CI run on the same machine shows up here, and in Redis and
  RabbitMQ, which are shared too). The unit is the request, the pgbench transaction or the whole
  checkout.
"""


def report(args):
    with open(args.results, encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    settings = {}
    if args.settings:
        with open(args.settings, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition(": ")
                if key:
                    settings[key] = value
    doc = {
        "machine": machine(),
        "settings": settings,
        "pairings": {r["id"]: r.get("pairs", []) for r in results},
        "cases": results,
    }
    by_id = {r["id"]: r for r in results}
    for r in results:
        r["share_of_ceiling_percent"] = {
            pair: round(r["ops_per_sec"] / by_id[pair]["ops_per_sec"] * 100, 2)
            for pair in r.get("pairs", [])
            if pair in by_id
            and "error" not in by_id[pair]
            and "error" not in r
            and by_id[pair].get("ops_per_sec")
        }
    tables = text_tables(results)
    m = doc["machine"]
    head = [
        f"shopmesh bench, {m['date']}",
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, kernel "
        f"{m['kernel']}, {m['os']}; {m['rustc']}",
        f"tools: {m['nginx']}; PostgreSQL {m['postgres']}; {m['redis']}; RabbitMQ {m['rabbitmq']}; "
        f"{m['wrk'] or 'no wrk'}",
    ]
    for key, value in settings.items():
        head.append(f"{key}: {value}")
    text = "\n".join(head) + "\n\n" + tables + "\n"
    print(text)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    notes = [
        f"- {r['id']}: {r['note']}" for r in results if r.get("note")
    ]
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(f"# shopmesh bench, {m['date']}\n\n")
        f.write(
            "Written by `./scripts/bench` (one run; the figures, the machine and the settings are "
            f"also in [{os.path.basename(args.out)}.json]({os.path.basename(args.out)}.json)).\n\n"
        )
        f.write("```\n" + text + "```\n\n" + HOW_TO_READ)
        if notes:
            f.write("\n## Notes per case\n\n" + "\n".join(notes) + "\n")
        if args.notes and os.path.exists(args.notes):
            with open(args.notes, encoding="utf-8") as extra:
                f.write("\n" + extra.read())
    log(f"report written to {args.out}.md and {args.out}.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("loadgen", "timed", "redis", "product-bench"):
        case = sub.add_parser(name)
        case.add_argument("--id", required=True)
        case.add_argument("--title", required=True)
        case.add_argument("--results", required=True)
        case.add_argument("--workdir", required=True)
        case.add_argument("--proc", action="append", help="NAME=PID: a process tree to sample")
        case.add_argument("--pg-db", help="regex of the databases whose backends count")
        case.add_argument("--pair", action="append", help="the id of a ceiling to compare with")
        case.add_argument("--note")
        case.add_argument("--concurrency", type=int)
        case.add_argument("--figure", default="")
        case.add_argument("--tool", choices=["wrk", "pgbench"])
        case.add_argument("--warmup", type=int, default=0)
        case.add_argument("--seconds", type=int, default=10)
        case.add_argument("command", nargs=argparse.REMAINDER)
    rep = sub.add_parser("report")
    rep.add_argument("--results", required=True)
    rep.add_argument("--out", required=True, help="path without extension")
    rep.add_argument("--settings", help="a file of 'key: value' lines: how the run was made")
    rep.add_argument("--notes", help="a markdown file appended to the .md report")
    args = parser.parse_args()
    if args.what == "report":
        report(args)
        return 0
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    runner = {
        "loadgen": run_loadgen,
        "timed": run_timed,
        "redis": run_redis,
        "product-bench": run_product_bench,
    }[args.what]
    result = runner(args)
    append_result(args.results, result)
    if "error" in result:
        log(f"{args.id}: {result['error']}")
        return 1
    log(
        f"{args.id}: {fmt(result['ops_per_sec'])} {result['unit']}s/s, p50 {fmt(result['p50_ms'], 2)} ms, "
        f"p99 {fmt(result['p99_ms'], 2)} ms, {result.get('errors', 0)} errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
