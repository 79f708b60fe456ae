"""Frame ids from SGLang multimodal items (shape of the data checked against SGLang's own classes)."""

import torch

from mosaic_sglang.integration.frame_ids import frame_ids_from_mm_inputs


def _item(modality, offsets, grid=None):
    from sglang.srt.managers.schedule_batch import MultimodalDataItem
    from sglang.srt.multimodal.modality import Modality

    item = MultimodalDataItem(modality=getattr(Modality, modality), offsets=offsets)
    if grid is not None:
        item.set("video_grid_thw", torch.tensor([grid]))
    return item


class _Inputs:
    def __init__(self, items):
        self.mm_items = items


def test_video_groups_and_images_get_consecutive_frame_ids():
    # 3 text tokens, a video of 2 temporal groups x 4 tokens, 2 text, an image of 3 tokens, 1 text
    video = _item("VIDEO", [(3, 10)], grid=(2, 4, 4))  # 2 x (4*4/4) = 8 tokens
    image = _item("IMAGE", [(13, 15)])
    ids = frame_ids_from_mm_inputs(_Inputs([image, video]), 17)
    expected = [-1] * 3 + [0] * 4 + [1] * 4 + [-1] * 2 + [2] * 3 + [-1]
    assert ids.tolist() == expected


def test_text_only_and_truncated_sequences():
    assert frame_ids_from_mm_inputs(None, 4).tolist() == [-1] * 4
    video = _item("VIDEO", [(1, 6)], grid=(3, 2, 4))  # 6 tokens, 3 groups of 2
    assert frame_ids_from_mm_inputs(_Inputs([video]), 5).tolist() == [-1, 0, 0, 1, 1]


def test_per_frame_offset_ranges():
    video = _item("VIDEO", [(2, 3), (6, 7)])  # two ranges, no grid: one frame per range
    assert frame_ids_from_mm_inputs(_Inputs([video]), 9).tolist() == [-1, -1, 0, 0, -1, -1, 1, 1, -1]
