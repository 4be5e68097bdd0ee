"""/migration/chaos: the chaos engine as pytest items, so pytest-xdist spreads it.

    pytest tests/migration/test_chaos.py --chaos-seconds 600 -n auto

One explorer per xdist worker draws plans (bases from the catalog, seeded by the
session seed and the item) until the deadline; each plan is an inner attempt with
its own artifacts (kept for violations only), counted by the hammer triage. The
test fails with the first violation's signature and lists the distinct ones.
Without --chaos-seconds it skips. Over an --inventory it skips for now: the engine's
relay, shared qcow2 disk and stray connections are local.
"""
import random
import time

import pytest

from harness.pytest_plugin import side_binaries
from harness.qemu.schema import probe_surface
from harness.stress import bases as bases_mod
from harness.stress.engine import ChaosRecipe
from harness.stress.hammer import quiet_expected_noise, with_malloc_perturb


def pytest_generate_tests(metafunc):
    if "explorer" in metafunc.fixturenames:
        cfg = metafunc.config
        workers = (cfg.workerinput.get("harness_workers", 1) if hasattr(cfg, "workerinput")
                   else getattr(cfg.option, "numprocesses", None) or 1)
        n = workers if isinstance(workers, int) and workers > 0 else 1
        metafunc.parametrize("explorer", range(n), ids=lambda i: f"explorer{i}")


def test_chaos(explorer, request, harness_run, harness_config, base_spec):
    seconds = request.config.getoption("chaos_seconds")
    if not seconds:
        pytest.skip("chaos runs only with --chaos-seconds N")
    if not (harness_run.placement.src.is_local and harness_run.placement.dst.is_local):
        pytest.skip("chaos over an inventory is not supported yet (local relay, shared disk)")
    quiet_expected_noise()
    src, dst = (b.path for b in side_binaries(harness_config, harness_run))
    bases = bases_mod.eligible(check=bases_mod.requirement_check(src, dst, base_spec.accel))
    recipe = ChaosRecipe(surface=probe_surface(src), bases=bases, dst_binary=dst,
                         corpus_dir=str(harness_run.artifacts / "corpus"))
    rng = random.Random(f"{request.config.option.hammer_seed}:{request.node.nodeid}")
    deadline = time.monotonic() + seconds
    seen: dict[str, str] = {}
    i = 0
    while time.monotonic() < deadline:
        plan = recipe.draw(rng)
        run = harness_run.child(f"plan-{i:05d}")
        i += 1
        v = recipe.attempt(run, with_malloc_perturb(base_spec, rng.randint(1, 255)), plan)
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
