"""qemu-migration-harness: a pytest harness for QEMU live migration.

See README.md for the commands, docs/api.md for the test-author API and
docs/design.md for the design.
"""
__version__ = "0.2.0"
