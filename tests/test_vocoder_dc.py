"""DC offset removal of vocoder output (codec.vocoder.dc)."""

import numpy as np
import pytest
from strata.errors import InputError
from strata.vocoder.dc import remove_dc

RATE = 22050


def _tone(freq: float, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * freq * t + 0.3).astype(np.float32)


@pytest.mark.parametrize(("freq", "bound"), [(80.0, 0.06), (100.0, 0.03), (250.0, 0.02), (1000.0, 0.01)])
def test_tones_pass(freq, bound):
    """The worst case is near 86 Hz (the frame rate), where frame means alias to a sub-10 Hz wobble."""
    x = _tone(freq)
    y = remove_dc(x.copy())
    inner = slice(RATE, 3 * RATE)
    assert np.abs(y - x)[inner].max() < bound
    assert np.std(y[inner]) == pytest.approx(np.std(x[inner]), rel=0.01)


def test_offsets_that_follow_the_loudness_are_removed():
    """A syllable-rate envelope (4 Hz) with an offset of 0.2 × its level, as the generator makes."""
    t = np.arange(3 * RATE) / RATE
    env = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    voice = env * np.sin(2 * np.pi * 150 * t)
    x = (voice + 0.2 * env).astype(np.float32)
    y = remove_dc(x.copy())
    assert abs(x.mean()) > 0.03 and abs(y.mean()) < 1e-3
    assert np.abs(y - voice)[RATE // 4: -RATE // 4].max() < 0.02  # the offset gone, the voice kept


def test_in_place_and_independent_of_the_block_size():
    x = (_tone(150.0, 1.3) + 0.1).astype(np.float32)
    y = x.copy()
    assert remove_dc(y) is y
    for block in (1, 1000, 4096, len(x) + 5):
        np.testing.assert_array_equal(remove_dc(x.copy(), block=block), y)


@pytest.mark.parametrize("n", [0, 1, 100, 256, 257, 5 * 256 + 3])
def test_any_length(n):
    x = np.full(n, 0.25, np.float32)
    y = remove_dc(x.copy())
    assert y.shape == (n,) and y.dtype == np.float32
    np.testing.assert_allclose(y, 0, atol=1e-6)  # a constant is all offset


@pytest.mark.parametrize(
    ("audio", "kwargs", "match"),
    [
        (np.zeros((2, 8), np.float32), {}, "1-D float"),
        (np.zeros(8, np.int16), {}, "1-D float"),
        (np.zeros(8, np.float32), {"hop": 0}, "hop"),
        (np.zeros(8, np.float32), {"frames": 0}, "frames"),
        (np.zeros(8, np.float32), {"block": 0}, "block"),
    ],
)
def test_bad_arguments(audio, kwargs, match):
    with pytest.raises(InputError, match=match):
        remove_dc(audio, **kwargs)
