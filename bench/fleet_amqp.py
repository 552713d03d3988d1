"""bench/fleet --amqp: chunkd through RabbitMQ against RabbitMQ's own AMQP->MQTT ceiling.

Imported by bench/fleet (which passes itself in as `f`: its Bench, Procs and helpers). One private
RabbitMQ node (the MQTT plugin; tests/support/rabbitmq.hpp's recipe: its own epmd, HOME, mnesia and
ports, on loopback) replaces Mosquitto, and one moto_server holds the S3 content bucket the
[amqp] config check requires (storage.content_bucket). For each scenario:
  (a) the ceiling: raw-socket devices (fleet_ceiling --mode devices) on RabbitMQ's MQTT port
      download in GetStream windows from fleet_ceiling --mode amqp-respond, which consumes their
      requests from a quorum queue and publishes pre-encoded replies to amq.topic with publisher
      confirms, acking each request once its replies are confirmed (chunkd's rule), on a topic
      prefix chunkd's queue is not bound to;
  (b) the same devices downloading the same bytes from chunkd with [amqp];
  (a) again; ratio = mean(b) / mean(a). CPU seconds per GiB delivered: chunkd, RabbitMQ (beam.smp,
      every scheduler thread) and the devices, during (b), and the broker during (a).
Every process is started in its own session and stopped by its process group on exit.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"
CHUNKD_QUEUE = "chunkd.fleet"
CEILING_QUEUE = "fleet.ceiling"
# The target for chunkd through RabbitMQ against RabbitMQ's own ceiling.
TARGET_RATIO = 0.9




def group_members(pgid):
    """(pid, comm) of every process in process group `pgid`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            out.append((int(name), comm))
    return out


