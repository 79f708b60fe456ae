"""The media guard: what a Mosaic server may open, fetch and decode for a request.

`policy` (the operator's rules), `sources` (what a ``video_data`` item points at, refused by rule before
anything is opened), `addresses` (which hosts a URL may reach: pure functions), `probe` (a real video
container within the limits), `guard` (the request-level checks), `refusal` (the one error type, a
``ValueError`` SGLang answers with HTTP 400). The SGLang hooks live in `integration/media_guard.py`.
"""

from .addresses import address_refusal, host_refusal, url_refusal
from .guard import check_request_media, check_side_media, count_placeholders
from .policy import MediaPolicy
from .probe import ContainerInfo, probe_container, sniff_container
from .refusal import RULES, MediaRefused
from .sources import MediaSource, classify_video_item, local_path_refused

__all__ = [
    "MediaPolicy",
    "MediaRefused",
    "RULES",
    "MediaSource",
    "classify_video_item",
    "check_request_media",
    "check_side_media",
    "local_path_refused",
    "count_placeholders",
    "address_refusal",
    "host_refusal",
    "url_refusal",
    "ContainerInfo",
    "probe_container",
    "sniff_container",
]
