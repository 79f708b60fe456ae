"""Video programs on SGLang's frontend language: one question, a chat, a batch, and a small agent.

Each is an ``sgl.function`` with Mosaic's `program_video.video` in its prompt, run on a backend that
sends videos (`engine_backend.EngineBackend` on an in-process ``sgl.Engine``, or
`program_video.VideoRuntimeEndpoint` over HTTP) and returning typed results with Mosaic's per-request
statistics (``meta_info["mosaic"][0]``: frames, visual/attended tokens, clusters, host tier):

* `video_qa`: one question about a video;
* `video_chat`: several turns in one program; every turn re-sends the conversation with the video, so
  from the second turn on the engine's prefix cache holds it (`Answer.cached_tokens`);
* `batch_questions`: ``run_batch`` over many questions on one video (the engine batches the requests;
  the program threads share one decode of the clip through `ClipCache`);
* `ask_about`: a question about a time range (``video(path, start=, end=)``);
* `watch_for_events`: a tool loop (see its docstring for who decides what).

No global state besides `program_video.install_video_executor`, installed on first use if it is not.
Bad input fails before anything is sent, naming the argument (``FileNotFoundError`` for ``path``,
``ValueError`` for an option, ``TypeError`` for a backend that cannot send videos); an error inside a
program (an undecodable file) is raised, not left in the program state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import sglang as sgl

from . import program_video as pv
from .scene_cuts import DEFAULT_THRESHOLD, SceneCuts, scene_cuts
from .video import VideoError
from .video_clip import ClipOptions

__all__ = ["Answer", "Event", "AgentStep", "AgentReport", "TOOLS", "video_qa", "video_chat", "batch_questions",
           "ask_about", "watch_for_events", "open_backend"]

PathLike = Union[str, Path]

_CLIP_KEYS = ("fps", "max_frames", "start", "end", "max_side")
TOOLS = ("scene_cuts", "ask_about", "finish")  # the agent's tool names, as the model sees them in sgl.select

_CPU_ENGINE = dict(device="cpu", sampling_backend="pytorch", grammar_backend="none", skip_server_warmup=True,
                   dtype="float32", max_total_tokens=8192, log_level="error")
"""``sgl.Engine`` arguments for SGLang's CPU path on a tiny fp32 model (as tests/engine_support.py)."""


class Answer(NamedTuple):
    """A model's answer to one question, with its request's statistics."""

    question: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: Optional[int]  # prompt tokens the prefix cache served (None: meta_info has none)
    mosaic: Optional[dict]  # meta_info["mosaic"][0] (None: the engine runs without Mosaic)


class Event(NamedTuple):
    """A detected event: time and score are the detector's measurement, the description is the model's."""

    time_s: float  # the first frame of the new shot (`scene_cuts.SceneCut.time_s`)
    score: float  # the detector's distance for it
    window: Optional[tuple]  # (start, end) seconds the model was asked about; None: never asked
    description: Optional[str]  # the model's answer about that window; None: not asked
    mosaic: Optional[dict]  # Mosaic's statistics of that question's request


class AgentStep(NamedTuple):
    """One step of `watch_for_events`."""

    index: int
    thought: str  # the model's one-line thought (gen stopped at a newline; "" for a closing step)
    choices: tuple  # the tools valid at this step
    tool: str  # the tool called
    chosen_by: str  # "model" (sgl.select over choices) or "agent" (a single valid tool, or the closing detector run)
    observation: str  # the tool's output, as the model read it
    mosaic: Optional[dict]  # Mosaic's statistics of the thought's request (None for a closing step)


class AgentReport(NamedTuple):
    """What `watch_for_events` found."""

    goal: str
    events: tuple  # `Event` per detected cut, in time order
    steps: tuple  # every `AgentStep`
    stopped_by: str  # "finish" (the model chose it), "done" (only finish was left) or "step_limit"
    detection: SceneCuts  # the detector's full result (threshold, frames analysed, closest non-cut)


# --- single question, chat, batch ---------------------------------------------------------------------

