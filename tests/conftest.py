import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped; nothing global changes)."""
    with jax.enable_x64(True):
        yield
