"""`EngineBackend`: ``sgl.function`` programs on an in-process ``sgl.Engine`` (tiny Qwen2.5-VL, CPU,
Mosaic on). A program's greedy ``gen`` equals ``engine.generate`` on the rendered prompt; ``select`` picks
the choice a direct logprob computation picks, with the same scores; Mosaic's `video()` reaches the
engine as ``video_data`` (every sampled frame, two videos in one prompt both); streaming ``gen`` yields
the text in pieces; ``run_batch`` runs programs on several threads against the one engine loop."""

from __future__ import annotations

import types

import pytest
import sglang as sgl
from sglang.lang.ir import SglSamplingParams

from engine_support import cpu_engine_kwargs, greedy
from mosaic_sglang.frontend import program_video as pv
from mosaic_sglang.frontend.clip_cache import ClipCache
from mosaic_sglang.frontend.engine_backend import EngineBackend

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

MAX_TOKENS = 6
LOGPROB_TOL = 1e-4
"""fp32 logprobs of the same tokens from two requests that differ in batch shape and prefix-cache use
(summation order only); a wrong position or a missing token moves a mean logprob by far more."""


@pytest.fixture(scope="module")
def engine(tiny_vl_model):
    engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, enable_mosaic=True, mosaic_budget=64))
    try:
        yield engine
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def backend(engine):
    pv.install_video_executor(ClipCache())
    try:
        yield EngineBackend(engine)
    finally:
        pv.uninstall_video_executor()


@sgl.function
def _chat(s, question):
    s += sgl.user(question)
    s += sgl.assistant_begin()
    s += sgl.gen("answer", max_tokens=MAX_TOKENS, temperature=0)


@sgl.function
def _pick(s, question, choices, method=sgl.token_length_normalized):
    s += sgl.user(question)
    s += sgl.assistant_begin()
    s += sgl.select("pick", choices=choices, choices_method=method)


@sgl.function
def _watch(s, videos):
    s += sgl.user(sum(videos[1:], videos[0]) + "what happens?")
    s += sgl.assistant(sgl.gen("answer", max_tokens=2, temperature=0))


def _direct(engine, prompt: str) -> str:
    return engine.generate(prompt=prompt, sampling_params=greedy(MAX_TOKENS))["text"]


def _checked(state):
    assert state.error() is None, state.error()
    return state


def test_gen_equals_engine_generate_on_the_rendered_prompt(engine, backend):
    state = _checked(_chat.run(question="what color is the car?", backend=backend))
    answer = state["answer"]
    prompt = state.text()[: len(state.text()) - len(answer)]
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n"), prompt  # Qwen template
    assert answer and answer == _direct(engine, prompt)
    assert state.get_meta_info("answer")["completion_tokens"] == MAX_TOKENS
    assert backend.get_model_name() == engine.get_model_info()["model_path"]


def _direct_choice_scores(engine, prefix: str, choices, scored):
    """Each choice's mean logprob over the positions `select` scored, from one uncached full-prompt pass."""
    prefix_tokens = engine.generate(prompt=prefix, sampling_params={"max_new_tokens": 0})["meta_info"]["prompt_tokens"]
    means = []
    for choice, tokens in zip(choices, scored):
        out = engine.generate(prompt=prefix + choice, sampling_params={"max_new_tokens": 0},
                              return_logprob=True, logprob_start_len=0)
        full = out["meta_info"]["input_token_logprobs"]
        # scored: the text's last token (no choice merged with it here) and the choice's tokens
        assert len(tokens) == len(full) - prefix_tokens + 1, (tokens, len(full), prefix_tokens)
        tail = full[len(full) - len(tokens):]
        assert [tid for _, tid, _ in tail] == [tid for _, tid, _ in tokens]
        means.append(sum(lp for lp, _, _ in tail) / len(tail))
    return means


