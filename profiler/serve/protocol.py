"""The OpenAI request and answer shapes `gpumix serve` speaks, and how prompts become tokens.

Requests are pydantic models in strict mode: a field of the wrong type (`"stream": "no"`,
`"max_tokens": "5"`) is a 400, never coerced; unknown fields are ignored, as OpenAI's own server
ignores them. Options the runtime does not model are refused with a 400 naming the field (n > 1,
best_of, logprobs, echo, stop sequences, tools), never silently dropped; sampling parameters
(temperature, top_p, seed, penalties) are accepted and do not change anything: decoding is greedy.

Tokens (weights are random, so there is no real tokenizer):
  completions  a string prompt is one token per whitespace-separated word (crc32 of the word mod
               the vocabulary; an empty prompt is the one token 0); a list of ids is used as is
  chat         the messages become the text "<|role|> content" for each message in order, then
               "<|assistant|>", tokenized as above: each message costs 1 + its words, the
               generation prompt 1 more. Content may be a string or a list of {"type": "text"}
               parts (joined by spaces).
Generated token t is the text " t<id>"; a request always produces exactly max_tokens tokens
(there is no EOS). Chat's default max_tokens is what the context has left (as vLLM's).
"""
from __future__ import annotations

import time
import zlib
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

MAX_BODY = 8 << 20  # bytes of a request body


class ApiError(Exception):
    """An OpenAI-shaped error answer: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def doc(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: StrictBool = False


class _Common(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: Optional[StrictStr] = None
    max_tokens: Optional[StrictInt] = Field(None, ge=1)
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    n: StrictInt = Field(1, ge=1, le=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    seed: Optional[StrictInt] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    user: Optional[StrictStr] = None
    stop: Union[StrictStr, list[StrictStr], None] = None
    logprobs: Union[StrictBool, StrictInt, None] = None
    # vLLM/SGLang extensions load generators send: every request runs to max_tokens anyway
    min_tokens: StrictInt = Field(0, ge=0)
    ignore_eos: StrictBool = False


class CompletionRequest(_Common):
    prompt: Union[StrictStr, list[StrictInt]]
    echo: StrictBool = False
    best_of: Optional[StrictInt] = Field(None, ge=1, le=1)


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, list[TextPart], None] = None
    name: Optional[StrictStr] = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    tools: Optional[list] = None


# names pydantic puts in an error's location for the member of a union that failed
_UNION_TAGS = {"str", "int", "bool", "float", "list[int]", "list[str]", "list[TextPart]", "StreamOptions"}


def parse(cls: type[_Common], doc) -> _Common:
    """The request model, or ApiError 400 naming the first bad field."""
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        req = cls.model_validate(doc)
    except ValidationError as e:
        err = e.errors(include_url=False, include_context=False)[0]
        where = ".".join(str(p) for p in err["loc"] if isinstance(p, int) or p not in _UNION_TAGS) or None
        msg = err["msg"]
        if where == "prompt" and err["type"] != "missing":
            msg = "must be a string or a non-empty list of token ids"
        raise ApiError(400, f"{where}: {msg}" if where else msg, where) from None
    _refuse_unmodelled(req)
    return req


def _refuse_unmodelled(req: _Common) -> None:
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", "stream_options")
    if req.stop:
        raise ApiError(400, "stop sequences are not supported: the runtime's weights are random and "
                            "every request runs to max_tokens", "stop")
    if req.logprobs:
        raise ApiError(400, "logprobs are not supported", "logprobs")
    if isinstance(req, CompletionRequest) and req.echo:
        raise ApiError(400, "echo is not supported", "echo")
    if isinstance(req, ChatRequest) and req.tools:
        raise ApiError(400, "tools are not supported", "tools")


def tokenize(prompt, vocab: int) -> list[int]:
    """A completion prompt's tokens: one per whitespace-separated word, or the ids given."""
    if isinstance(prompt, str):
        return [zlib.crc32(w.encode()) % vocab for w in prompt.split()] or [0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                   for t in prompt):
        return [t % vocab for t in prompt]
    raise ValueError("prompt must be a string or a non-empty list of token ids")


def chat_text(messages: list[Message]) -> str:
    """The documented chat template: "<|role|> content" per message, then "<|assistant|>"."""
    parts = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else " ".join(p.text for p in m.content or [])
        parts.append(f"<|{m.role}|> {content}")
    parts.append("<|assistant|>")
    return " ".join(parts)


def prompt_tokens(req: _Common, vocab: int) -> list[int]:
    if isinstance(req, ChatRequest):
        return tokenize(chat_text(req.messages), vocab)
    try:
        return tokenize(req.prompt, vocab)
    except ValueError as e:
        raise ApiError(400, str(e), "prompt") from None


def wanted_tokens(req: _Common, n_prompt: int, max_seq: int) -> int:
    """max_tokens (chat: max_completion_tokens, else what the context has left), checked against it."""
    n = req.max_tokens
    if isinstance(req, ChatRequest):
        n = req.max_completion_tokens or n or max(1, max_seq - n_prompt)
    n = n or 16
    if n_prompt + n > max_seq:
        raise ApiError(400, f"{n_prompt} prompt + {n} new tokens exceed the {max_seq}-token context",
                       "max_tokens", "context_length_exceeded")
    return n


# --- answers --------------------------------------------------------------------------------------

def token_text(tok: int) -> str:
    return f" t{tok}"


class Shape:
    """The answer documents of one request: completion or chat, with its id and model."""

    def __init__(self, chat: bool, rid: str, model: str):
        self.chat, self.rid, self.model, self.created = chat, rid, model, int(time.time())
        self.object = "chat.completion.chunk" if chat else "text_completion"
        import json

        head = json.dumps({"id": rid, "object": self.object, "created": self.created, "model": model})[:-1]
        # the per-token chunk as a template: tokens are " t<id>", nothing to escape
        if chat:
            self._piece = head + ', "choices": [{"index": 0, "delta": {"content": "%s"}, "logprobs": null, ' \
                                 '"finish_reason": null}]}'
        else:
            self._piece = head + ', "choices": [{"index": 0, "text": "%s", "logprobs": null, ' \
                                 '"finish_reason": null}]}'

    def piece(self, text: str) -> str:
        return self._piece % text

    def _base(self) -> dict:
        return {"id": self.rid, "object": self.object, "created": self.created, "model": self.model}

    def first(self) -> dict | None:
        """Chat streams open with the assistant role (OpenAI's first chunk); completions do not."""
        if not self.chat:
            return None
        return {**self._base(), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}]}

    def finish(self, reason: str = "length") -> dict:
        choice = {"index": 0, "delta": {}} if self.chat else {"index": 0, "text": ""}
        return {**self._base(), "choices": [{**choice, "logprobs": None, "finish_reason": reason}]}

    def usage_chunk(self, usage: dict) -> dict:
        return {**self._base(), "choices": [], "usage": usage}

    def whole(self, text: str, usage: dict, reason: str = "length") -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            obj = "chat.completion"
        else:
            choice, obj = {"index": 0, "text": text}, "text_completion"
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model,
                "choices": [{**choice, "logprobs": None, "finish_reason": reason}], "usage": usage}
