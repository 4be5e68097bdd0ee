"""TestRun: everything one test starts, and the verdict on how it all ended.

Owns the per-test artifact dir and every Machine launched for the test. At
the end, finish() shuts them all down and compares each exit with what the
test declared; an unexpected crash/hang/error becomes a MachineFailure whose
message starts with the signature.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from harness.hosts.base import Host
from harness.hosts.local import LocalHost
from harness.hosts.placement import Placement
from harness.qemu.cmdline import GuestFiles
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.outcome import Outcome, OutcomeKind
from harness.qemu.spec import GuestKind, MachineSpec


def safe_dirname(test_id: str) -> str:
    """/migration/precopy/tcp -> migration.precopy.tcp (readable, filesystem-safe)."""
    s = re.sub(r"[^A-Za-z0-9_.=-]+", ".", test_id).strip(".")
    return s[:150] or "test"


def resolve_guest_files(spec: MachineSpec) -> GuestFiles:
    from harness.guest import images  # built on first use, cached on disk
    kind = spec.guest.kind
    if kind is GuestKind.BOOTBLOCK and spec.guest.paced_rom:
        return GuestFiles(bootrom=images.build_bootrom())
    if kind is GuestKind.BOOTBLOCK:
        return GuestFiles(bootblock=images.build_bootblock())
    if kind is GuestKind.LINUX:
        img = images.build_linux()
        g = spec.guest
        return GuestFiles(kernel=img.kernel, initrd=img.initrd,
                          cmdline=img.cmdline(g.workload_mib, g.dirty_rate_mib_s, g.heartbeat_ms))
    return GuestFiles()


class TestRun:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, artifacts: Path, host: Host | None = None, want_evidence=None,
                 placement: Placement | None = None):
        self.artifacts = artifacts
        self.want_evidence = want_evidence  # see Machine.want_evidence
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if placement is None:
            h = host or LocalHost()
            placement = Placement(h, h)
        # Source-role machines go to placement.src, destinations to placement.dst.
        self.placement = placement
        self.host = placement.src
        self.machines: list[Machine] = []
        self.outcomes: dict[str, Outcome] = {}
        self.finished = False
        self.children: list[TestRun] = []
        self.staged_dirs: list[tuple[Host, Path]] = []
        # Known QEMU bugs this test declares (objects with .matches(signature), .url):
        # hits matching one are triaged as known, not new.
        self.known_bugs: tuple = ()

    def child(self, name: str) -> "TestRun":
        """A nested run (one hammer attempt inside a test); torn down with its parent."""
        c = TestRun(self.artifacts / name, want_evidence=self.want_evidence,
                    placement=self.placement)
        self.children.append(c)
        return c

    def worst_outcome(self) -> Outcome | None:
        """The one failure that names this run: a crash before a hang before the rest."""
        bad = [o for o in self.outcomes.values() if o.is_failure]
        bad.sort(key=lambda o: {OutcomeKind.CRASH: 0, OutcomeKind.HANG: 1}.get(o.kind, 2))
        return bad[0] if bad else None

    def all_machines(self) -> list[Machine]:
        return self.machines + [m for c in self.children for m in c.all_machines()]

    def machine(self, spec: MachineSpec, launch: bool = True, role: str | None = None) -> Machine:
        """Launch spec on its host: role 'src'/'dst', or guessed from the name (role_of)."""
        if any(m.name == spec.name for m in self.machines):
            raise ValueError(f"machine name '{spec.name}' already used in this test")
        host = {"src": self.placement.src, "dst": self.placement.dst}[role] if role \
            else self.placement.host_for(spec.name)
        m = Machine(host, spec, self.artifacts / spec.name, resolve_guest_files(spec),
                    want_evidence=self.want_evidence)
        self.machines.append(m)
        return m.launch() if launch else m

    def stage_tree(self, host: Host, local_dir: Path) -> str:
        """Copy a local directory tree (credentials...) to a run dir on host; removed at the end."""
        remote = host.make_run_dir("setup")
        self.staged_dirs.append((host, remote))
        for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            host.put_file(f, remote / f.relative_to(local_dir), mode=f.stat().st_mode & 0o777)
        return str(remote)

    def _remove_staged(self) -> None:
        while self.staged_dirs:
            host, path = self.staged_dirs.pop()
            try:
                host.remove_run_dir(path)
            except Exception:  # noqa: BLE001 - teardown: keep going
                pass

    def finish(self) -> list[Outcome]:
        """Shut down every machine; raise MachineFailure for the first unexpected exit."""
        for c in self.children:
            c.abort()
        if self.finished:
            return list(self.outcomes.values())
        self.finished = True
        for m in self.machines:
            self.outcomes[m.name] = m.shutdown()
        self._remove_staged()
        self._write_summary()
        bad = [o for o in self.outcomes.values() if o.is_failure]
        if bad:
            # Crashes first: they are the most informative signature.
            bad.sort(key=lambda o: {OutcomeKind.CRASH: 0, OutcomeKind.HANG: 1}.get(o.kind, 2))
            raise MachineFailure(bad[0])
        return list(self.outcomes.values())

    def abort(self) -> None:
        """Best-effort teardown after the test already failed: never raises."""
        for c in self.children:
            c.abort()
        if self.finished:
            return
        self.finished = True
        for m in self.machines:
            try:
                self.outcomes[m.name] = m.shutdown()
            except Exception:  # noqa: BLE001 - keep tearing down the rest
                if m.proc is not None:
                    m.proc.kill_group()
        self._remove_staged()
        self._write_summary()

    def _write_summary(self) -> None:
        (self.artifacts / "outcomes.json").write_text(json.dumps(
            {k: v.to_dict() for k, v in self.outcomes.items()}, indent=2) + "\n")

    def discard_artifacts(self) -> None:
        shutil.rmtree(self.artifacts, ignore_errors=True)
