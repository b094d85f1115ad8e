import pytest

from squat.kernels.build import ToolchainMissing


@pytest.fixture(scope="session")
def lib():
    """The host build (x86-simde or aarch64-native), built into the cache on first use."""
    from squat.kernels.binding import load

    try:
        return load()
    except ToolchainMissing as e:
        pytest.skip(str(e))
