"""RDMA asked for on a host without an RDMA device: QEMU's own error reaches the failure text."""
import pytest

from harness.migration import catalog, requirements
from harness.migration.flows.rdma import RdmaError
from harness.migration.runner import run_scenario
from harness.qemu.binary import probe

pytestmark = pytest.mark.qemu


@pytest.fixture
def no_rdma(harness_config, qemu_accel):
    src, dst = probe(harness_config.qemu_src), probe(harness_config.qemu_dst)
    env = requirements.Env(src.path, dst.path, qemu_accel, src.version_tuple, dst.version_tuple)
    reason = requirements.NoRdmaDevice().check(env)
    if reason:
        pytest.skip(reason)
    return src.path, dst.path


@pytest.mark.parametrize("path", ["/migration/rdma/plain", "/migration/rdma/pin-all"])
def test_rdma_without_device_fails_with_qemus_words(path, no_rdma, harness_run, base_spec,
                                                     harness_config):
    """The scenario expects completion and has its requirements bypassed: the
    failure must say which step, which URI, and QEMU's error text."""
    s = catalog.by_path()[path]
    with pytest.raises(RdmaError) as ei:
        run_scenario(s, harness_run, base_spec, harness_config, *no_rdma)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: destination migrate-incoming rdma:127.0.0.1:")
    assert "RDMA ERROR: could not create rdma event channel (GenericError)" in msg
    assert "\n" not in msg
    # Both QEMUs stay alive and exit cleanly: a refusal, not a crash.
    outcomes = harness_run.finish()
    assert all(o.ok for o in outcomes)


def test_rdma_source_side_error_is_qemus(no_rdma, harness_run, base_spec, harness_config):
    s = catalog.by_path()["/migration/rdma/no-device/outgoing"]
    res = run_scenario(s, harness_run, base_spec, harness_config, *no_rdma)
    assert res["step"] == "source migrate"
    assert "RDMA ERROR: could not create CM channel" in res["refused"]
