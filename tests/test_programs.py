"""`programs`: video Q&A programs and the scene-change agent on one in-process ``sgl.Engine`` (tiny
Qwen2.5-VL, CPU, Mosaic on): a chat answers every question and its later turns come from the prefix
cache (video included); ``run_batch`` answers in order and a second batch decodes nothing; the agent
finishes on a two-scene clip and reports the cut at the detector's time; bad input fails by name before
anything is sent; the example scripts run on the same engine. The detector alone:
tests/test_scene_cuts.py. The OpenAI example (examples/openai_video_url.py) is not run here: it starts
its own server (1-2 min on 2 busy cores)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import sglang as sgl

from engine_support import cpu_engine_kwargs
from mosaic_sglang.frontend import program_video as pv
from mosaic_sglang.frontend.clip_cache import ClipCache
from mosaic_sglang.frontend.engine_backend import EngineBackend
from mosaic_sglang.frontend.programs import TOOLS, batch_questions, video_chat, video_qa, watch_for_events
from mosaic_sglang.frontend.video import make_synthetic_video

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

FPS = 4  # the synthetic clips' frame rate: "one sampled frame" is 0.25 s
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def cache():
    clips = ClipCache()
    pv.install_video_executor(clips)  # the programs keep an installed executor (and its cache)
    try:
        yield clips
    finally:
        pv.uninstall_video_executor()


@pytest.fixture(scope="module")
def backend(tiny_vl_model, cache):
    engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, enable_mosaic=True, mosaic_budget=64))
    try:
        yield EngineBackend(engine)
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s, two scenes: the background changes at frame 8 (2.0 s)."""
    return make_synthetic_video(tmp_path_factory.mktemp("programs") / "two.mp4", num_frames=16, fps=FPS, size=64,
                                num_scenes=2, seed=1)


def test_chat_answers_every_turn_and_later_turns_hit_the_cache(backend, clip):
    questions = ["what happens?", "and then?", "what colour is it?"]
    turns = video_chat(clip, questions, backend=backend, max_frames=4, max_tokens=3)
    assert [t.question for t in turns] == questions and all(t.text for t in turns)
    first = turns[0]
    assert first.mosaic["frames"] == 2 and first.mosaic["visual_tokens"] > 100, first.mosaic  # 4 frames, in pairs
    for before, turn in zip(turns, turns[1:]):
        assert turn.completion_tokens == 3
        # each turn re-sends the conversation: the video and everything up to the previous question are cached
        assert turn.cached_tokens >= before.prompt_tokens >= first.mosaic["visual_tokens"], (before, turn)
        assert turn.prompt_tokens > before.prompt_tokens + before.completion_tokens
    one = video_qa(clip, "what happens?", backend=backend, max_frames=4, max_tokens=3)
    assert one.prompt_tokens == first.prompt_tokens and one.mosaic["visual_tokens"] == first.mosaic["visual_tokens"]


def test_batch_answers_one_per_question_in_order(backend, clip, cache):
    questions = ["why" + "?" * 1, "why " * 3 + "?", "why " * 6 + "?", "why " * 9 + "?"]  # longer and longer
    decodes = cache.decodes
    answers = batch_questions(clip, questions, backend=backend, max_frames=2, max_tokens=2, num_threads=4)
    assert [a.question for a in answers] == questions and all(a.text for a in answers)
    assert all(a.mosaic["frames"] == 1 for a in answers), [a.mosaic for a in answers]
    prompts = [a.prompt_tokens for a in answers]
    assert prompts == sorted(prompts) and len(set(prompts)) == len(prompts), prompts  # each answer is its question's
    # the batch's threads miss the clip cache together: one decodes, the others wait for it; a second batch hits
    assert cache.decodes - decodes == 1
    decodes = cache.decodes
    again = batch_questions(clip, questions[:2], backend=backend, max_frames=2, max_tokens=2, num_threads=2)
    assert cache.decodes == decodes and [a.prompt_tokens for a in again] == prompts[:2]


