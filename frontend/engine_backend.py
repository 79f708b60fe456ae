"""`EngineBackend`: ``sgl.function`` programs on an in-process ``sgl.Engine`` (no HTTP server).

SGLang's frontend runs programs on a backend; its only local one, ``RuntimeEndpoint``, talks HTTP to
``launch_server``. `EngineBackend` gives the same programs an ``sgl.Engine`` in this process (Mosaic's
``sgl.Engine(enable_mosaic=True, ...)`` or any other), built on ``Engine.async_generate``'s documented
arguments. What programs see is what ``RuntimeEndpoint`` gives them:

* ``gen`` sends the program text, the sampling parameters (``gen(dtype=...)`` as a regex, like the HTTP
  backend) and the program's media: ``sgl.image`` payloads as ``image_data`` and Mosaic's
  `program_video.video` clips (`VideoPayload` entries) as ``video_data``, lists in prompt order (a lone
  image as itself, as `program_video.VideoRuntimeEndpoint` sends it; ``supports_video_data`` is set, so
  `program_video.install_video_executor` accepts this backend);
* streaming ``gen`` yields the new text of each chunk (the engine's chunks are cumulative unless the
  engine runs with ``incremental_streaming_output``);
* ``select`` scores choices by logprobs as ``RuntimeEndpoint.select`` does: prefill the program text, then
  score ``text + choice`` from two tokens before the end of the text (a choice may merge with the last
  text token), drop the first scored token when the text ends with it (no merge happened), and hand the
  per-token logprobs to the program's choices method. Positions the engine returns without a logprob
  (the first one, when the prefix comes from the radix cache) are left out, so every choices method gets
  numbers; the unconditional pass scores from position 0 (``logprob_start_len=0``) and sends no media.

Threading: the engine serves requests on one asyncio loop (``engine.loop``, made by the thread that
built it; the tokenizer manager binds its receive loop to it on the first request), and
``Engine.generate`` runs that loop with ``run_until_complete``, so two threads calling it at once fail
("this event loop is already running"). ``run_batch`` runs programs on a thread pool, and even a single
``run`` calls the backend from the executor's own thread. So every request is an ``async_generate``
task on ``engine.loop``, and whichever waiting thread finds the loop idle runs it until its own task is
done, while the others' tasks advance in the same run — requests from parallel programs are batched by
the scheduler, and the loop is free again when no program is waiting (``engine.generate`` works between
programs, not while they run). ``shutdown`` stops the engine only if `EngineBackend.launch` built it.

Use::

    import sglang as sgl
    from mosaic_sglang.frontend import program_video as pv
    from mosaic_sglang.frontend.engine_backend import EngineBackend

    pv.install_video_executor()
    backend = EngineBackend(sgl.Engine(model_path=..., enable_mosaic=True))
    state = describe.run(path="clip.mp4", backend=backend)   # `describe` as in program_video
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.chat_template import get_chat_template, get_chat_template_by_model_path
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod, token_length_normalized
from sglang.lang.global_config import global_config
from sglang.lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

from .program_video import VideoPayload

__all__ = ["EngineBackend"]

_POLL_S = 0.005
"""How often a waiting thread checks whether the loop needs a driver (the most a hand-over can stall the
loop): 5 ms, about one decode step of the tiny CPU test model (72 tokens in 0.25 s, one program at a
time) and well under one of a real model, so the waiting threads cost little."""

_DTYPE_REGEX = {
    "int": (REGEX_INT, True), "float": (REGEX_FLOAT, True), "str": (REGEX_STR, False), "bool": (REGEX_BOOL, False),
}
"""``gen(dtype=...)`` -> (regex, whether a space or newline ends the value), as the HTTP backend does."""


class _EngineLoop:
    """Runs coroutines on an engine's event loop from any number of threads (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.driving = threading.Lock()  # held by the thread that is running the loop

    def run(self, make_coro: Callable[[], Any]) -> Any:
        """Run ``make_coro()`` as a task on the loop and return its result (or raise its error)."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def start() -> None:
            try:
                task = self.loop.create_task(make_coro())
            except BaseException as error:  # settle, or the caller would wait forever
                done.set_exception(error)
                return
            task.add_done_callback(lambda t: _settle(done, t))

        self.loop.call_soon_threadsafe(start)
        while not done.done():
            if self.driving.acquire(blocking=False):
                try:
                    if not done.done():
                        self.loop.run_until_complete(_until_done(done))
                finally:
                    self.driving.release()
            else:
                concurrent.futures.wait([done], timeout=_POLL_S)
        return done.result()

    def exclusive(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (an ``Engine`` method that runs the loop itself) while no program drives it."""
        with self.driving:
            return fn()


def _settle(done: concurrent.futures.Future, task: asyncio.Task) -> None:
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())


async def _until_done(done: concurrent.futures.Future) -> None:
    await asyncio.wait([asyncio.wrap_future(done)])


async def _next_chunk(stream) -> Optional[dict]:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


