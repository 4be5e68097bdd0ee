"""Stdlib-only code shared by the chaos engine and the standalone reproducers it
exports. A reproducer embeds these modules' source text, so the engine and the
script run one implementation of every action (syzkaller's executor model):
nothing here may import from harness.* or any third-party package.
"""