def make_bench(f):
    class GroupProcs(f.Procs):
        """Procs whose stop() ends the whole process group (rabbitmq-server's script, beam.smp,
        erl_child_setup share one): SIGTERM, a bounded wait, then SIGKILL to what is left."""

        def stop(self, p, timeout=20):
            if p not in self.running:
                return
            self.running.remove(p)
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            # poll() reaps the leader: a zombie still counts as a member of its group.
            while time.monotonic() < deadline and (p.poll() is None or group_members(p.pid)):
                time.sleep(0.05)
            if p.poll() is None or group_members(p.pid):
                f.log(f"{p.fleet_name} (group {p.pid}) did not stop in {timeout} s: killing it")
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    class Beam:
        """The broker as run_devices() sees it: the pid whose CPU is the broker's."""

        def __init__(self, pid):
            self.pid = pid

    class AmqpBench(f.Bench):
        def __init__(self, args, scs):
            super().__init__(args, scs)
            self.procs = GroupProcs()
            self.amqp_port = None
            self.rabbit = None

        def setup(self):
            for what, path in (("rabbitmq-server", RABBIT_SERVER), ("epmd", EPMD)):
                if not os.access(path, os.X_OK):
                    raise f.Fail(f"{what} is not installed ({path}): install the Debian package "
                                 "rabbitmq-server (tools/deps does it)")
            moto = shutil.which("moto_server")
            if moto is None:
                raise f.Fail("moto_server is not on PATH: chunkd with [amqp] needs an S3 content "
                             "bucket (storage.content_bucket), and the bench serves it with "
                             "moto_server (pip install 'moto[server]')")
            self.dir = tempfile.mkdtemp(prefix="chunkd-fleet-amqp-", dir=self.args.work_dir)
            for d in ("bucket", "data", "rabbit", "rabbit/log"):
                os.makedirs(os.path.join(self.dir, d))
            self.start_rabbit()
            self.start_moto(moto)
            self.write_config()
            self.start_chunkd()
            for size in sorted({s.file_bytes for s in self.scenarios}):
                self.create_stream(size)

        def start_rabbit(self):
            rdir = os.path.join(self.dir, "rabbit")
            epmd_port = f.free_port()
            self.procs.start("epmd", [EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"],
                             os.path.join(rdir, "epmd.log"))
            f.wait_for("epmd", lambda: f.port_open(epmd_port), 10)
            self.amqp_port, self.mqtt_port, dist = f.free_port(), f.free_port(), f.free_port()
            with open(os.path.join(rdir, "enabled_plugins"), "w") as fh:
                fh.write("[rabbitmq_mqtt].\n")
            open(os.path.join(rdir, "rabbitmq-env.conf"), "w").close()
            with open(os.path.join(rdir, "fleet.conf"), "w") as fh:
                fh.write(f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
                         f"mqtt.listeners.tcp.1 = 127.0.0.1:{self.mqtt_port}\n"
                         "mqtt.allow_anonymous = true\nloopback_users = none\n"
                         "disk_free_limit.absolute = 1MB\n")
            env = dict(os.environ)
            env.update({
                "HOME": rdir, "RABBITMQ_NODENAME": f"fleet-{self.amqp_port}@localhost",
                "RABBITMQ_MNESIA_BASE": rdir + "/mnesia", "RABBITMQ_LOG_BASE": rdir + "/log",
                "RABBITMQ_LOGS": rdir + "/log/fleet.log",
                "RABBITMQ_CONFIG_FILE": rdir + "/fleet.conf",
                "RABBITMQ_ENABLED_PLUGINS_FILE": rdir + "/enabled_plugins",
                "RABBITMQ_CONF_ENV_FILE": rdir + "/rabbitmq-env.conf",
                "RABBITMQ_PID_FILE": rdir + "/fleet.pid", "RABBITMQ_DIST_PORT": str(dist),
                "ERL_EPMD_PORT": str(epmd_port),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "-kernel inet_dist_use_interface {127,0,0,1}"})
            f.log("starting RabbitMQ (about 10 s)")
            self.rabbit = self.procs.start("rabbitmq", [RABBIT_SERVER],
                                           os.path.join(self.dir, "rabbitmq.log"), env=env)
            f.wait_for("RabbitMQ", lambda: f.port_open(self.amqp_port)
                       and f.port_open(self.mqtt_port), 90, self.rabbit)
            beams = [pid for pid, comm in group_members(self.rabbit.pid) if comm == "beam.smp"]
            if not beams:
                raise f.Fail("RabbitMQ is up but no beam.smp in its process group")
            self.broker = Beam(beams[0])

        def start_moto(self, moto):
            port = f.free_port()
            self.procs.start("moto_server", [moto, "-H", "127.0.0.1", "-p", str(port)],
                             os.path.join(self.dir, "moto.log"))
            f.wait_for("moto_server", lambda: f.port_open(port), 30)
            self.s3_endpoint = f"http://127.0.0.1:{port}"
            # Unsigned requests are accepted: no INITIAL_NO_AUTH_ACTION_COUNT, no IAM user.
            req = urllib.request.Request(self.s3_endpoint + "/content", method="PUT")
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status != 200:
                    raise f.Fail(f"moto_server: creating the bucket gave {r.status}")
            with open(os.path.join(self.dir, "s3-credentials"), "w") as fh:
                fh.write("[default]\naws_access_key_id = fleet\naws_secret_access_key = fleet\n")

        def write_config(self):
            self.http_port = f.free_port()
            d = self.dir
            with open(os.path.join(d, "chunkd.toml"), "w") as fh:
                fh.write(f"""# Written by bench/fleet --amqp.
[mqtt]  # not used with [amqp]
uri = "tcp://127.0.0.1:{self.mqtt_port}"
client_id = "chunkd-fleet"
[amqp]
uris = ["amqp://guest@127.0.0.1:{self.amqp_port}/%2f"]
queue = "{CHUNKD_QUEUE}"
[control]
listen = "127.0.0.1:{self.http_port}"
[storage]
data_dir = "{d}/data"
content_bucket = "shared"
[buckets]
bench = "{d}/bucket"
[buckets.shared]
type = "s3"
endpoint = "{self.s3_endpoint}"
region = "us-east-1"
bucket = "content"
credentials_file = "{d}/s3-credentials"
[cache]
capacity_mib = {self.args.cache_mb}
[log]
level = "warn"
""")

        def run_reference(self, s, fleet="devices", engine=None):
            """(a): the raw devices against fleet_ceiling --mode amqp-respond."""
            limit = self.timeout_for(s)
            argv = [self.exe["fleet_ceiling"], "--mode", "amqp-respond",
                    "--amqp-uri", f"amqp://127.0.0.1:{self.amqp_port}", "--queue", CEILING_QUEUE,
                    "--format", s.fmt, "--block-size", str(s.block),
                    "--topic-prefix", f.REFERENCE_PREFIX,
                    "--file", os.path.join(self.dir, "bucket", self.stream_keys[s.file_bytes]),
                    "--timeout-s", str(limit + 60)]
            err_path = os.path.join(self.dir, "responder.err")
            with open(err_path, "ab") as err_file:
                p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_file,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                ready, _, _ = f.select.select([p.stdout], [], [], 30)
                line = p.stdout.readline().decode(errors="replace").strip() if ready else ""
                if line != "ready":
                    raise f.Fail(f"fleet_ceiling --mode amqp-respond did not get ready ({line!r}); "
                                 f"see {err_path}")
                r = self.run_devices(s, prefix=f.REFERENCE_PREFIX, against="the AMQP responder")
                p.send_signal(signal.SIGTERM)
                out, _ = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            try:
                r["responder"] = f.json.loads(out.decode(errors="replace").strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise f.Fail(f"fleet_ceiling --mode amqp-respond printed no report; see {err_path}")
            resp = r["responder"]
            if resp.get("unanswered") or resp.get("nacks") or not resp.get("complete"):
                raise f.Fail(f"the AMQP responder: {resp.get('unanswered')} unanswered, "
                             f"{resp.get('nacks')} nacked, error {resp.get('error')!r}")
            r["responder_cpu_seconds"] = resp["cpu_seconds"]
            return r

        def run_scenario(self, s):
            f.log(f"scenario {s.name}: {s.title}; chunkd restarted for a fresh peak RSS")
            self.restart_chunkd()
            warm = f.Scenario(s.name + "-warm-up", "warm-up", s.fmt, s.block, 1, s.file_bytes, 2)
            w = self.run_devices(warm)
            f.log(f"  warm-up, one raw device <- chunkd  {w['mib_per_s']:>9.1f} MiB/s (cold cache)")
            ceils, devs = [], []
            for _ in range(max(self.args.rounds, s.min_rounds)):
                ceils.append(self.run_reference(s))
                f.log(f"  (a) raw devices <- AMQP pre-encoded  {ceils[-1]['msgs_per_s']:>9.0f} msgs/s")
                devs.append(self.run_devices(s))
                f.log(f"  (b) raw devices <- chunkd [amqp]     {devs[-1]['msgs_per_s']:>9.0f} msgs/s")
            ceils.append(self.run_reference(s))
            f.log(f"  (a) raw devices <- AMQP pre-encoded  {ceils[-1]['msgs_per_s']:>9.0f} msgs/s")
            return result(s, ceils, devs, f.vm_hwm_mib(self.chunkd.pid))

    return AmqpBench


def result(s, ceils, devs, rss):
    def mean(xs):
        return sum(xs) / len(xs)

    def per_gib(runs, key):
        return sum(r[key] for r in runs) / (sum(r["payload_bytes"] for r in runs) / GiB)

    a = mean([r["msgs_per_s"] for r in ceils])
    b = mean([r["msgs_per_s"] for r in devs])
    ratio = b / a if a > 0 else 0.0
    return {
        "scenario": s.name, "title": s.title, "format": s.fmt, "block_size_bytes": s.block,
        "devices": s.devices, "file_bytes": s.file_bytes, "in_flight": s.in_flight,
        "blocks_per_request": s.per_request, "rounds": len(devs),
        "ceiling_msgs_per_s": a, "chunkd_msgs_per_s": b, "ratio": ratio,
        "ceiling_msgs_per_s_runs": [round(r["msgs_per_s"]) for r in ceils],
        "chunkd_msgs_per_s_runs": [round(r["msgs_per_s"]) for r in devs],
        "ceiling_mib_per_s": mean([r["mib_per_s"] for r in ceils]),
        "chunkd_mib_per_s": mean([r["mib_per_s"] for r in devs]),
        "chunkd_cpu_s_per_gib": per_gib(devs, "chunkd_cpu_seconds"),
        "broker_cpu_s_per_gib": per_gib(devs, "broker_cpu_seconds"),
        "broker_cpu_s_per_gib_ceiling": per_gib(ceils, "broker_cpu_seconds"),
        "responder_cpu_s_per_gib": per_gib(ceils, "responder_cpu_seconds"),
        "devices_cpu_s_per_gib": per_gib(devs, "client_cpu_seconds"),
        "chunkd_rss_peak_mib": rss,
        "targets": [{"what": f"ratio >= {TARGET_RATIO}", "value": round(ratio, 3),
                     "met": ratio >= TARGET_RATIO}],
        "ceiling_runs": ceils, "chunkd_runs": devs,
    }


def table(results):
    head = ["scenario", "ceiling msg/s", "chunkd msg/s", "b/a", "chunkd MiB/s", "CPU s/GiB: chunkd",
            "beam.smp (b)", "beam.smp (a)", "responder", "devices", "RSS MiB"]
    rows = [head]
    for r in results:
        rows.append([r["scenario"], f"{r['ceiling_msgs_per_s']:.0f}",
                     f"{r['chunkd_msgs_per_s']:.0f}", f"{r['ratio']:.3f}",
                     f"{r['chunkd_mib_per_s']:.1f}", f"{r['chunkd_cpu_s_per_gib']:.2f}",
                     f"{r['broker_cpu_s_per_gib']:.2f}", f"{r['broker_cpu_s_per_gib_ceiling']:.2f}",
                     f"{r['responder_cpu_s_per_gib']:.2f}", f"{r['devices_cpu_s_per_gib']:.2f}",
                     f"{r['chunkd_rss_peak_mib']:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                       for i, c in enumerate(row)) for row in rows]
    lines.append("")
    for r in results:
        lines.append(f"{r['scenario']}: {r['title']}; in-flight {r['in_flight']} x "
                     f"{r['blocks_per_request']} blocks; runs, msgs/s: ceiling "
                     f"{r['ceiling_msgs_per_s_runs']}, chunkd {r['chunkd_msgs_per_s_runs']}")
        for t in r["targets"]:
            lines.append(f"    {'met ' if t['met'] else 'MISS'}  {t['what']}: {t['value']}")
    return "\n".join(lines)


def main(args, f):
    """bench/fleet --amqp; `f` is bench/fleet's module. Returns the exit status."""
    full, quick = f.SHARED_SCENARIOS, f.SHARED_QUICK
    if args.quick:
        scs = [quick]
    elif args.scenario:
        by_name = {s.name: s for s in full + [quick]}
        unknown = [n for n in args.scenario if n not in by_name]
        if unknown:
            f.log("unknown --amqp scenario(s): " + ", ".join(unknown) + "; there are "
                  + ", ".join(by_name))
            return 2
        scs = [by_name[n] for n in args.scenario]
    else:
        scs = full
    bench = make_bench(f)(args, scs)
    status = 0
    try:
        bench.build()
        started = time.time()
        machine = bench.machine()
        machine["broker"] = "RabbitMQ (" + RABBIT_SERVER + ") with rabbitmq_mqtt"
        bench.setup()
        results = [bench.run_scenario(s) for s in scs]
        doc = {"machine": machine, "transport": "amqp", "seconds": round(time.time() - started, 1),
               "scenarios": results}
        print(f.json.dumps(doc) if args.json else table(results))
        if args.quick:
            r = results[0]
            print(f"fleet amqp ratio={r['ratio']:.3f} chunkd_msgs_per_s={r['chunkd_msgs_per_s']:.0f} "
                  f"ceiling_msgs_per_s={r['ceiling_msgs_per_s']:.0f} "
                  f"rss_mib={r['chunkd_rss_peak_mib']:.1f}")
    except KeyboardInterrupt:
        f.log("interrupted")
        status = 130
    except (f.Fail, subprocess.CalledProcessError, OSError) as e:
        f.log(f"error: {e}")
        if bench.dir:
            args.keep = True
            for name in ("chunkd.log", "rabbitmq.log", "responder.err", "moto.log"):
                path = os.path.join(bench.dir, name)
                if os.path.exists(path):
                    with open(path, errors="replace") as fh:
                        tail = fh.read()[-1500:]
                    if tail.strip():
                        f.log(f"tail of {path}:\n{tail}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        bench.procs.stop_all()
        if bench.dir:
            if args.keep:
                f.log(f"kept {bench.dir}")
            else:
                shutil.rmtree(bench.dir, ignore_errors=True)
    sys.stdout.flush()
    return status