@sgl.function
def _ask(s, path, question, clip):  # sampling parameters: run(max_new_tokens=, temperature=)
    s += sgl.user(pv.video(path, **clip) + question)
    s += sgl.assistant(sgl.gen("answer"))


@sgl.function
def _chat(s, path, questions, clip):
    for i, question in enumerate(questions):
        s += sgl.user(pv.video(path, **clip) + question if i == 0 else question)
        s += sgl.assistant(sgl.gen(f"answer_{i}"))


def video_qa(path: PathLike, question: str, *, backend, max_tokens: int = 64, temperature: float = 0.0,
             **clip_options) -> Answer:
    """Ask one question about a video. ``**clip_options``: how to sample it, as `program_video.video`
    (``fps``, ``max_frames``, ``start``, ``end``, ``max_side``); ``max_tokens`` / ``temperature``: the answer's ``gen``.

    Example: ``video_qa("clip.mp4", "What happens?", backend=backend, max_frames=16).mosaic["attended_tokens"]``
    """
    _text("video_qa", "question", question)
    clip = _prepare("video_qa", backend, path, clip_options, max_tokens=max_tokens)
    state = _run(_ask, backend, path=str(path), question=question, clip=clip, max_new_tokens=max_tokens,
                 temperature=temperature)
    return _answer(question, state, "answer")


def video_chat(path: PathLike, questions: Sequence[str], *, backend, max_tokens: int = 64,
               temperature: float = 0.0, **clip_options) -> List[Answer]:
    """A multi-turn chat about a video in one program: the video is in the first user turn, and each
    turn sees it and every earlier question and answer. Returns one `Answer` per question, in order;
    from the second on, ``cached_tokens`` counts the conversation so far (video included) that the
    engine's prefix cache already held."""
    questions = _questions("video_chat", questions)
    clip = _prepare("video_chat", backend, path, clip_options, max_tokens=max_tokens)
    state = _run(_chat, backend, path=str(path), questions=questions, clip=clip, max_new_tokens=max_tokens,
                 temperature=temperature)
    return [_answer(q, state, f"answer_{i}") for i, q in enumerate(questions)]


def batch_questions(path: PathLike, questions: Sequence[str], *, backend, max_tokens: int = 64,
                    temperature: float = 0.0, num_threads: int = 4, **clip_options) -> List[Answer]:
    """Independent questions about one video with ``run_batch`` (``num_threads`` programs at a time;
    the engine batches their requests). Returns one `Answer` per question, in order."""
    questions = _questions("batch_questions", questions)
    clip = _prepare("batch_questions", backend, path, clip_options, max_tokens=max_tokens)
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"batch_questions num_threads: expected an integer >= 1, got {num_threads!r}")
    arguments = [dict(path=str(path), question=q, clip=clip) for q in questions]
    states = _ask.run_batch(arguments, backend=backend, num_threads=num_threads, max_new_tokens=max_tokens,
                            temperature=temperature)
    for state in states:
        _raise_error(state)
    return [_answer(q, state, "answer") for q, state in zip(questions, states)]


def ask_about(path: PathLike, start: float, end: float, question: str, *, backend, fps: float = 2.0,
              max_frames: Optional[int] = 8, max_side: Optional[int] = None, max_tokens: int = 64) -> Answer:
    """Ask about the time range ``[start, end]`` seconds only (the agent's focused look)."""
    return video_qa(path, question, backend=backend, max_tokens=max_tokens, fps=fps, max_frames=max_frames,
                    start=start, end=end, max_side=max_side)


# --- the agent ----------------------------------------------------------------------------------------

_SYSTEM = (
    "You watch a video for a user. Tools: scene_cuts (measures when the shot changes), ask_about (look "
    "closely at a few seconds of the video: the next unwatched window, or the next detected cut), finish "
    "(stop). Each turn write one line 'Thought: ...', then 'Action: <tool>'."
)


