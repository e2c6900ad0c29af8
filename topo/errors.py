"""The one error a testbed raises when it cannot be built, routed or locked."""


class TestbedError(RuntimeError):
    """The testbed cannot be built or routed; the message is one line for the user."""
