"""Images into a tensor model's first input: decoding with limits, then the entry's preprocessing."""

from __future__ import annotations

import io

import numpy as np

from services.config import ImageInputArgs, TensorArgs
from services.errors import InputTooLarge, InvalidInput


def image_to_input(data: bytes, args: ImageInputArgs, spec: TensorArgs, max_pixels: int, param: str = "file") -> np.ndarray:
    """One row of ``spec`` (its shape without the batch dimension) from PNG/JPEG bytes."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidInput("The uploaded image is empty.", param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise InputTooLarge(f"The image is {image.width}x{image.height} pixels. At most {max_pixels} pixels "
                                    "are accepted.", param)
            image.load()
            row = _preprocess(image, args, spec)
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS
        raise InputTooLarge(f"The image is too large to decode ({exc}). At most {max_pixels} pixels are accepted.",
                            param) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInput(f"The upload is not a readable PNG or JPEG image ({exc.__class__.__name__}).", param) from exc
    except ValueError as exc:
        raise InvalidInput(str(exc), param) from exc
    return row


def _preprocess(image, args: ImageInputArgs, spec: TensorArgs) -> np.ndarray:
    from PIL import Image

    shape = spec.shape[1:]
    height, width = shape[-2], shape[-1]
    if args.preprocess == "sklearn-digits":
        from services.models.digits import image_to_grid

        grid = image_to_grid(image)
        return grid.reshape(shape) if -1 not in shape else grid
    if height == -1 or width == -1:
        raise ValueError(f"Input {spec.name!r} has no fixed height and width ({list(spec.shape)}), so an image cannot be scaled to it.")
    channels = shape[0] if len(shape) == 3 else 1
    mode = "RGB" if channels == 3 else "L"
    pixels = np.asarray(image.convert(mode).resize((width, height), Image.BILINEAR), dtype=np.float32)
    if args.invert:
        pixels = 255.0 - pixels
    pixels = pixels / 255.0 * args.scale
    if mode == "RGB":
        pixels = pixels.transpose(2, 0, 1)  # channels first, as torch models expect
    return pixels.reshape(shape)