@sgl.function
def _agent(s, run):
    s += sgl.system(_SYSTEM)
    s += sgl.user(pv.video(run.path, **run.overview) + "Goal: " + run.goal)
    for index in range(run.max_steps):
        choices = run.valid_tools()
        if choices == ("finish",):
            run.stopped_by = "done"
            return
        name = f"step_{index}"
        s += sgl.assistant_begin()
        s += "Thought:" + sgl.gen(f"{name}_thought", max_tokens=run.thought_tokens, stop="\n", temperature=0)
        s += "\nAction: " + (sgl.select(f"{name}_tool", choices=list(choices)) if len(choices) > 1 else choices[0])
        s += sgl.assistant_end()
        tool = _var(s, f"{name}_tool") if len(choices) > 1 else choices[0]
        observation = "" if tool == "finish" else run.call(tool)
        run.steps.append(AgentStep(index, _var(s, f"{name}_thought").strip(), choices, tool,
                                   "model" if len(choices) > 1 else "agent", observation,
                                   _mosaic(s.get_meta_info(f"{name}_thought"))))
        if tool == "finish":
            run.stopped_by = "finish"
            return
        s += sgl.user("Observation: " + observation)
    run.stopped_by = "step_limit"


class _AgentRun:
    """The agent's tools and what they found (the program's one argument; mutated by `_agent`)."""

    def __init__(self, path, goal, backend, *, window_s, max_steps, threshold, overview, window_clip,
                 thought_tokens, max_tokens):
        self.path, self.goal, self.backend = str(path), goal, backend
        self.window_s, self.max_steps, self.threshold = float(window_s), max_steps, threshold
        self.overview, self.window_clip = overview, window_clip
        self.thought_tokens, self.max_tokens = thought_tokens, max_tokens
        self.duration_s = _duration_s(path)
        self.windows_watched = 0
        self.detection: Optional[SceneCuts] = None
        self.descriptions: dict = {}  # cut index -> (window, Answer)
        self.steps: List[AgentStep] = []
        self.stopped_by = ""

    def valid_tools(self) -> tuple:
        """``finish`` is offered only once the detector has run (the report's times rest on it);
        ``ask_about`` while there is an unwatched window (before detection) or an undescribed cut."""
        if self.detection is None:
            unwatched = self.windows_watched * self.window_s < self.duration_s
            return ("scene_cuts", "ask_about") if unwatched else ("scene_cuts",)
        pending = len(self.descriptions) < len(self.detection.cuts)
        return ("ask_about", "finish") if pending else ("finish",)

    def call(self, tool: str) -> str:
        if tool == "scene_cuts":
            self.detection = scene_cuts(self.path, threshold=self.threshold)
            found = ", ".join(f"{c.time_s:.2f} s (score {c.score:.2f})" for c in self.detection.cuts)
            return f"scene_cuts: {len(self.detection.cuts)} cut(s)" + (f" at {found}" if found else "")
        if self.detection is None:  # watch the next window
            start = self.windows_watched * self.window_s
            window, question = (start, min(start + self.window_s, self.duration_s)), self.goal
            self.windows_watched += 1
        else:  # describe the next cut
            cut = self.detection.cuts[len(self.descriptions)]
            window = (max(0.0, cut.time_s - self.window_s / 2), min(cut.time_s + self.window_s / 2, self.duration_s))
            question = f"{self.goal} What changes around {cut.time_s:.1f} s?"
        try:
            answer = ask_about(self.path, *window, question, backend=self.backend, max_tokens=self.max_tokens,
                               **self.window_clip)
        except VideoError as e:  # e.g. a last window past the last frame: the model reads the failure
            answer, said = None, f"failed ({e})"
        else:
            said = answer.text.strip()
        if self.detection is not None:
            self.descriptions[len(self.descriptions)] = (window, answer)
        return f"ask_about({window[0]:.1f}-{window[1]:.1f} s): {said}"

    def report(self) -> AgentReport:
        if self.detection is None:  # the step limit came first: measure anyway, say who chose it
            observation = self.call("scene_cuts")
            self.steps.append(AgentStep(len(self.steps), "", ("scene_cuts",), "scene_cuts", "agent", observation, None))
        events = []
        for i, cut in enumerate(self.detection.cuts):
            window, answer = self.descriptions.get(i, (None, None))
            text, mosaic = (answer.text.strip(), answer.mosaic) if answer else (None, None)
            events.append(Event(cut.time_s, cut.score, window, text, mosaic))
        return AgentReport(self.goal, tuple(events), tuple(self.steps), self.stopped_by, self.detection)


