"""/migration/tls/...: TLS with PSK and x509 credentials made at test time, over
precopy and multifd, and the negatives that must fail (qtest: .../tls/...).

The negatives fail during the handshake: the source's migration goes 'failed' at
once. Where the *destination* rejects (wrong PSK, hostile or anonymous client) it
keeps listening (dst_exit=()); where the *source* rejects the server certificate
(hostname mismatch, unknown CA) the destination reads a truncated stream and exits 1
("Not a migration stream").
"""
from harness.migration.options import PrecopyOptions
from harness.migration.requirements import Capability, ObjectType
from harness.migration.scenario import Expect, Result, Scenario
from harness.migration.tls import X509, Psk
from harness.migration.transports import Transport

SMOKE = frozenset({"smoke", "full"})
PSK = (ObjectType("tls-creds-psk"),)
X509_REQ = (ObjectType("tls-creds-x509"),)
MULTIFD = {"multifd": True}
MULTIFD_PARAMS = {"multifd-channels": 4}

SCENARIOS = (
    # -- PSK -----------------------------------------------------------------------------
    Scenario("/migration/tls/tcp/psk/match", transport=Transport.TCP, options=PrecopyOptions(tls=Psk()),
             requires=PSK, tiers=SMOKE, note="qtest /migration/precopy/tcp/tls/psk/match"),
    Scenario("/migration/tls/unix/psk", transport=Transport.UNIX, options=PrecopyOptions(tls=Psk()),
             requires=PSK, note="qtest /migration/precopy/unix/tls/psk"),
    Scenario("/migration/tls/tcp/psk/mismatch", transport=Transport.TCP,
             options=PrecopyOptions(tls=Psk(mismatch=True)), requires=PSK,
             expect=Expect(Result.FAILED, error_match="TLS handshake failed", dst_exit=()),
             note="qtest /migration/precopy/tcp/tls/psk/mismatch: the destination has another "
                  "key for the user"),
    Scenario("/migration/tls/multifd/tcp/psk/match", transport=Transport.TCP,
             options=PrecopyOptions(tls=Psk()), caps=MULTIFD, params=MULTIFD_PARAMS,
             dst_params=MULTIFD_PARAMS, requires=PSK + (Capability("multifd"),),
             note="qtest /migration/multifd/tcp/tls/psk/match: every multifd channel does "
                  "its own handshake"),

    # -- x509 ------------------------------------------------------------------------------
    Scenario("/migration/tls/tcp/x509/default-host", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509()), requires=X509_REQ,
             note="server cert for the destination's address (127.0.0.1 locally) and "
                  "localhost, checked against the URI host"),
    Scenario("/migration/tls/tcp/x509/override-host", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(server_names=("qemu.org",), tls_hostname="qemu.org")),
             requires=X509_REQ, note="tls-hostname overrides the host the cert is checked for"),
    Scenario("/migration/tls/tcp/x509/mismatch-host", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(server_names=("qemu.org",))), requires=X509_REQ,
             expect=Expect(Result.FAILED, dst_exit=(1,),
                           error_match=r"Certificate does not match the hostname \d+\.\d+\.\d+\.\d+"),
             note="the server cert names qemu.org, the source connects to the destination's "
                  "address (127.0.0.1 locally)"),
    Scenario("/migration/tls/tcp/x509/wrong-ca", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(src_trusts=("other-ca",), client_cert_by="other-ca",
                                             verify_peer=False)),
             requires=X509_REQ,
             expect=Expect(Result.FAILED, dst_exit=(1,),
                           error_match="certificate hasn't got a known issuer"),
             note="the source trusts only an unrelated CA: it must reject the destination's "
                  "certificate (the destination does not check clients here)"),
    Scenario("/migration/tls/tcp/x509/hostile-client", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(src_trusts=("ca", "other-ca"), client_cert_by="other-ca")),
             requires=X509_REQ,
             expect=Expect(Result.FAILED, dst_exit=(),
                           error_match="Connection reset by peer|Broken pipe|TLS"),
             note="qtest hostile-client: the client's cert is by a CA the destination does not "
                  "trust; the destination rejects it and keeps listening"),
    Scenario("/migration/tls/tcp/x509/reject-anon-client", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(client_cert_by=None)), requires=X509_REQ,
             expect=Expect(Result.FAILED, dst_exit=(),
                           error_match="Connection reset by peer|Broken pipe|TLS"),
             note="verify-peer=on and a client without a certificate"),
    Scenario("/migration/tls/tcp/x509/allow-anon-client", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509(client_cert_by=None, verify_peer=False)), requires=X509_REQ),
    Scenario("/migration/tls/multifd/tcp/x509/default-host", transport=Transport.TCP,
             options=PrecopyOptions(tls=X509()), caps=MULTIFD, params=MULTIFD_PARAMS,
             dst_params=MULTIFD_PARAMS, requires=X509_REQ + (Capability("multifd"),)),
    Scenario("/migration/tls/multifd/tcp/zero-copy/refused", transport=Transport.TCP,
             options=PrecopyOptions(tls=Psk()), caps={"multifd": True, "zero-copy-send": True},
             requires=PSK + (Capability("zero-copy-send"),),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match="Zero copy only available for non-compressed non-TLS"),
             note="zero-copy-send with TLS must be refused"),
)
