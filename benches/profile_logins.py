#!/usr/bin/env python3
"""A call-graph profile of flexgate's complete logins (issue 21). Run through `benches/profile`, which builds the
binary and installs the tools; this file:

  1. starts npm oidc-provider (tests/peers/op.mjs) and `flexgate serve` on 127.0.0.1, exactly as benches/run does
     (benches/login_bench.py: the same config, keys, default log level);
  2. warms up, then records flexgate with `perf record --call-graph dwarf` (or `fp`) while the same driver as
     benches/run completes N logins, the driver pinned with taskset to the other core when there are two or more;
  3. reads flexgate's CPU over the recorded logins from /proc/PID/stat (CPU per login, as benches/run);
  4. folds the stacks (`perf script | inferno-collapse-perf`), draws the flame graph (`inferno-flamegraph`), and
     splits the CPU per login into buckets (signing, kernel TCP, logging, allocation, …) by the frames of each
     sample; writes benches/results/flamegraph-login.svg, benches/results/profile-login.folded and
     benches/results/profile-login.json (the .folded stacks are not committed: .gitignore), and prints a Markdown table (each bucket in ms and in 0.1 ms units).

Everything listens on 127.0.0.1; every process started here is stopped at exit.
"""
import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import login_bench as lb  # noqa: E402  (the same peers, driver and checks as benches/run)

# Buckets, first match wins, tested against the whole stack (thread;root;...;leaf) of a sample. Order matters:
# the signature is "sign" wherever it is called from; what a log line costs, its write(2) on the appender thread
# included, is "logging"; kernel time under a reqwest call is the HTTP client's; the HTTP server bucket is what
# is left under hyper/axum once the handlers' own work has been taken out.
BUCKETS = [
    ("RSA-2048 sign (openssl, one per login)", re.compile(r"RSA_sign|EVP_DigestSignFinal|Signer::sign_to_vec|"
                                                          r"Signer::sign_oneshot|EVP_PKEY_sign|"
                                                          r"RSA_private_encrypt|::private_encrypt|BN_mod_exp|BN_BLINDING")),
    ("ID token check (JWT parse, RSA verify)", re.compile(r"id_token::|Verifier::")),
    ("login trace (record, scrub, save)", re.compile(r"flexgate::trace::")),
    ("logging (tracing: format + write)", re.compile(r"tracing_core::event|tracing_subscriber|tracing-appende|"
                                                     r"tracing_appender|log-writer|log_writer")),
    ("HTTP client to the OP (reqwest, its syscalls)", re.compile(r"reqwest|hyper_util::client|Upstream::")),
    ("store (pending logins, replay)", re.compile(r"flexgate::store::")),
    ("HTML pages (POST form, escaping)", re.compile(r"flexgate::web::pages")),
    ("SAML: request decode, Response build, c14n, digest", re.compile(r"flexgate::saml::")),
    ("flexgate handlers (other)", re.compile(r"flexgate::(login|oidc|mapping|config)|flexgate::web::(?!server)")),
    ("kernel: sockets / TCP (server side)", re.compile(r"(tcp_|inet_|sock_|__sys_|sendto|recvfrom|writev|"
                                                       r"ksys_read|ksys_write|accept|do_writev)[^;]*_\[k\]")),
    ("thread wake-ups, parking (futex, epoll, switch)", re.compile(r"(finish_task_switch|schedule|futex|"
                                                                   r"epoll_wait|try_to_wake_up)[^;]*_\[k\]|"
                                                                   r"park|Condvar")),
    ("HTTP server (hyper parse/write, axum, tower)", re.compile(r"hyper::|axum|tower|hyper_util::server")),
    ("allocation (malloc/free)", re.compile(r"(malloc|free|realloc|calloc|_int_|tcache)[^;]*$")),
    ("tokio runtime (other)", re.compile(r"tokio::")),
    ("other libcrypto", re.compile(r"libcrypto")),
]


def bucket_of(stack):
    for name, rx in BUCKETS:
        if rx.search(stack):
            return name
    return "other"


