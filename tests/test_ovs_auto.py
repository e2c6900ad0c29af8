"""``ovs_instances: auto`` (topo.bridges.auto_instances): how many private Open vSwitch
instances a run starts for its grid."""

from topo.bridges import AUTO_PRIVATE_ABOVE_SATS, auto_instances


def test_auto_keeps_small_grids_and_the_kernel_datapath_on_the_system_instance():
    assert auto_instances(121, "user") == 0
    assert auto_instances(AUTO_PRIVATE_ABOVE_SATS, "user") == 0
    assert auto_instances(1584, "kernel") == 0


def test_auto_gives_about_a_hundred_bridges_to_each_private_instance():
    """Fewer bridges per instance, less per-hop latency (each forwarding thread polls every
    port of its instance per wake-up): 72x22 gets 16 instances of 99 bridges, not 4 of 396."""
    assert auto_instances(1584, "user") == 16
    assert auto_instances(900, "user") == 9
    assert auto_instances(AUTO_PRIVATE_ABOVE_SATS + 1, "user") == 5
