"""Images on disk, one sub-folder per class (torchvision's ImageFolder, Keras'
``image_dataset_from_directory``), decoded with Pillow."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

IMG_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                  ".webp")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("fastconv.data reads image files with Pillow, which is not installed: "
                          "pip install \"fastconv[data]\" (or: pip install Pillow)") from None
    return Image


def load_image(path: str, grayscale: bool = False) -> np.ndarray:
    """Decode an image file into an HWC uint8 array.

    Args:
        path: the image file (any format Pillow reads).
        grayscale: convert to one grey channel (Pillow's "L") instead of RGB.

    Returns:
        uint8 array (H, W, 3), or (H, W, 1) when ``grayscale``.

    Raises:
        OSError: the file cannot be read or decoded (the message names it).

    Example:
        >>> img = load_image("photo.png")      # doctest: +SKIP
        >>> img.shape, img.dtype                  # doctest: +SKIP
        ((480, 640, 3), dtype('uint8'))
    """
    Image = _pillow()
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if grayscale else "RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise OSError(f"cannot read image {os.fspath(path)!r}: {e}") from e
    return arr[:, :, None] if grayscale else arr


class ImageFolder:
    """A dataset of images stored as ``root/<class name>/**/<image>``.

    Classes are the sub-folders of ``root`` in sorted order (names starting with '.' are
    skipped); samples are the files with an image extension below each class folder
    (recursively; names sorted within each folder). ``dataset[i]`` is ``(image, class_index)``
    where the image is an HWC uint8 array (RGB, or one grey channel) passed through
    ``transform``.

    Args:
        root: the folder holding one sub-folder per class.
        transform: callable applied to the HWC uint8 image, e.g.
            ``Compose([ToFloat(), Resize(256), CenterCrop(224), Normalize(...)])``.
        target_transform: callable applied to the class index.
        extensions: file-name endings (case-insensitive) that count as images.
        grayscale: load images as one grey channel (H, W, 1) instead of RGB.

    Attributes:
        classes: sorted class names.
        class_to_idx: class name → class index.
        samples: list of (path, class_index).
        targets: list of class indices, one per sample.

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders, or a class folder holds
            no image.
        OSError (on indexing): an image cannot be decoded; the message names the file.

    Example:
        >>> ds = ImageFolder("pets/train", transform=ToFloat())   # doctest: +SKIP
        >>> ds.classes, ds[0][0].shape                            # doctest: +SKIP
        (['cat', 'dog'], (3, 375, 500))
    """

    def __init__(self, root: str, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None,
                 extensions: Sequence[str] = IMG_EXTENSIONS, grayscale: bool = False):
        _pillow()
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: root {self.root!r} is not an existing folder")
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes = sorted(entry.name for entry in os.scandir(self.root)
                              if entry.is_dir() and not entry.name.startswith("."))
        if not self.classes:
            raise FileNotFoundError(f"ImageFolder: no class sub-folders in {self.root!r}; "
                                    f"expected root/<class name>/<image files>")
        self.class_to_idx: Dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: List[Tuple[str, int]] = []
        for name in self.classes:
            found = self._find_images(os.path.join(self.root, name))
            if not found:
                raise FileNotFoundError(
                    f"ImageFolder: class folder {os.path.join(self.root, name)!r} holds no "
                    f"file ending in {', '.join(self.extensions)}")
            self.samples += [(path, self.class_to_idx[name]) for path in found]
        self.targets = [target for _, target in self.samples]
        self.transform, self.target_transform = transform, target_transform
        self.grayscale = grayscale

    def _find_images(self, folder: str) -> List[str]:
        paths = []
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            paths += [os.path.join(directory, f) for f in sorted(files)
                      if f.lower().endswith(self.extensions) and not f.startswith(".")]
        return paths

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        image = load_image(path, grayscale=self.grayscale)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return (f"ImageFolder(root={self.root!r}, {len(self.samples)} images, "
                f"{len(self.classes)} classes)")
