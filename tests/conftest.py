import jax
import pytest

from jaxvi import data


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped; nothing global changes)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as `jaxvi.data.load_digits` splits them (read once per worker)."""
    return data.load_digits()
