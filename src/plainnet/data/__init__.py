"""Datasets and input pipelines: image folders, CIFAR-10 batches, the bundled digits, splits, robust
image decoding, the decode-once cache and batched augmentation. (The Lightning data module lives in
:mod:`plainnet.data.datamodule` and is imported on demand.)"""

from .cifar import ArrayDataset, load_cifar_batches
from .digits import load_digits_arrays
from .folder import Sample, Splits, detect_layout, load_splits, scan_class_folders, stratified_split
from .images import BadImageError, is_image_file, load_rgb, load_rgb_array

__all__ = [
    "ArrayDataset",
    "BadImageError",
    "Sample",
    "Splits",
    "detect_layout",
    "is_image_file",
    "load_cifar_batches",
    "load_digits_arrays",
    "load_rgb",
    "load_rgb_array",
    "load_splits",
    "scan_class_folders",
    "stratified_split",
]
