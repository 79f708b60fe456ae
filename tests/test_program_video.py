"""`sgl.function` programs with Mosaic's `video()` through a real `sglang.launch_server --enable-mosaic`:
the server-side request carries every sampled frame (Mosaic's per-request frame and visual-token
counts), two videos in one prompt both arrive, a second question on the same video decodes nothing on
the client, and bad options or backends fail by name. Clip sampling itself: tests/test_video_clip.py."""

from __future__ import annotations

import json

import pytest
import sglang as sgl

from mosaic_sglang.frontend import program_video as pv
from mosaic_sglang.frontend.clip_cache import ClipCache
from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video import VideoError, make_synthetic_video

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]


@pytest.fixture(scope="module")
def server(tiny_vl_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("program-server") / "server.log"
    args = ["--enable-mosaic", "--mosaic-budget", "64", "--context-length", "8192", *cpu_server_args()]
    with SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("program-videos")
    return (make_synthetic_video(d / "long.mp4", num_frames=40, fps=2, size=64, num_scenes=2, seed=3),
            make_synthetic_video(d / "other.mp4", num_frames=12, fps=4, size=64, num_scenes=1, seed=4))


@pytest.fixture()
def backend(server):
    cache = ClipCache()
    pv.install_video_executor(cache)
    yield pv.VideoRuntimeEndpoint(server.url), cache
    pv.uninstall_video_executor()


@sgl.function
def _ask(s, videos, question):
    s += sgl.user(sum((v for v in videos[1:]), videos[0]) + question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=3, temperature=0))


def _run(backend, videos, question="what happens?"):
    state = _ask.run(videos=videos, question=question, backend=backend)
    stats = state.get_meta_info("answer")["mosaic"]  # SGLang's customized info: one entry per request
    assert isinstance(stats, list) and len(stats) == 1, stats
    return state, stats[0]


def test_program_sends_every_sampled_frame(backend, clips):
    endpoint, _ = backend
    long, _ = clips  # 20 s at 2 fps
    _, eight = _run(endpoint, [pv.video(long, fps=1, max_frames=8)])
    _, four = _run(endpoint, [pv.video(long, fps=1, max_frames=4)])
    # Qwen-VL merges frames in pairs: 8 frames -> 4 temporal groups, 4 -> 2, each the same patch grid
    assert (eight["frames"], four["frames"]) == (4, 2), (eight, four)
    assert eight["visual_tokens"] == 2 * four["visual_tokens"] > 0


def test_two_videos_in_one_prompt_both_arrive(backend, clips):
    endpoint, _ = backend
    long, other = clips
    _, both = _run(endpoint, [pv.video(long, max_frames=4), pv.video(other, max_frames=2)])
    _, first = _run(endpoint, [pv.video(long, max_frames=4)])
    _, second = _run(endpoint, [pv.video(other, max_frames=2)])
    assert both["frames"] == first["frames"] + second["frames"] == 3
    assert both["visual_tokens"] == first["visual_tokens"] + second["visual_tokens"]


def test_follow_up_question_does_not_decode_again(backend, clips):
    endpoint, cache = backend
    long, _ = clips
    state, _ = _run(endpoint, [pv.video(long, max_frames=6)], "first question?")
    state2, stats = _run(endpoint, [pv.video(long, max_frames=6)], "second question?")
    assert cache.decodes == 1 and cache.hits == 1
    assert stats["frames"] == 3 and state2["answer"] is not None
    _run(endpoint, [pv.video(long, max_frames=4)])  # other options: a new clip
    assert cache.decodes == 2


@pytest.mark.filterwarnings("ignore:Error in stream_executor")  # SGLang's interpreter warns, then keeps the error
def test_bad_options_and_inputs_fail_by_name(backend, clips, tmp_path):
    endpoint, _ = backend
    for kwargs, name in [({"max_frames": 0}, "max_frames"), ({"start": 5, "end": 2}, "start/end"),
                         ({"fps": 0}, "fps"), ({"max_side": 8}, "max_side")]:
        with pytest.raises(ValueError, match=name):
            pv.video(clips[0], **kwargs)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    for path in (tmp_path / "missing.mp4", corrupt):
        state = _ask.run(videos=[pv.video(path)], question="?", backend=endpoint)
        assert state.error() is not None  # the interpreter keeps the error...
        with pytest.raises(VideoError, match=path.name):
            raise state.error()  # ...and it names the file
    # the server is still healthy
    _, stats = _run(endpoint, [pv.video(clips[1], max_frames=2)])
    assert stats["frames"] == 1


@pytest.mark.filterwarnings("ignore:Error in stream_executor")
def test_backend_without_video_support_is_refused(backend, clips, server):
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    state = _ask.run(videos=[pv.video(clips[1])], question="?", backend=RuntimeEndpoint(server.url))
    with pytest.raises(TypeError, match="cannot send videos"):
        raise state.error()


def test_sglang_own_video_still_goes_to_sglang(backend):
    """Only Mosaic's expressions are taken over: SGLang's `SglVideo` keeps SGLang's method."""
    from sglang.lang.interpreter import StreamExecutor

    assert StreamExecutor._execute_video.__wrapped_original__.__qualname__ == "StreamExecutor._execute_video"
    assert json.dumps(repr(pv.video("x.mp4", max_frames=4)))  # repr names the options
