"""/migration/chaos: the chaos engine as pytest items, so pytest-xdist spreads it.

    pytest tests/migration/test_chaos.py --chaos-seconds 600 -n auto [--inventory farm.toml]
                                         [--chaos-kinds link-cut,stray]

One explorer per xdist worker draws plans (bases from the catalog, seeded by the
session seed and the item) until the deadline; each plan is an inner attempt with
its own artifacts (kept for violations only), counted by the hammer triage. The
test fails with the first violation's signature and lists the distinct ones.
Without --chaos-seconds it skips.

With --inventory each attempt takes its pair's hosts from the inventory's slots
(harness.stress.remote): a link cut is an iptables reject of the migration ports
on the destination host's migration interface, recorded with the host's fault
guard (undone there if this controller dies); each side has its own qcow2 disk
on its own host; stray connections go to the destination's migration address.
Only tcp bases are drawn there (unix sockets do not cross hosts). The QMP schema
and the bases' requirements are probed on this controller, so the source binary's
path must exist here too (as on ci/farm's network-namespace hosts).
"""
import os
import random
import time

import pytest

from harness.faults.link import LinkFaultError
from harness.hosts.base import HostError
from harness.migration.transports import Transport
from harness.pytest_plugin import side_binaries
from harness.qemu.schema import probe_surface
from harness.stress import bases as bases_mod
from harness.stress.engine import ChaosRecipe
from harness.stress.hammer import quiet_expected_noise, with_malloc_perturb
from harness.stress.remote import remote_pair


def pytest_generate_tests(metafunc):
    if "explorer" in metafunc.fixturenames:
        cfg = metafunc.config
        workers = (cfg.workerinput.get("harness_workers", 1) if hasattr(cfg, "workerinput")
                   else getattr(cfg.option, "numprocesses", None) or 1)
        n = workers if isinstance(workers, int) and workers > 0 else 1
        metafunc.parametrize("explorer", range(n), ids=lambda i: f"explorer{i}")


def _local(*binaries: str) -> tuple[str, ...]:
    """The schema and requirements are probed here: a remote-only binary fails in one line."""
    for b in binaries:
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b}: not executable on this controller; chaos over an inventory probes "
                        f"the QMP schema locally, so the hosts' binary must exist here too", pytrace=False)
    return binaries


def test_chaos(explorer, request, harness_run, harness_config, base_spec):
    seconds = request.config.getoption("chaos_seconds")
    if not seconds:
        pytest.skip("chaos runs only with --chaos-seconds N")
    quiet_expected_noise()
    src, dst = (b.path for b in side_binaries(harness_config, harness_run))
    bases = bases_mod.eligible(check=bases_mod.requirement_check(*_local(src, dst), base_spec.accel))
    if remote_pair(harness_run.placement):
        bases = [b for b in bases if b.transport is Transport.TCP]
    kinds = tuple(k for k in request.config.getoption("chaos_kinds").split(",") if k)
    recipe = ChaosRecipe(surface=probe_surface(src), bases=bases, dst_binary=dst, kinds=kinds,
                         corpus_dir=str(harness_run.artifacts / "corpus"))
    rng = random.Random(f"{request.config.option.hammer_seed}:{request.node.nodeid}")
    deadline = time.monotonic() + seconds
    seen: dict[str, str] = {}
    i = 0
    while time.monotonic() < deadline:
        plan = recipe.draw(rng)
        run = harness_run.child(f"plan-{i:05d}")
        i += 1
        try:
            v = recipe.attempt(run, with_malloc_perturb(base_spec, rng.randint(1, 255)), plan)
        except (HostError, LinkFaultError) as exc:   # the harness's hosts, not QEMU: one line
            pytest.fail(f"plan {i - 1} on {harness_run.placement.describe()}: {exc}", pytrace=False)
        recipe.feedback(plan, v)
        if v.ok:
            run.discard_artifacts()
        else:
            seen.setdefault(v.signature, str(run.artifacts))
    if seen:
        first, art = next(iter(seen.items()))
        others = "".join(f"\n  also: {s} ({a})" for s, a in list(seen.items())[1:])
        pytest.fail(f"{first}\nartifacts: {art}\n{len(seen)} distinct violation(s) in {i} plans{others}",
                    pytrace=False)