def leaf_name(frame):
    return re.sub(r"::h[0-9a-f]{16}$", "", frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--n", type=int, default=800, help="recorded logins (default 800)")
    ap.add_argument("--warmup", type=int, default=10, help="logins before recording (default 10)")
    ap.add_argument("--concurrency", type=int, default=1, help="logins in parallel (default 1)")
    ap.add_argument("--freq", type=int, default=2999, help="perf sampling frequency, Hz (default 2999)")
    ap.add_argument("--call-graph", default="dwarf,32768", help="perf --call-graph mode (default dwarf,32768)")
    ap.add_argument("--healthz", action="store_true",
                    help="profile N×20 GET /healthz over new connections instead of logins (a plain exchange)")
    ap.add_argument("--max-seconds", type=int, default=600, help="hard limit for the run (default 600)")
    ap.add_argument("--out", default=str(lb.RESULTS), help="where the SVG, folded stacks and JSON go")
    args = ap.parse_args()
    lb.DEADLINE[0] = time.monotonic() + args.max_seconds
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lb.on_signal)
    for tool in ("perf", "inferno-collapse-perf", "inferno-flamegraph"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (benches/profile installs perf from apt and inferno with cargo)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="flexgate-profile-"))
    lb.say(f"work dir {work}; binary {lb.FLEXGATE}")
    R = {"binary": str(lb.FLEXGATE), "args": vars(args), "machine": lb.machine(),
         "versions": {"flexgate": lb.versions()["flexgate"], "perf": lb.sh(["perf", "--version"])}}
    try:
        fg_port = lb.free_port()
        op, issuer = lb.start_op(work, fg_port, lb.free_port())
        fgp, fg = lb.start_flexgate(work, fg_port, issuer)
        fg["op"], fg["op_pid"], fg["work"] = issuer, op.pid, work
        lb.say(f"flexgate pid {fgp.pid}; {args.warmup} warm-up logins")
        warm = lb.drive(fg, args.warmup, 1, "warm-up")
        if warm["ok"] == 0:
            raise RuntimeError(f"no warm-up login succeeded: {warm['first_errors'][:1]}")
        # pin: flexgate and the OP on CPU 0, this driver on CPU 1 (when there are two), so the driver's Python
        # does not share flexgate's core; the CPU numbers come from /proc either way
        ncpu = os.cpu_count() or 1
        if ncpu >= 2:
            for pid in lb.tree(fgp.pid) + lb.tree(op.pid):
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], capture_output=True)
            os.sched_setaffinity(0, {1})
            R["pinning"] = "flexgate + OP on CPU 0, driver on CPU 1"
        data = work / "perf.data"
        perf = lb.spawn(["perf", "record", "-F", str(args.freq), "-g", "--call-graph", args.call_graph,
                         "-p", str(fgp.pid), "-o", data], stdout=subprocess.DEVNULL,
                        stderr=open(work / "perf.log", "w"))
        time.sleep(1.0)
        what = "exchange" if args.healthz else "login"
        if args.healthz:
            lb.say(f"recording {args.n * 20} GET /healthz over new connections ({args.call_graph}, {args.freq} Hz)")
            ex = lb.exchange_cpu(fgp.pid, fg_port, "/healthz", args.n * 20, False)
            res = {"n": ex["n"], "ok": ex["n"] - ex["non_200"], "server_cpu_s": ex["server_cpu_s"]}
        else:
            lb.say(f"recording {args.n} logins ({args.call_graph}, {args.freq} Hz)")
            res = lb.drive(fg, args.n, args.concurrency, "profiled")
            res.pop("responses")
        os.kill(perf.pid, signal.SIGINT)
        perf.wait(timeout=120)
        R["logins" if not args.healthz else "exchanges"] = res
        if res["ok"] == 0:
            raise RuntimeError(f"nothing succeeded: {res.get('first_errors', [])[:1]}")
        R["cpu_ms_per_login"] = res["server_cpu_s"] / res["ok"] * 1000
        lb.say(f"{res['ok']}/{res['n']} {what}s; {R['cpu_ms_per_login']:.3f} ms CPU per {what} (under perf); folding")
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, timeout=900)
        folded = subprocess.run(["inferno-collapse-perf", "--all"], input=script.stdout, capture_output=True,
                                timeout=300).stdout
        stem = "profile-healthz" if args.healthz else "profile-login"
        (out / f"{stem}.folded").write_bytes(folded)
        title = (f"flexgate {R['versions']['flexgate']}: {res['ok']} "
                 f"{'GET /healthz over new connections' if args.healthz else 'complete logins'}, "
                 f"{R['cpu_ms_per_login']:.3f} ms CPU each (perf {args.call_graph}, {args.freq} Hz)")
        svg = subprocess.run(["inferno-flamegraph", "--title", title, "--width", "1600", "--minwidth", "0.3"],
                             input=folded,
                             capture_output=True, timeout=300)
        if svg.returncode != 0:
            raise RuntimeError(f"inferno-flamegraph: {svg.stderr[-500:]!r}")
        (out / ("flamegraph-healthz.svg" if args.healthz else "flamegraph-login.svg")).write_bytes(svg.stdout)
        buckets, leaves, total = collections.Counter(), collections.Counter(), 0
        for line in folded.decode(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            c = int(count)
            total += c
            buckets[bucket_of(stack)] += c
            leaves[leaf_name(stack.rsplit(";", 1)[-1])] += c
        R["sample_weight"] = total
        per = R["cpu_ms_per_login"]
        R["buckets"] = [{"bucket": b, "samples": c, "share": c / total, "ms_per_login": c / total * per}
                        for b, c in buckets.most_common()]
        R["top_leaves"] = [{"frame": f, "share": c / total} for f, c in leaves.most_common(25)]
    finally:
        lb.cleanup()
    (out / ("profile-healthz.json" if args.healthz else "profile-login.json")).write_text(json.dumps(R, indent=1) + "\n")
    print(f"CPU per login under perf: {R['cpu_ms_per_login']:.3f} ms; {R['sample_weight']} sample weight (perf periods)\n")
    print("| where a login's CPU goes | share | ms per login | 0.1 ms units |")
    print("|---|---|---|---|")
    for b in R["buckets"]:
        print(f"| {b['bucket']} | {b['share'] * 100:.1f} % | {b['ms_per_login']:.3f} | "
              f"{'▇' * round(b['ms_per_login'] * 10)} {b['ms_per_login'] * 10:.1f} |")
    print("\n| hottest leaf frames (self time) | share |\n|---|---|")
    for x in R["top_leaves"][:15]:
        print(f"| `{x['frame'][:110]}` | {x['share'] * 100:.1f} % |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        lb.cleanup()
