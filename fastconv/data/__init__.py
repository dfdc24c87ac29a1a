"""fastconv.data: datasets, a prefetching DataLoader, image transforms and bundled real data,
all on numpy arrays (no torch needed).

Layouts: a model batch is NCHW float32; decoded images (`ImageFolder`, `load_image`) are HWC
uint8; `ToFloat` turns them into CHW float32 in [0, 1], the layout every other transform takes.

    from fastconv.data import (ImageFolder, DataLoader, Compose, ToFloat, RandomResizedCrop,
                               RandomHorizontalFlip, Normalize, IMAGENET_MEAN, IMAGENET_STD)
    train = ImageFolder("pets/train", transform=Compose([
        ToFloat(), RandomResizedCrop(224), RandomHorizontalFlip(),
        Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
    for x, y in DataLoader(train, batch_size=32, shuffle=True, seed=0):
        ...   # x: (32, 3, 224, 224) float32, y: (32,) int64

Determinism: with ``DataLoader(seed=s)`` the shuffle of epoch e and every random transform
applied to sample i in epoch e are functions of (s, e) and (s, e, i) only; see
`fastconv.data.seeding`.
"""
from fastconv.data.augment import (RandomAffine, RandomBrightness, RandomHorizontalFlip,
                                   RandomResizedCrop, RandomTransform, RandomVerticalFlip,
                                   augment)
from fastconv.data.bundled import TrainTest, load_digits, load_lfw_subset
from fastconv.data.dataset import ArrayDataset, Dataset, Subset, random_split, stratified_split
from fastconv.data.folder import IMG_EXTENSIONS, ImageFolder, load_image
from fastconv.data.geometry import affine_transform, resize
from fastconv.data.loader import DataLoader, Prefetcher, collate
from fastconv.data.seeding import sample_generator
from fastconv.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose,
                                      Grayscale, Normalize, Rescale, Resize, ToArray, ToFloat,
                                      Transform)

__all__ = [
    "Dataset", "ArrayDataset", "Subset", "random_split", "stratified_split",
    "ImageFolder", "load_image", "IMG_EXTENSIONS",
    "DataLoader", "Prefetcher", "collate", "sample_generator",
    "Transform", "Compose", "ToFloat", "ToArray", "Rescale", "Resize", "CenterCrop", "Normalize",
    "Grayscale", "IMAGENET_MEAN", "IMAGENET_STD",
    "RandomTransform", "RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
    "RandomAffine", "RandomBrightness", "augment",
    "resize", "affine_transform",
    "load_digits", "load_lfw_subset", "TrainTest",
]