class EngineBackend(BaseBackend):
    """A frontend backend on an in-process ``sgl.Engine`` (see the module docstring).

    Args:
        engine: the ``sgl.Engine`` to run programs on (not shut down by `shutdown`).
        chat_template_name: a name for ``sglang.lang.chat_template.get_chat_template``; default: the
            template SGLang picks for the engine's model path (as ``RuntimeEndpoint``).
    """

    supports_video_data = True

    def __init__(self, engine, *, chat_template_name: Optional[str] = None, _owns_engine: bool = False):
        super().__init__()
        if not (callable(getattr(engine, "async_generate", None)) and hasattr(engine, "loop")):
            raise TypeError(f"EngineBackend(engine=...): expected an sglang.Engine, got {type(engine).__name__}")
        self.engine = engine
        self._owns_engine = _owns_engine
        self._loop = _EngineLoop(engine.loop)
        self.model_path = engine.get_model_info()["model_path"]
        self.chat_template = (
            get_chat_template(chat_template_name) if chat_template_name else get_chat_template_by_model_path(self.model_path)
        )

    @classmethod
    def launch(cls, *, chat_template_name: Optional[str] = None, **engine_kwargs) -> "EngineBackend":
        """Build an ``sgl.Engine(**engine_kwargs)`` that this backend owns (`shutdown` stops it)."""
        import sglang

        return cls(sglang.Engine(**engine_kwargs), chat_template_name=chat_template_name, _owns_engine=True)

    # --- what programs call -------------------------------------------------------------------------

    def get_model_name(self) -> str:
        return self.model_path

    def get_chat_template(self):
        return self.chat_template

    def cache_prefix(self, prefix_str: str) -> None:
        self._request(prompt=prefix_str, sampling_params={"max_new_tokens": 0})

    def commit_lazy_operations(self, s) -> None:
        self._prefill(s)

    def fill_image(self, s) -> None:
        self._prefill(s)

    def generate(self, s, sampling_params: SglSamplingParams) -> Tuple[str, dict]:
        params, logprob_args = _engine_sampling(sampling_params)
        out = self._request(prompt=s.text_, sampling_params=params, **logprob_args, **self._media(s))
        return out["text"], self._meta(out["meta_info"], sampling_params)

    def generate_stream(self, s, sampling_params: SglSamplingParams) -> Iterator[Tuple[str, dict]]:
        params, logprob_args = _engine_sampling(sampling_params)
        kwargs = dict(prompt=s.text_, sampling_params=params, stream=True, **logprob_args, **self._media(s))
        stream = self._loop.run(lambda: self.engine.async_generate(**kwargs))
        incremental = bool(getattr(self.engine.tokenizer_manager, "incremental_streaming_output", False))
        sent = 0
        while (chunk := self._loop.run(lambda: _next_chunk(stream))) is not None:
            finish = chunk["meta_info"].get("finish_reason") or {}
            if finish.get("type") == "abort":
                raise RuntimeError(f"EngineBackend.generate_stream: the engine aborted the request: {finish.get('message')}")
            delta = chunk["text"] if incremental else chunk["text"][sent:]
            sent += len(delta)
            yield delta, self._meta(chunk["meta_info"], sampling_params)

    def select(
        self,
        s,
        choices: List[str],
        temperature: float,
        choices_method: Optional[ChoicesSamplingMethod] = None,
    ) -> ChoicesDecision:
        if temperature > 1e-5:
            raise ValueError(f"select(temperature=...): expected 0 (choices are scored by logprobs), got {temperature}")
        if not choices:
            raise ValueError("select(choices=...): expected at least one choice, got none")
        method = choices_method or token_length_normalized
        prefix = self._prefill(s)  # caches the program text, gives its length in tokens
        start = max(prefix["meta_info"]["prompt_tokens"] - 2, 0)  # two back: a choice may merge with the last token
        outs = self._request(
            prompt=[s.text_ + c for c in choices],
            sampling_params={"max_new_tokens": 0, "temperature": 0},
            return_logprob=True,
            logprob_start_len=start,
            **self._media(s, batch=len(choices)),
        )
        scored = [self._scored_tokens(s.text_, out["meta_info"]["input_token_logprobs"]) for out in outs]
        normalized = [_mean_logprob(tokens) for tokens in scored]
        unconditional = None
        if method.requires_unconditional_logprobs:
            uncond = self._request(
                input_ids=[[tid for _, tid, _ in tokens] for tokens in scored],
                sampling_params={"max_new_tokens": 0},
                return_logprob=True,
                logprob_start_len=0,
            )
            unconditional = [out["meta_info"]["input_token_logprobs"] for out in uncond]
        return method(
            choices=choices,
            normalized_prompt_logprobs=normalized,
            input_token_logprobs=scored,
            output_token_logprobs=[out["meta_info"]["output_token_logprobs"] for out in outs],
            unconditional_token_logprobs=unconditional,
        )

    def concatenate_and_append(self, src_rids: List[str], dst_rid: str):
        raise NotImplementedError(
            "EngineBackend.concatenate_and_append: joining forks' KV caches needs the HTTP server's "
            "/concate_and_append_request; with this backend (support_concate_and_append=False) programs join "
            "forks by text"
        )

    def flush_cache(self):
        return self._loop.exclusive(self.engine.flush_cache)

    def get_server_info(self):
        return self._loop.exclusive(self.engine.get_server_info)

    def shutdown(self) -> None:
        """Stop the engine if `launch` built it; an engine passed in is left running for its owner."""
        if self._owns_engine:
            self._owns_engine = False
            self.engine.shutdown()

    # --- helpers ------------------------------------------------------------------------------------

    def _request(self, **kwargs):
        """One non-streaming ``Engine.async_generate(**kwargs)``, run on the engine's loop."""
        return self._loop.run(lambda: self.engine.async_generate(**kwargs))

    def _prefill(self, s) -> dict:
        return self._request(prompt=s.text_, sampling_params={"max_new_tokens": 0}, **self._media(s))

    @staticmethod
    def _media(s, batch: Optional[int] = None) -> Dict[str, Any]:
        """The program's media as ``image_data`` / ``video_data`` (prompt order); ``batch``: that many
        requests with the same media (the per-request lists repeated)."""
        images = [payload for _, payload in s.images_ if not isinstance(payload, VideoPayload)]
        videos = [payload.url for _, payload in s.images_ if isinstance(payload, VideoPayload)]
        media: Dict[str, Any] = {}
        if batch is None:
            if images:
                media["image_data"] = images if len(images) > 1 else images[0]
            if videos:
                media["video_data"] = videos
        else:
            if images:
                media["image_data"] = [list(images) for _ in range(batch)]
            if videos:
                media["video_data"] = [list(videos) for _ in range(batch)]
        return media

    def _tokenizer(self):
        tokenizer = getattr(self.engine.tokenizer_manager, "tokenizer", None)
        if tokenizer is None:
            raise RuntimeError(
                "EngineBackend: token texts need the engine's tokenizer; got an engine without one "
                "(skip_tokenizer_init=True); start it with the tokenizer"
            )
        return tokenizer

    def _with_texts(self, entries: List[tuple]) -> List[tuple]:
        tokenizer = self._tokenizer()
        return [(lp, tid, tokenizer.decode([tid])) for lp, tid, *_ in entries]

    def _scored_tokens(self, text: str, entries: List[tuple]) -> List[tuple]:
        """The (logprob, token id, token text) entries a choice is scored on (see the module docstring)."""
        entries = self._with_texts(entries)
        if entries and text.endswith(entries[0][2]):  # the first position is a text token, not merged
            entries = entries[1:]
        return [entry for entry in entries if entry[0] is not None]

    def _meta(self, meta: dict, sampling_params: SglSamplingParams) -> dict:
        """The engine's meta_info, with token texts in the logprob lists when the program asked for them
        (``Engine.async_generate`` has no ``return_text_in_logprobs``)."""
        if not sampling_params.return_text_in_logprobs:
            return meta
        meta = dict(meta)
        for key in ("input_token_logprobs", "output_token_logprobs"):
            if meta.get(key):
                meta[key] = self._with_texts(meta[key])
        for key in ("input_top_logprobs", "output_top_logprobs"):
            if meta.get(key):
                meta[key] = [self._with_texts(top) if top else top for top in meta[key]]
        return meta


