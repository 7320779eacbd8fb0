"""`manage.py capture`: the long-running capture process of one sensor (live, pcap files or demo)."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from capture import evidence, services, sources
from capture.choices import AnalysisDepth
from capture.connections import fail_fast_client
from capture.demo import DEMO_RATE
from capture.engines import CaptureUnavailable
from capture.host import DEMO_INTERFACE
from capture.models import Sensor
from capture.pcapio import CaptureFileError, ReadStats
from capture.progress import BYTES, PACKETS, Progress, files_size
from capture.runner import CaptureRunner
from capture.validation import check_sensor_name, sensor_name_from_host


class Command(BaseCommand):
    help = (
        "Capture packets (live from an interface, from pcap/pcapng files, or simulated with --demo), "
        "publish them to Redis in batches and have the workers store and score them."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--interface", "-i", help="live capture on this interface (default: the config's)"
        )
        source.add_argument("--pcap", nargs="+", metavar="FILE", help="read pcap/pcapng files (gzip too)")
        source.add_argument("--demo", action="store_true", help="simulated traffic with labeled attacks")
        parser.add_argument("--bpf", help="capture filter (BPF syntax) for live capture")
        parser.add_argument("--depth", choices=AnalysisDepth.values, help="override analysis_depth")
        parser.add_argument("--realtime", action="store_true", help="pcap: replay with the original timing")
        parser.add_argument("--rate", type=float, help="pcap: replay at this many packets/s; demo: packets/s")
        parser.add_argument("--sensor", help="sensor name (default: NETMON_SENSOR or the host name)")
        parser.add_argument("--count", type=int, help="stop after this many packets")
        parser.add_argument("--duration", type=float, help="stop after this many seconds")
        parser.add_argument("--summary-json", type=Path, help="write per-file and total counts here on exit")
        parser.add_argument("--batch-size", type=int, default=settings.NETMON_BATCH_SIZE)
        parser.add_argument("--seed", type=int, help="demo: random seed (default: time)")

    def handle(self, *args, **opts):
        sensor = self.sensor_name(opts["sensor"])
        config = services.get_config()
        # One client for the whole process (publisher, control polling, heartbeat, trimming); it
        # fails fast because the publisher retries with its own back-off.
        runner = CaptureRunner(
            sensor,
            redis_client=fail_fast_client(settings.REDIS_URL),
            buffer_size=config.buffer_size,
            batch_size=opts["batch_size"],
        )
        runner.evidence = evidence.ring_from_settings(sensor, runner.next_seq)
        deadline = time.monotonic() + opts["duration"] if opts["duration"] else None
        self.terminate = False

        def on_signal(signum, frame):
            self.terminate = True
            runner.request_interrupt()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        runner.start_reporter()
        exit_code = 0
        try:
            if opts["pcap"]:
                exit_code = self.run_pcaps(runner, opts, deadline)
            else:
                self.run_live(runner, opts, config, deadline)
        finally:
            runner.drain(timeout=15)
            runner.announce_state(Sensor.State.EXITED)
            runner.stop_reporter()
            runner.close(timeout=5)
            summary = runner.summary()
            if opts["summary_json"]:
                opts["summary_json"].write_text(json.dumps(summary, indent=2))
            totals = summary["totals"]
            self.stdout.write(
                f"{sensor}: read {totals['packets_read']:,}, published {totals['published']:,}, "
                f"undecodable {totals['undecodable']:,}, dropped {totals['dropped']:,}"
                + (f" ({totals['drop_reasons']})" if totals["dropped"] else "")
            )
        if exit_code:
            sys.exit(exit_code)

    @staticmethod
    def sensor_name(option: str | None) -> str:
        """--sensor, else NETMON_SENSOR, else the host name made valid; a bad explicit name stops here.

        The name is part of Redis keys. The host name is nobody's choice (it may hold characters
        outside the rule), so it is made into a valid name instead of refused.
        """
        if option is not None:
            value, field = option, "--sensor"
        elif settings.NETMON_SENSOR:  # empty: not set
            value, field = settings.NETMON_SENSOR, "NETMON_SENSOR"
        else:
            return sensor_name_from_host(socket.gethostname())
        try:
            return check_sensor_name(value, field=field)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    # --- pcap files ---------------------------------------------------------------------------
    def run_pcaps(self, runner: CaptureRunner, opts: dict[str, Any], deadline: float | None) -> int:
        runner.set_mode(Sensor.Mode.PCAP, reason=f"{len(opts['pcap'])} file(s)")
        runner.wait_for_workers = True
        runner.announce_state(Sensor.State.RUNNING)
        failed = 0
        progress = self.pcap_progress(opts)
        done_bytes = 0  # the files read to the end (or failed), for the position in all of them
        for path in opts["pcap"]:
            # every input file is in the summary, in order: one without packets (or not reached
            # because of --count/--duration) with zero counts
            runner.add_source(path)
        try:
            for path in opts["pcap"]:
                stats = ReadStats()
                error = None

                def on_chunk(n: int, stats: ReadStats = stats, done_bytes: int = done_bytes) -> None:
                    progress.advance(n, None if opts["count"] else done_bytes + stats.input_bytes)

                try:
                    base = runner.file_base_seq(sources.file_key(path))
                    chunks = sources.pcap_chunks(
                        path, stats, opts["batch_size"], realtime=opts["realtime"], rate=opts["rate"]
                    )
                    finished = runner.consume(
                        chunks, count=opts["count"], deadline=deadline, base_seq=base, on_chunk=on_chunk
                    )
                except (CaptureFileError, OSError) as exc:
                    failed += 1
                    self.stderr.write(f"{path}: {exc}")
                    error = str(exc)
                    continue
                finally:
                    runner.add_file_stats(path, stats.as_dict(), error)
                    done_bytes += files_size([path])
                for problem in stats.details[:5]:
                    self.stderr.write(f"{path}: {problem}")
                if not finished and (self.terminate or opts["count"] or deadline):
                    break
        finally:  # a bar left running would garble the terminal
            progress.close()
        return 1 if failed else 0

    def pcap_progress(self, opts: dict[str, Any]) -> Progress:
        """Progress of a pcap replay: to --count packets, else through the files' bytes (known up front)."""
        if opts["count"]:
            total, unit = opts["count"], PACKETS
        else:
            total, unit = files_size(opts["pcap"]), BYTES
        return Progress.for_command("capture", self.stdout, opts["verbosity"], total=total, unit=unit)

    # --- live capture and demo, under remote control --------------------------------------------
    def run_live(self, runner: CaptureRunner, opts: dict[str, Any], config, deadline: float | None) -> None:
        desired = {
            "interface": DEMO_INTERFACE if opts["demo"] else (opts["interface"] or config.network_interface),
            "bpf": opts["bpf"] if opts["bpf"] is not None else config.bpf_filter,
            "depth": opts["depth"] or config.analysis_depth,
        }
        follow_config = not (opts["demo"] or opts["interface"])
        running = True
        while not self.terminate:
            if running:
                chunks, close = self.open_source(runner, desired, opts)
                runner.interrupt.clear()
                runner.announce_state(Sensor.State.RUNNING)
                try:
                    runner.consume(chunks, count=opts["count"], deadline=deadline)
                finally:
                    close()
            else:
                runner.interrupt.wait(0.2)
            if self.terminate or (opts["count"] and runner.read >= opts["count"]):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            runner.interrupt.clear()
            while runner.commands:
                command = runner.commands.popleft()
                if command["action"] == "stop":
                    running = False
                    runner.announce_state(Sensor.State.STOPPED)
                elif command["action"] == "start":
                    running = True
                    desired["interface"] = command.get("interface") or desired["interface"]
                    if command.get("bpf") is not None:
                        desired["bpf"] = command["bpf"]
                elif command["action"] == "reconfigure" and follow_config:
                    config = services.get_config()
                    desired.update(
                        interface=config.network_interface, bpf=config.bpf_filter, depth=config.analysis_depth
                    )
                    runner.publisher.buffer_size = config.buffer_size

    def open_source(self, runner: CaptureRunner, desired: dict[str, Any], opts: dict[str, Any]):
        """The chunks of the desired source and a function that closes it; demo when live cannot start."""
        interface = desired["interface"]
        keep = runner.evidence is not None and runner.evidence.enabled  # the demo's frames, synthesized
        if interface == DEMO_INTERFACE:
            runner.set_mode(Sensor.Mode.DEMO, reason="demo mode requested")
            return sources.demo_chunks(
                opts["rate"] or DEMO_RATE, opts["batch_size"], opts["seed"], with_frames=keep
            ), lambda: None
        try:
            engine = sources.open_live(interface, desired["bpf"], desired["depth"])
        except CaptureUnavailable as exc:
            reason = str(exc)
            self.stderr.write(
                f"live capture on {interface} is not possible: {reason}; switching to demo mode"
            )
            runner.set_mode(Sensor.Mode.DEMO, reason=reason, interface=interface, bpf=desired["bpf"])
            return sources.demo_chunks(
                opts["rate"] or DEMO_RATE, opts["batch_size"], opts["seed"], with_frames=keep
            ), lambda: None
        runner.set_mode(Sensor.Mode.LIVE, reason="", interface=interface, bpf=desired["bpf"])
        runner.on_interrupt = engine.stop
        return engine.chunks(), engine.stop
