"""The local test stack's Rucio policy package: Rucio's generic policy, except that an account
may delete its own replication rules (as the policies of most experiments allow), so a gateway
user can cancel their own stage-in requests. Loaded through ``[policy] package``."""

SUPPORTED_VERSION = [">=41,<42"]


def get_algorithms():
    return {}
