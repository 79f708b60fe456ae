"""The media guard's rules as functions: sources, addresses (no connection is made), containers, limits."""

from __future__ import annotations

import base64
import os

import pytest

from mosaic_sglang import MosaicConfig, MosaicConfigError
from mosaic_sglang.media import (
    MediaPolicy, MediaRefused, address_refusal, check_request_media, classify_video_item, host_refusal,
    probe_container, sniff_container, url_refusal,
)

NO_DNS = {}.__getitem__  # a resolver that fails every lookup: no test may reach the network


def _resolver(table):
    def resolve(host):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]
    return resolve


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("100.64.0.1", "private"),
    ("fd00::1", "private"), ("169.254.169.254", "metadata"), ("fe80::1", "link-local"),
    ("::ffff:169.254.169.254", "metadata"), ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "reserved"),
    ("224.0.0.1", "reserved"), ("240.0.0.1", "reserved"), ("fd00:ec2::254", "private"),
])
def test_non_public_addresses_are_refused(address, reason):
    assert reason in address_refusal(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


def test_host_rule_checks_every_resolved_address_and_metadata_names():
    resolve = _resolver({"cdn.example": ["93.184.216.34"], "rebind.example": ["93.184.216.34", "10.0.0.7"],
                         "internal.example": ["192.168.0.5"]})
    assert host_refusal("cdn.example", resolve=resolve) is None
    assert "10.0.0.7" in host_refusal("rebind.example", resolve=resolve)
    assert "private" in host_refusal("internal.example", resolve=resolve)
    assert "metadata" in host_refusal("metadata.google.internal", resolve=resolve)
    assert "could not be resolved" in host_refusal("nowhere.example", resolve=resolve)
    # the operator's list (SGLang's --allowed-media-domains) opts a host in, whatever it resolves to
    assert host_refusal("internal.example", allowed_hosts=["internal.example"], resolve=resolve) is None
    assert host_refusal("127.0.0.1", allowed_hosts=["127.0.0.1"], resolve=NO_DNS) is None
    assert "loopback" in url_refusal("http://[::1]:8000/v.mp4", resolve=NO_DNS)
    assert "loopback" in url_refusal("http://user@127.0.0.1:9/v.mp4", resolve=NO_DNS)
    assert "scheme" in url_refusal("ftp://93.184.216.34/v.mp4", resolve=NO_DNS)


@pytest.fixture()
def clip(tmp_path):
    from mosaic_sglang.frontend.video import make_synthetic_video

    return make_synthetic_video(tmp_path / "ok" / "clip.mp4", num_frames=4, fps=2, size=64)


def _refusal(rule, fn, *args, **kwargs):
    with pytest.raises(MediaRefused) as err:
        fn(*args, **kwargs)
    assert err.value.rule == rule, str(err.value)
    return str(err.value)


def test_local_paths_only_under_allowed_dirs_and_same_text_whether_they_exist(clip, tmp_path):
    policy = MediaPolicy(allowed_dirs=(str(clip.parent),))
    assert classify_video_item(str(clip), "v", policy).kind == "path"
    assert classify_video_item(f"file://{clip}", "v", policy).path == str(clip)
    outside_existing = _refusal("local-path", classify_video_item, "/etc/hostname", "v", policy)
    outside_missing = _refusal("local-path", classify_video_item, "/etc/no-such-file", "v", policy)
    assert outside_existing == outside_missing  # no probing of the server's files
    assert "/etc" not in outside_existing
    _refusal("local-path", classify_video_item, f"{clip.parent}/../../etc/hostname", "v", policy)
    _refusal("local-path", classify_video_item, "file:///etc/hostname", "v", policy)
    link = clip.parent / "link.mp4"
    os.symlink("/etc/hostname", link)
    _refusal("local-path", classify_video_item, str(link), "v", policy)  # resolved before the check
    assert "not found" in _refusal("not-found", classify_video_item, str(clip.parent / "gone.mp4"), "v", policy)
    _refusal("local-path", classify_video_item, str(clip), "v", MediaPolicy(allowed_dirs=()))
    assert classify_video_item("/etc/hostname", "v", MediaPolicy(allowed_dirs=None)).kind == "path"


def test_schemes_data_urls_and_sizes(clip):
    policy = MediaPolicy(allowed_dirs=None, max_bytes=1 << 20)
    for url in ("ftp://x/v.mp4", "gopher://x", "s3://bucket/v.mp4", "rtsp://cam/stream", "file://host/v.mp4"):
        _refusal("scheme", classify_video_item, url, "v", policy)
    payload = base64.b64encode(clip.read_bytes()).decode()
    assert classify_video_item(f"data:video/mp4;base64,{payload}", "v", policy).num_bytes == clip.stat().st_size
    assert classify_video_item(payload, "v", policy).kind == "data"  # SGLang's raw base64 form
    _refusal("data-url", classify_video_item, "data:video/mp4;base64,@@@@", "v", policy)
    _refusal("data-url", classify_video_item, f"data:video/mp4,{payload}", "v", policy)
    _refusal("data-url", classify_video_item, f"data:image/png;base64,{payload}", "v", policy)
    _refusal("data-url", classify_video_item, "data:video/mp4;base64", "v", policy)
    small = MediaPolicy(allowed_dirs=None, max_bytes=100)
    _refusal("max-bytes", classify_video_item, f"data:video/mp4;base64,{payload}", "v", small)
    _refusal("max-bytes", classify_video_item, str(clip), "v", small)
    _refusal("max-bytes", classify_video_item, clip.read_bytes(), "v", small)
    _refusal("address", classify_video_item, "http://127.0.0.1:1/v.mp4", "v", policy, resolve=NO_DNS)
    assert classify_video_item("http://127.0.0.1:1/v.mp4", "v", MediaPolicy(allowed_hosts=("127.0.0.1",)),
                               resolve=NO_DNS).kind == "url"


def test_placeholders_are_counted(clip):
    policy = MediaPolicy(allowed_dirs=None)
    check_request_media([str(clip)], policy, prompt="a <|video_pad|> b", placeholder="<|video_pad|>")
    message = _refusal("placeholder", check_request_media, [str(clip), str(clip)], policy,
                       prompt="a <|video_pad|> b", placeholder="<|video_pad|>")
    assert "2 video(s) but 1" in message
    _refusal("placeholder", check_request_media, str(clip), policy, prompt=[1, 2, 3], placeholder_id=9)
    check_request_media(str(clip), policy, prompt=[1, 9, 3], placeholder_id=9)


def test_container_rule_and_limits(clip, tmp_path):
    policy = MediaPolicy(allowed_dirs=None)
    info = probe_container(str(clip), "v", policy)
    assert (info.demuxer, info.width, info.height, info.frames) == ("mov", 64, 64, 4)
    assert probe_container(clip.read_bytes(), "v", policy).frames == 4
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n" * 200)  # FFmpeg's probe would pick the tty demuxer and render it
    _refusal("container", probe_container, str(text), "v", policy)
    playlist = tmp_path / "list.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:1/seg.ts\n")
    _refusal("container", probe_container, str(playlist), "v", policy)
    _refusal("decode", probe_container, clip.read_bytes()[:300], "v", policy)
    _refusal("max-side", probe_container, str(clip), "v", MediaPolicy(max_side=32))
    _refusal("max-frames", probe_container, str(clip), "v", MediaPolicy(max_frames=3))
    _refusal("max-seconds", probe_container, str(clip), "v", MediaPolicy(max_seconds=1.0))
    assert sniff_container(b"\x1a\x45\xdf\xa3" + b"\x00" * 60) == "matroska"
    assert sniff_container(b"\x89PNG\r\n\x1a\n" + b"\x00" * 60) is None