def test_agent_reports_the_scene_change_at_the_detectors_time(backend, clip):
    report = watch_for_events(clip, backend=backend, window_s=2.0, max_steps=6, overview_frames=4, window_frames=2,
                              thought_tokens=4, max_tokens=4)
    (event,) = report.events
    assert event.time_s == pytest.approx(2.0, abs=1 / FPS) and event.score > report.detection.threshold
    assert report.stopped_by in ("finish", "done", "step_limit") and report.steps
    assert [s.index for s in report.steps] == list(range(len(report.steps)))
    detected = False
    for step in report.steps:
        assert step.tool in step.choices and set(step.choices) <= set(TOOLS)
        assert step.chosen_by == ("model" if len(step.choices) > 1 else "agent")
        assert detected or "finish" not in step.choices  # no finishing before the detector ran
        detected = detected or step.tool == "scene_cuts"
        if step.tool == "ask_about":
            assert step.observation.startswith("ask_about(")
        if step.mosaic is not None:
            assert step.mosaic["visual_tokens"] > 0  # the thought's request carries the overview clip
    assert detected and "2.00 s" in next(s.observation for s in report.steps if s.tool == "scene_cuts")
    if event.description is not None:  # the model chose to look at the cut: a window around it
        assert event.window[0] <= event.time_s <= event.window[1] and event.mosaic["frames"] >= 1

    # a step limit too short to reach the detector: the agent measures anyway, and says so
    short = watch_for_events(clip, backend=backend, window_s=1.0, max_steps=1, overview_frames=2, window_frames=2,
                             thought_tokens=2, max_tokens=2)
    assert [e.time_s for e in short.events] == [event.time_s] and short.stopped_by == "step_limit"
    if short.steps[0].tool != "scene_cuts":
        assert short.steps[-1].chosen_by == "agent" and short.steps[-1].tool == "scene_cuts"


def test_bad_input_fails_by_name_before_anything_is_sent(backend, clip, tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"video_qa path.*missing\.mp4"):
        video_qa(missing, "?", backend=backend)
    with pytest.raises(ValueError, match="max_frames"):
        video_qa(clip, "?", backend=backend, max_frames=0)
    with pytest.raises(ValueError, match="start/end.*start=3.*end=1"):
        video_chat(clip, ["?"], backend=backend, start=3, end=1)
    with pytest.raises(TypeError, match="unexpected clip option.*'frames'"):
        video_qa(clip, "?", backend=backend, frames=4)
    with pytest.raises(ValueError, match=r"questions\[1\]"):
        batch_questions(clip, ["ok?", ""], backend=backend)
    with pytest.raises(ValueError, match="questions: expected a non-empty list"):
        video_chat(clip, "one question as a string", backend=backend)
    with pytest.raises(TypeError, match="backend: expected an EngineBackend or VideoRuntimeEndpoint"):
        video_qa(clip, "?", backend=object())
    with pytest.raises(FileNotFoundError, match="watch_for_events path"):
        watch_for_events(missing, backend=backend)
    for kwargs, name in [({"window_s": 0}, "window_s"), ({"max_steps": 0}, "max_steps"),
                         ({"threshold": 2}, "threshold"), ({"window_frames": 1}, "window_frames"),
                         ({"window_fps": 0}, "window_fps")]:
        with pytest.raises(ValueError, match=name):
            watch_for_events(clip, backend=backend, **kwargs)


@pytest.mark.filterwarnings("ignore:Error in stream_executor")  # SGLang warns, then the program raises it
def test_an_undecodable_file_raises_its_error(backend, tmp_path):
    from mosaic_sglang.frontend.video import VideoError

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    with pytest.raises(VideoError, match="corrupt.mp4"):
        video_qa(corrupt, "?", backend=backend, max_tokens=2)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, argv, expect", [
    ("video_qa", ["--max-frames", "2", "--max-tokens", "2"], "attended"),
    ("video_chat", ["--questions", "what?", "then?", "--max-frames", "2", "--max-tokens", "2"], "then? ->"),
    ("batch_questions", ["--questions", "a?", "b?", "--max-frames", "2", "--max-tokens", "2"], "2 questions"),
    ("video_agent", ["--max-steps", "3", "--max-tokens", "2"], "events (2;"),  # the default clip has 3 scenes
])
def test_example_runs_on_the_shared_engine(backend, capsys, name, argv, expect):
    assert _example(name).main(argv, backend=backend) == 0
    out = capsys.readouterr().out
    assert expect in out, out
