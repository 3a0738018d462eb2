"""The preprocessing of a model's input contract (tumorcls.data.preprocess) on synthetic heads: the head crop finds
the head (not burnt-in text), pads with black at the border and leaves head-less images alone; the intensity
normalisations are monotonic, keep grey grey and remove a brightness change; prepare_rgb crops before it resizes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.head_images import BLOB, CENTRE, HEIGHT, RADIUS, WIDTH, head_image
from tumorcls.data.decode import DecodeOptions, prepare_rgb, resize_rgb
from tumorcls.data.preprocess import crop_to_head, head_mask, normalise_intensity

LEVEL = 40  # between the noisy black background (< 10) and the darkest head pixel (> 80)


def _bright_centroid(rgb: np.ndarray) -> np.ndarray:
    """(row, col) centre of the pixels above LEVEL: the disc's centre when the disc is all there is."""
    ys, xs = np.nonzero(rgb[..., 0] > LEVEL)
    return np.array([ys.mean(), xs.mean()])


def test_the_crop_is_the_square_around_the_whole_head() -> None:
    rgb = head_image()
    out = crop_to_head(rgb)
    side = out.shape[0]
    assert out.shape == (side, side, 3)
    diameter = 2 * RADIUS + 1
    assert abs(side - diameter) / diameter <= 0.04  # a 2% margin and the mask's rounding, no more
    # the whole disc is inside: as many head pixels as in the source image, minus the blob
    assert (out[..., 0] > LEVEL).sum() == (rgb[..., 0] > LEVEL).sum() - rgb[BLOB][..., 0].size
    # centred on the disc within 2 px: the disc's centre (its pixels' centroid) is the square's centre
    np.testing.assert_allclose(_bright_centroid(rgb[:, 100:]) + [0, 100], CENTRE, atol=0.5)  # blob left out
    np.testing.assert_allclose(_bright_centroid(out), [(side - 1) / 2] * 2, atol=2.0)


def test_the_text_blob_is_neither_the_head_nor_inside_the_crop() -> None:
    rgb = head_image()
    assert not head_mask(rgb[..., 0])[BLOB].any()
    assert crop_to_head(rgb).max() < 255  # the blob (255) is the only saturated thing in the image
    # the crop is the same with or without the blob: it does not pull the square towards it
    np.testing.assert_array_equal(
        crop_to_head(rgb)[..., 0] > LEVEL, crop_to_head(head_image(blob=False))[..., 0] > LEVEL
    )


def test_images_without_a_head_come_back_unchanged() -> None:
    black = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    assert crop_to_head(black) is black
    only_text = head_image(radius=0)  # noise and the small blob: nothing head-sized
    assert crop_to_head(only_text) is only_text
    for mode in ("stretch", "equalize"):
        assert normalise_intensity(black, mode) is black
        assert normalise_intensity(only_text, mode) is only_text


def test_a_head_at_the_border_is_padded_with_black() -> None:
    rgb = head_image(centre=(100, 40), radius=70, blob=False)  # the disc runs 30 px past the left edge
    assert (rgb[:, 0, 0] > LEVEL).any()
    out = crop_to_head(rgb)
    side = out.shape[0]
    assert out.shape == (side, side, 3)
    assert abs(side - 141) / 141 <= 0.04  # the square of the disc's height, not of its visible width
    assert out[:, :8].max() == 0  # padding, not the image's noise, left of the image's first column
    visible = out[:, 8:]
    assert (visible[..., 0] > LEVEL).sum() == (rgb[..., 0] > LEVEL).sum()


def _head_values(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0][head_image(blob=False)[..., 0] > LEVEL]


def test_equalize_is_monotonic_and_keeps_grey_grey() -> None:
    rgb = head_image(blob=False)
    out = normalise_intensity(rgb, "equalize")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    src, dst = rgb[..., 0].ravel(), out[..., 0].ravel()
    order = np.argsort(src, kind="stable")
    assert (np.diff(dst[order].astype(int)) >= 0).all()  # a brighter input pixel never gets a darker output
    # and it spreads the head over the range
    values = _head_values(out)
    assert values.min() < 20 and values.max() == 255


def test_equalize_removes_a_brightness_change_that_none_keeps() -> None:
    dark, bright = head_image(gamma=1.8, blob=False), head_image(gamma=0.55, blob=False)
    raw_gap = np.abs(_head_values(dark).astype(float) - _head_values(bright)).mean()
    assert raw_gap > 50
    assert normalise_intensity(dark, "none") is dark and normalise_intensity(bright, "none") is bright  # gap kept
    eq_dark, eq_bright = normalise_intensity(dark, "equalize"), normalise_intensity(bright, "equalize")
    assert np.abs(_head_values(eq_dark).astype(float) - _head_values(eq_bright)).mean() < 4


def test_stretch_maps_the_heads_percentiles_to_the_full_range() -> None:
    rgb = head_image(gamma=1.8, blob=False)  # a dark head: 1st..99th percentile well inside 0..255
    lo, hi = np.percentile(_head_values(rgb), (1, 99))
    assert lo > 20 and hi < 200
    out = normalise_intensity(rgb, "stretch")
    new_lo, new_hi = np.percentile(_head_values(out), (1, 99))
    assert new_lo <= 3 and new_hi >= 252
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crop": "bogus"}, "unknown crop 'bogus'; choose one of ['none', 'head']"),
        ({"intensity": "clahe"}, "unknown intensity 'clahe'; choose one of ['none', 'stretch', 'equalize']"),
    ],
)
def test_unknown_settings_are_one_line(options: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        DecodeOptions(**options)
    assert str(caught.value) == message


def test_prepare_rgb_crops_before_it_resizes() -> None:
    rgb = head_image()
    cropped = prepare_rgb(rgb, DecodeOptions(size=150, crop="head"))
    assert cropped.shape == (150, 150, 3)
    np.testing.assert_array_equal(cropped, resize_rgb(crop_to_head(rgb), 150))
    # the head fills the input (a disc in its square: pi/4), where the whole image's resize leaves it small
    assert (cropped[..., 0] > LEVEL).mean() > 0.7
    assert (prepare_rgb(rgb, DecodeOptions(size=150))[..., 0] > LEVEL).mean() < 0.25
    both = prepare_rgb(rgb, DecodeOptions(size=150, crop="head", intensity="equalize"))
    np.testing.assert_array_equal(both, normalise_intensity(resize_rgb(crop_to_head(rgb), 150), "equalize"))