def test_media_config_fields_are_validated():
    cfg = MosaicConfig.from_dict({"allowed_media_dirs": ["/data"], "media_max_side": 1024})
    assert cfg.allowed_media_dirs == ("/data",) and MosaicConfig.from_json(cfg.to_json()) == cfg
    for options, field in [({"allowed_media_dirs": "/data"}, "allowed_media_dirs"),
                           ({"allowed_media_dirs": [""]}, "allowed_media_dirs"),
                           ({"media_max_bytes": 0}, "media_max_bytes"), ({"media_max_seconds": 0}, "media_max_seconds")]:
        with pytest.raises(MosaicConfigError, match=field):
            MosaicConfig.from_dict(options)
    assert MediaPolicy.from_config(cfg).allowed_dirs == (os.path.realpath("/data"),)


def test_item_types_follow_sglangs_own_reading(tmp_path):
    import numpy as np

    from mosaic_sglang.media import check_side_media

    policy = MediaPolicy(allowed_dirs=(str(tmp_path),))
    # a nested list of strings would reach Hugging Face's processor, which fetches/opens them itself
    for item in (["http://169.254.169.254/latest"], ["/etc/hostname"], [b"x"], {"url": "/etc/hostname"}, 3):
        _refusal("item-type", classify_video_item, item, "v", policy)
    frames = [np.zeros((4, 4, 3), np.uint8)] * 2
    assert classify_video_item(frames, "v", policy).kind == "frames"
    assert classify_video_item(np.zeros((2, 4, 4, 3), np.uint8), "v", policy).kind == "frames"
    assert classify_video_item({"format": "processor_output", "x": 1}, "v", policy).kind == "preprocessed"
    # schemes are read as SGLang reads them: case-sensitive prefixes; HTTP:// would be taken for a path
    _refusal("scheme", classify_video_item, "HTTP://8.8.8.8/etc/passwd", "v", policy, resolve=NO_DNS)
    _refusal("scheme", classify_video_item, "File:///etc/passwd", "v", policy)
    # a path spelled in base64's alphabet is handed to SGLang as a data: URL (never looked up as a file),
    # so an existing and a missing file give the same answer
    existing, missing = "/" * 82 + "etc/passwd", "/" * 82 + "etc/nosuch"
    assert len(existing) % 4 == 0 and os.path.isfile("/etc/passwd")
    for item in (existing, missing):
        source = classify_video_item(item, "v", policy)
        assert source.kind == "data" and source.item == "data:video/mp4;base64," + item
    # image_data / audio_data strings get the path, scheme and address rules too
    _refusal("local-path", check_side_media, ["/etc/hostname"], "image_data", policy)
    _refusal("local-path", check_side_media, [["file:///etc/hostname"]], "image_data", policy)
    _refusal("address", check_side_media, "http://127.0.0.1:1/x.png", "image_data", policy, resolve=NO_DNS)
    _refusal("scheme", check_side_media, ["ftp://x/a.wav"], "audio_data", policy)
    check_side_media(["data:image/png;base64,AAAA", None], "image_data", policy)


def test_downloaded_bytes_are_held_to_the_byte_limit(clip):
    _refusal("max-bytes", probe_container, clip.read_bytes(), "v", MediaPolicy(max_bytes=100))


def test_encoder_language_disaggregation_is_refused_with_mosaic():
    from types import SimpleNamespace

    from mosaic_sglang.integration.launch_flags import check_unsupported

    for name in ("language_only", "encoder_only"):
        with pytest.raises(MosaicConfigError, match=name):
            check_unsupported(SimpleNamespace(attention_backend="mosaic", **{name: True}))
        check_unsupported(SimpleNamespace(attention_backend="triton", **{name: True}))  # not ours