def _mean_logprob(tokens: List[tuple]) -> float:
    """Mean logprob of a choice's scored tokens (``-inf`` if none: nothing to compare)."""
    return sum(lp for lp, *_ in tokens) / len(tokens) if tokens else float("-inf")


def _engine_sampling(sampling_params: SglSamplingParams) -> Tuple[dict, dict]:
    """``(sampling_params, logprob arguments)`` for ``Engine.async_generate`` from a program's
    ``SglSamplingParams`` (not modified)."""
    params = {
        "skip_special_tokens": global_config.skip_special_tokens_in_output,
        "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
        **sampling_params.to_srt_kwargs(),
    }
    params = {key: list(value) if isinstance(value, tuple) else value for key, value in params.items()}
    dtype = sampling_params.dtype
    if dtype is not None:
        name = dtype.__name__ if isinstance(dtype, type) else dtype
        if name not in _DTYPE_REGEX:
            raise ValueError(f"gen(dtype=...): expected one of {sorted(_DTYPE_REGEX)} or the type, got {dtype!r}")
        regex, stops_at_space = _DTYPE_REGEX[name]
        if params.get("regex") is not None:
            warnings.warn(f"gen(): both dtype={name} and regex are set; the dtype's regex is used")
        params["regex"] = regex
        if stops_at_space:
            stop = params.get("stop") or []
            params["stop"] = ([stop] if isinstance(stop, str) else list(stop)) + [" ", "\n"]
    logprob_args = {
        name: getattr(sampling_params, name)
        for name in ("return_logprob", "logprob_start_len", "top_logprobs_num")
        if getattr(sampling_params, name) is not None
    }
    return params, logprob_args
