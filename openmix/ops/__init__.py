"""Pure, batched tensor functions: no randomness, no labels, any device."""
from .blend import blend_with_partner
from .boxes import box_bounds, box_inside, box_mask
from .fourier import low_frequency_image, rank_mask
from .paste import resize_paste

__all__ = ["blend_with_partner", "box_bounds", "box_inside", "box_mask", "low_frequency_image", "rank_mask", "resize_paste"]
