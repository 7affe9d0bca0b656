"""zenith_det: the ZENITH optimizer in a distributed Faster/Mask/Keypoint R-CNN training loop."""

__version__ = "0.1.0"
