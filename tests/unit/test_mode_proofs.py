"""Mode proofs (harness.migration.proofs) on recorded QMP replies and stderr traces:
each enabled mode must show its mark, and the message names what is missing."""
import pytest

from harness.migration.pair import Pair
from harness.migration.proofs import ModeNotProven, prove


class Recorded:
    """A machine as the proofs see it: recorded QMP replies and its stderr."""

    def __init__(self, caps=None, params=None, stderr=""):
        self.caps = {"multifd": False, "xbzrle": False, "auto-converge": False,
                     "postcopy-ram": False, "postcopy-preempt": False, **(caps or {})}
        self.params = {"multifd-channels": 2, "multifd-compression": "none", "tls-creds": "",
                       **(params or {})}
        self.stderr = stderr
        self.name = "recorded"

    def cmd(self, command, args=None, **kw):
        if command == "query-migrate-capabilities":
            return [{"capability": k, "state": v} for k, v in self.caps.items()]
        if command == "query-migrate-parameters":
            return dict(self.params)
        if command == "trace-event-get-state":   # a QEMU with the log trace backend
            return [{"name": args["name"], "state": "enabled"}]
        raise AssertionError(f"unexpected {command}")

    def stderr_text(self):
        return self.stderr


def pair(src, dst=None):
    return Pair(src, dst or Recorded())


THREADS_4 = "".join(f"multifd_send_thread_start {i}\n" for i in range(4))


def test_multifd_with_its_channels_and_compression_is_proven():
    src = Recorded({"multifd": True}, {"multifd-channels": 4, "multifd-compression": "zstd"}, THREADS_4)
    seen = prove(pair(src), {"ram": {"multifd-bytes": 2_000_000, "normal-bytes": 380_000_000}})
    assert seen["multifd_channels_seen"] == 4 and seen["compression"]["wire_bytes"] == 2_000_000


@pytest.mark.parametrize("caps, params, stderr, ram, want", [
    ({"multifd": True}, {"multifd-channels": 4}, THREADS_4, {"multifd-bytes": 0},
     "multifd-bytes is 0"),
    ({"multifd": True}, {"multifd-channels": 4}, "multifd_send_thread_start 0\n",
     {"multifd-bytes": 10}, "multifd-channels is 4 but 1 sender thread(s) started"),
    ({"multifd": True}, {"multifd-channels": 2}, "", {"multifd-bytes": 10},
     "no sender thread started"),
    ({"multifd": True}, {"multifd-channels": 4, "multifd-compression": "zlib"}, THREADS_4,
     {"multifd-bytes": 500, "normal-bytes": 400}, "compression zlib: 500 bytes on the wire"),
    ({"xbzrle": True}, {}, "", {}, "xbzrle: no page was encoded"),
    ({"auto-converge": True}, {}, "", {}, "auto-converge: cpu-throttle-percentage never rose"),
])
def test_a_mode_without_its_mark_fails_naming_it(caps, params, stderr, ram, want):
    with pytest.raises(ModeNotProven) as err:
        prove(pair(Recorded(caps, params, stderr)), {"ram": ram})
    assert want in str(err.value)


def test_postcopy_and_preempt():
    src = Recorded({"postcopy-ram": True, "postcopy-preempt": True},
                   stderr="postcopy_preempt_send_host_page x\n" * 3)
    seen = prove(pair(src), {"ram": {"postcopy-requests": 5, "postcopy-bytes": 9}},
                 postcopy_entered=True)
    assert seen["preempt_pages"] == 3
    with pytest.raises(ModeNotProven) as err:
        prove(pair(Recorded({"postcopy-ram": True, "postcopy-preempt": True})),
              {"ram": {}}, postcopy_entered=False)
    msg = str(err.value)
    assert "never entered postcopy-active" in msg and "no postcopy request" in msg
    assert "preempt channel carried no page" in msg


def test_tls_needs_creds_and_a_handshake_on_both_sides():
    hs = "qio_channel_tls_handshake_complete ioc=0x1\n"
    ok = prove(pair(Recorded(params={"tls-creds": "c"}, stderr=hs),
                    Recorded(params={"tls-creds": "c"}, stderr=hs)), {})
    assert ok["tls"]["handshakes"] == [1, 1]
    with pytest.raises(ModeNotProven) as err:
        prove(pair(Recorded(params={"tls-creds": "c"}, stderr=hs), Recorded()), {})
    assert "destination has no tls-creds" in str(err.value)
    assert "no completed TLS handshake on the destination" in str(err.value)


def test_auto_converge_from_progress_samples_or_the_hook():
    src = Recorded({"auto-converge": True})
    assert prove(pair(src), {}, samples=[{"cpu_throttle_percentage": 20}])["max_throttle_pct"] == 20
    assert prove(pair(src), {}, observed={"throttle_samples": [(0.1, 30)]})["max_throttle_pct"] == 30


def test_a_trace_event_this_qemu_lacks_is_not_observable_not_proven():
    class Old(Recorded):
        def cmd(self, command, args=None, **kw):
            if command == "trace-event-get-state":
                from harness.qemu.qmp import QMPCommandError
                raise QMPCommandError(command, "GenericError", "No such event")
            return super().cmd(command, args, **kw)
    seen = prove(pair(Old({"multifd": True}, {"multifd-channels": 4})), {"ram": {"multifd-bytes": 10}})
    assert seen["multifd_channels_seen"].startswith("not observable")