def watch_for_events(
    path: PathLike,
    *,
    backend,
    goal: str = "tell me when the scene changes",
    window_s: float = 4.0,
    max_steps: int = 8,
    threshold: float = DEFAULT_THRESHOLD,
    overview_frames: int = 8,
    window_fps: float = 2.0,
    window_frames: int = 4,
    max_side: Optional[int] = None,
    thought_tokens: int = 16,
    max_tokens: int = 32,
) -> AgentReport:
    """Watch a video for scene changes with a small tool loop, and report them.

    The program shows the model the video (``overview_frames`` frames) and the goal, then loops: the
    model writes a one-line thought (``gen`` with ``stop="\\n"``) and picks the next tool with
    ``sgl.select`` over the tools valid now; the agent runs it and appends its output as an observation.
    The tools are plain Python: `scene_cuts.scene_cuts` (the detector) and `ask_about` (a question
    about ``window_s`` seconds: the next unwatched window before detection, then the window centred on
    the next undescribed cut). The loop stops when the model picks ``finish``, when finish is the only
    valid tool, or after ``max_steps`` steps.

    Who decides what: the *model* decides the order of tools, whether to watch windows itself before
    measuring, which cuts get described and when to stop, and it writes the descriptions. The *detector*
    decides what the events are and when they happen: every time in the report is a measurement on
    decoded frames, never the model's words. ``finish`` is not offered before the detector has run, and
    if the step limit comes first the agent runs it once at the end (`AgentStep.chosen_by` says
    ``"agent"``), so the report always rests on a measurement. With a random model the descriptions
    are noise; the times are not.

    Args:
        path: a video file.
        backend: an `EngineBackend` or `VideoRuntimeEndpoint`.
        goal: what to watch for (the model reads it; the detector looks for colour cuts whatever it says).
        window_s: seconds each ``ask_about`` looks at (> 0).
        max_steps: at most this many model steps (>= 1).
        threshold: the detector's threshold (see `scene_cuts.DEFAULT_THRESHOLD`).
        overview_frames / window_fps / window_frames / max_side: how the video and the windows are sampled.
        thought_tokens / max_tokens: token limits of a thought and of an ``ask_about`` answer.
    """
    if not (_is_number(threshold) and 0 < threshold < 1):
        raise ValueError(f"watch_for_events threshold: expected a number in (0, 1), got {threshold!r}")
    if not (_is_number(window_s) and window_s > 0):
        raise ValueError(f"watch_for_events window_s: expected a number of seconds > 0, got {window_s!r}")
    if not (_is_number(window_fps) and window_fps > 0):
        raise ValueError(f"watch_for_events window_fps: expected a number > 0, got {window_fps!r}")
    for name, value, least in (("max_steps", max_steps, 1), ("thought_tokens", thought_tokens, 1),
                               ("overview_frames", overview_frames, 2), ("window_frames", window_frames, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:  # frames: Qwen-VL's pairs
            raise ValueError(f"watch_for_events {name}: expected an integer >= {least}, got {value!r}")
    _text("watch_for_events", "goal", goal)
    overview = _prepare("watch_for_events", backend, path, dict(fps=1.0, max_frames=overview_frames, max_side=max_side),
                        max_tokens=max_tokens)
    window_clip = dict(fps=window_fps, max_frames=window_frames, max_side=max_side)
    _clip_options("watch_for_events", window_clip)
    run = _AgentRun(path, goal, backend, window_s=window_s, max_steps=max_steps, threshold=threshold,
                    overview=overview, window_clip=window_clip, thought_tokens=thought_tokens, max_tokens=max_tokens)
    _run(_agent, backend, run=run, temperature=0.0)
    return run.report()


# --- backends and helpers -----------------------------------------------------------------------------

def open_backend(*, url: Optional[str] = None, model_path: Optional[str] = None, device: str = "cpu",
                 mosaic_budget: int = 256, **engine_kwargs: Any):
    """The backend the examples use: a `VideoRuntimeEndpoint` on ``url`` (a running server), else an
    `EngineBackend` that owns a new ``sgl.Engine(enable_mosaic=True)`` on ``model_path`` (default: the
    embedded tiny Qwen2.5-VL, random weights), with SGLang's CPU flags when ``device="cpu"``. Call
    ``shutdown()`` on it when done (stops the engine it started; no-op for a URL)."""
    if url is not None:
        return pv.VideoRuntimeEndpoint(url)
    from .engine_backend import EngineBackend

    if model_path is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        model_path = str(build_tiny_model("qwen2_5_vl"))
    kwargs = dict(_CPU_ENGINE) if device == "cpu" else {"device": device}
    kwargs.update(engine_kwargs)
    return EngineBackend.launch(model_path=model_path, enable_mosaic=True, mosaic_budget=mosaic_budget, **kwargs)


def _prepare(fn: str, backend, path: PathLike, clip_options: dict, *, max_tokens: int) -> dict:
    """Check a program's inputs (every error names the argument) and install the video executor."""
    if not getattr(backend, "supports_video_data", False):
        raise TypeError(f"{fn} backend: expected an EngineBackend or VideoRuntimeEndpoint (a backend that sends "
                        f"videos), got {type(backend).__name__}")
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        raise FileNotFoundError(f"{fn} path: expected an existing video file, got {str(path)!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"{fn} max_tokens: expected an integer >= 1, got {max_tokens!r}")
    clip = _clip_options(fn, clip_options)
    if not pv.is_installed():  # installed already (maybe with the caller's own ClipCache): keep it
        pv.install_video_executor()
    return clip


def _clip_options(fn: str, options: dict) -> dict:
    unknown = sorted(set(options) - set(_CLIP_KEYS))
    if unknown:
        raise TypeError(f"{fn}: unexpected clip option(s) {unknown}; expected some of {list(_CLIP_KEYS)}")
    try:
        ClipOptions(**options).check()
    except ValueError as e:
        raise ValueError(f"{fn}: {e}") from None
    return dict(options)


def _text(fn: str, name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{fn} {name}: expected a non-empty string, got {value!r}")


def _questions(fn: str, questions: Sequence[str]) -> List[str]:
    if isinstance(questions, str) or not questions:
        raise ValueError(f"{fn} questions: expected a non-empty list of strings, got {questions!r}")
    for i, q in enumerate(questions):
        _text(fn, f"questions[{i}]", q)
    return list(questions)


def _run(program, backend, **arguments):
    state = program.run(backend=backend, **arguments)
    _raise_error(state)
    return state


def _raise_error(state) -> None:
    error = state.error()
    if error is not None:
        raise error


def _var(s, name: str):
    """A program variable; if the executor failed before setting it, its error instead of a KeyError."""
    try:
        return s[name]
    except KeyError:
        _raise_error(s)
        raise


def _answer(question: str, state, name: str) -> Answer:
    meta = state.get_meta_info(name) or {}
    cached = meta.get("cached_tokens")
    return Answer(question, state[name], int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0)),
                  None if cached is None else int(cached), _mosaic(meta))


def _mosaic(meta: Optional[dict]) -> Optional[dict]:
    stats = (meta or {}).get("mosaic")
    return stats[0] if isinstance(stats, list) and stats else None


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _duration_s(path: PathLike) -> float:
    """The file's duration from its container (0 when it has none; the agent then watches no window)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"video {path}: no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1_000_000 if container.duration is not None else 0.0
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"video {path}: cannot decode ({e})") from e
