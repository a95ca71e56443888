"""What an image goes through before the model -- saved with every checkpoint and export, and all the
inference path needs from the data package (torch only: ``plainnet predict`` never imports the trainer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Preprocess"]


@dataclass(frozen=True)
class Preprocess:
    """What an image goes through before the model; saved with every checkpoint and export."""

    image_size: int
    crop_ratio: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_to(self) -> int:
        """Shorter side before the center crop."""
        return round(self.image_size / self.crop_ratio)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(int(d["image_size"]), float(d["crop_ratio"]), tuple(d["mean"]), tuple(d["std"]))
