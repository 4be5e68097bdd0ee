"""The COLO bug of QEMU < 10.2 is detected exactly: the primary ends 'completed', never 'colo'."""
import pytest

from harness.migration import catalog
from harness.migration.flows.colo import ColoNeverEntered
from harness.migration.runner import run_scenario
from harness.qemu.binary import probe

pytestmark = pytest.mark.qemu


def test_colo_never_entered_is_the_known_bug_signature(harness_run, base_spec, harness_config):
    src = probe(harness_config.qemu_src)
    s = catalog.by_path()["/migration/colo/plain/primary_failover"]
    if not s.known_bug.affects(src.version_tuple):
        pytest.skip(f"QEMU {src.version} has the COLO fix ({s.known_bug.url})")
    with pytest.raises(ColoNeverEntered) as ei:
        run_scenario(s, harness_run, base_spec, harness_config, src.path,
                     probe(harness_config.qemu_dst).path)
    msg = str(ei.value)
    assert s.known_bug.matches(msg)
    assert "-> completed" in msg and "colo" not in msg.split("statuses")[1].split(";")[0]
    # The COLO-FT objects were all accepted and nothing crashed.
    assert all(o.ok for o in harness_run.finish())