def test_select_picks_the_choice_a_direct_logprob_computation_picks(engine, backend):
    choices = ["red", "blue car", "green"]
    state = _checked(_pick.run(question="what color is the car?", choices=choices, backend=backend))
    meta = state.get_meta_info("pick")
    prefix = state.text()[: len(state.text()) - len(state["pick"])]
    scored = meta["input_token_logprobs"]
    for choice, tokens in zip(choices, scored):  # each scored token has a logprob and its text
        assert all(lp is not None for lp, _, _ in tokens) and "".join(t for _, _, t in tokens).endswith(choice)
    direct = _direct_choice_scores(engine, prefix, choices, scored)
    assert max(abs(a - b) for a, b in zip(direct, meta["normalized_prompt_logprobs"])) <= LOGPROB_TOL
    assert state["pick"] == choices[direct.index(max(direct))]

    # the other choices methods get logprobs on every scored position too (the unconditional one, its
    # own pass from position 0) and pick one of the choices
    for method in (sgl.greedy_token_selection, sgl.unconditional_likelihood_normalized):
        other = _checked(_pick.run(question="what color is the car?", choices=choices, method=method, backend=backend))
        assert other["pick"] in choices


def test_video_reaches_the_engine_with_every_sampled_frame(backend, video_dir):
    state = _checked(_watch.run(videos=[pv.video(video_dir / "a.mp4", max_frames=4)], backend=backend))
    stats = state.get_meta_info("answer")["mosaic"]
    assert isinstance(stats, list) and len(stats) == 1, stats
    # 4 s at 1 fps: 4 frames, merged in pairs by Qwen-VL -> 2 temporal groups
    assert stats[0]["frames"] == 2 and stats[0]["visual_tokens"] > 0, stats


def test_two_videos_in_one_prompt_both_arrive(backend, video_dir):
    a, b = video_dir / "a.mp4", video_dir / "b.mp4"
    batch = [{"videos": [pv.video(a, max_frames=4), pv.video(b, max_frames=2)]},
             {"videos": [pv.video(a, max_frames=4)]}, {"videos": [pv.video(b, max_frames=2)]}]
    both, first, second = (_checked(st).get_meta_info("answer")["mosaic"][0]
                           for st in _watch.run_batch(batch, backend=backend, num_threads=3))
    assert both["frames"] == first["frames"] + second["frames"] == 3, (both, first, second)
    assert both["visual_tokens"] == first["visual_tokens"] + second["visual_tokens"] > 0


def test_streaming_gen_yields_text_in_pieces(engine, backend):
    state = _chat.run(question="where does the dog run?", stream=True, backend=backend)
    streamed = "".join(state.text_iter("answer"))
    answer = _checked(state)["answer"]
    prompt = state.text()[: len(state.text()) - len(answer)]
    assert streamed == answer == _direct(engine, prompt)
    # the backend itself: one increment per decoded token, adding up to the greedy text
    executor = types.SimpleNamespace(text_=prompt, images_=[])
    pieces = list(backend.generate_stream(executor, SglSamplingParams(max_new_tokens=MAX_TOKENS, temperature=0)))
    assert [meta["completion_tokens"] for _, meta in pieces] == list(range(1, MAX_TOKENS + 1))
    assert "".join(text for text, _ in pieces) == answer


def test_run_batch_runs_programs_on_threads(engine, backend):
    questions = ["what color is the car?", "who throws the ball?", "where is the station?"]
    states = _chat.run_batch([{"question": q} for q in questions], backend=backend, num_threads=3)
    answers = [_checked(state)["answer"] for state in states]
    assert len(answers) == 3 and all(answers)
    # same greedy answers as one at a time (text-only prompts are dense under Mosaic, so batching
    # changes no attended set; engine.generate works again once no program is running)
    prompts = [st.text()[: len(st.text()) - len(ans)] for st, ans in zip(states, answers)]
    assert answers == [_direct(engine, p) for p in prompts]


def test_shutdown_leaves_a_borrowed_engine_running(engine):
    other = EngineBackend(engine)
    other.shutdown()
    assert _direct(engine, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(TypeError, match="expected an sglang.Engine"):
        EngineBackend(object())
    with pytest.raises(ValueError, match="temperature"):
        other.select(types.SimpleNamespace(text_="x", images_=[]), ["a"], temperature=0.5)


def test_program_sampling_params_become_engine_arguments():
    from mosaic_sglang.frontend.engine_backend import _engine_sampling

    params, logprobs = _engine_sampling(SglSamplingParams(max_new_tokens=3, stop="x", dtype=int, return_logprob=True))
    assert params["stop"] == ["x", " ", "\n"] and params["regex"] is not None and params["stop_token_ids"] == []
    assert logprobs == {"return_logprob": True}
    with pytest.raises(ValueError, match="dtype"):
        _engine_sampling(SglSamplingParams(dtype="complex"))
