"""Every declared scenario, run by its flow's driver, ended by the integrity proof."""
from harness.migration import runner


def test_scenario(scenario, harness_run, base_spec, harness_config, known_bug_xfail):
    runner.run_scenario(scenario, harness_run, base_spec, harness_config)
