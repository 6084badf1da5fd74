"""The typed endpoint API: a path, the Structs clients send, a handler; the kit does the rest.

::

    class Add(msgspec.Struct, tag="add"):
        a: float
        b: float

    class Sum(msgspec.Struct, tag="sum"):
        value: float

    @endpoint("/ws/calc")
    def calc(session: Session, message: Add) -> Sum:
        return Sum(value=message.a + message.b)

What the client may send is the handler's second parameter's type (or ``receives=``): one
tagged Struct or a union of them, tagged on ``type``. What the server sends is its return type
(or ``sends=``). Every endpoint, the kit's own included (:mod:`service.endpoints`), gets the
same session: heartbeats, the ping and send timeouts, the size and rate limits, the close
codes, the ``WS_DIAGNOSTICS`` lines and the ``/metrics`` series labelled with its path. The
kit answers what the handler never sees:

* ``{"type": "pong"}`` acknowledges a heartbeat on every endpoint: counted, and it opts the
  client in to the ping timeout;
* text that is not JSON gets an ``invalid_json`` error reply; JSON that is not one of the
  declared messages gets ``unknown_type`` (naming the types the path accepts) or
  ``invalid_message`` (what msgspec found wrong, and where); the connection stays open;
* binary frames close with 1003, oversize messages with 1009, floods with 1008;
* a handler that raises closes its connection with 1011 and logs the traceback.

A handler may be a plain function (the kit's are: no coroutine per message) or a coroutine
function; it returns one reply or None, and may push more with ``await session.send(...)``.
An endpoint that answers every ``type`` (an echo) receives :class:`~service.messages.Envelope`:
any JSON object with a string ``type``; pongs then reach its handler too, counted first.
"""

from __future__ import annotations

import inspect
import time
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union

import msgspec

from service.messages import Envelope, Error, ErrorCode, Pong

if TYPE_CHECKING:
    from service.session import Session

In = TypeVar("In")
Reply = msgspec.Struct | None
Handler = Callable[["Session", In], Reply | Awaitable[Reply]]
Greeting = Callable[["Session"], msgspec.Struct | None]
Heartbeat = Literal["idle", "periodic"]

_pong = msgspec.json.Decoder(Pong)


def error(session: Session, code: ErrorCode, detail: str) -> Error:
    """The kit's ``error`` reply."""
    return Error(error=code, detail=detail, timestamp=time.time(), client_id=session.client_id)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``A | B``, ``Union[A, B]``, ``Optional``), else it."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _tag(struct: type[msgspec.Struct]) -> str | None:
    info = msgspec.inspect.type_info(struct)
    tag = getattr(info, "tag", None)
    return tag if isinstance(tag, str) and getattr(info, "tag_field", None) == "type" else None


def _hint(function: Callable[..., Any], name: str) -> Any:
    """One annotation of ``function``, evaluated in its module (postponed annotations are
    strings); None when absent. Only this one: the session's may be a TYPE_CHECKING import."""
    annotation = function.__annotations__.get(name)
    if isinstance(annotation, str):
        try:
            return eval(annotation, function.__globals__)  # noqa: S307 - the user's own annotation
        except NameError as exc:
            raise TypeError(f"cannot resolve {name!r} of {function.__qualname__}: {exc}; pass "
                            f"{'sends' if name == 'return' else 'receives'}= instead") from None
    return annotation


def _phrase(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class Endpoint(Generic[In]):
    """One WebSocket path and what runs on it; built by :func:`endpoint`."""

    __slots__ = ("_accepts", "_decoder", "_greeting", "_handler", "_sends", "_sent_classes",
                 "_typed", "client_prefix", "is_async", "path", "periodic_heartbeat")

    def __init__(
        self, path: str, handler: Handler[In], *, receives: Any, sends: Any = None,
        greeting: Greeting | None = None, heartbeat: Heartbeat = "idle",
        client_prefix: str | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"endpoint path {path!r} must start with /")
        if heartbeat not in ("idle", "periodic"):
            raise ValueError(f"{path}: heartbeat must be 'idle' or 'periodic', not {heartbeat!r}")
        self.path = path
        last = path.rstrip("/").rsplit("/", 1)[-1]
        self.client_prefix = client_prefix or f"{last or 'ws'}_client"
        self.periodic_heartbeat = heartbeat == "periodic"
        self.is_async = inspect.iscoroutinefunction(handler)
        self._handler = handler
        self._greeting = greeting
        self._typed = receives is not Envelope
        structs = _members(receives)
        if self._typed:
            tags = []
            for struct in structs:
                tag = _tag(struct) if isinstance(struct, type) and issubclass(
                    struct, msgspec.Struct) else None
                if tag is None:
                    raise TypeError(
                        f"{path}: what clients send must be msgspec Structs tagged on 'type' "
                        f"(class M(msgspec.Struct, tag='m')), or Envelope for any type; got "
                        f"{getattr(struct, '__name__', struct)!r}")
                if tag == "pong" and struct is not Pong:
                    raise TypeError(f"{path}: the 'pong' type is the kit's heartbeat answer")
                tags.append(tag)
            if Pong not in structs:
                structs = (*structs, Pong)
                tags.append("pong")
            self._accepts = _phrase(tags)
        try:
            self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
                Union[structs] if len(structs) > 1 else structs[0])  # noqa: UP007 - a runtime union
        except TypeError as exc:
            raise TypeError(f"{path}: {exc}") from None
        sent = tuple(s for s in _members(sends) if s is not type(None)) if sends else ()
        for struct in sent:
            if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
                raise TypeError(f"{path}: what the server sends must be msgspec Structs, got "
                                f"{getattr(struct, '__name__', struct)!r}")
        self._sends = (*sent, Error) if sent else ()
        # What _checked lets through without an isinstance (which costs more than the rest of
        # the check): None and the declared classes themselves.
        self._sent_classes = frozenset((type(None), *self._sends))

    def greeting(self, session: Session) -> msgspec.Struct | None:
        return self._greeting(session) if self._greeting is not None else None

    def _decode(self, session: Session, text: str) -> Any:
        """The client's message, or the error reply; a pong is counted here."""
        try:
            message = self._decoder.decode(text)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
            return self._invalid(session, exc)
        except msgspec.DecodeError as exc:
            return error(session, "invalid_json", str(exc))
        except RecursionError:  # msgspec's decoder recurses: ~1,000 nested arrays fit in 4 KiB
            return error(session, "invalid_json", "JSON nested too deeply")
        if self._typed:
            if message.__class__ is Pong:
                session.record_pong()
                return None
        elif message.type == "pong":  # an echo: pongs are validated, counted, and echoed
            try:
                _pong.decode(text)
            except msgspec.ValidationError as exc:
                return self._invalid(session, exc)
            except RecursionError:
                return error(session, "invalid_json", "JSON nested too deeply")
            session.record_pong()
        return message

    def _invalid(self, session: Session, exc: msgspec.ValidationError) -> Error:
        detail = str(exc)
        if self._typed and detail.startswith("Invalid value") and detail.endswith("at `$.type`"):
            return error(session, "unknown_type", f"{detail}: {self.path} accepts {self._accepts}")
        if " - at `$." not in detail or detail.endswith("`$.type`"):  # the envelope itself
            detail = f'a message must be a JSON object with a string "type" ({detail})'
        return error(session, "invalid_message", detail)

    def _checked(self, reply: Any) -> Reply:
        # (No typing.cast on this path: it is a function call per message.)
        if reply.__class__ in self._sent_classes:
            return reply  # type: ignore[no-any-return]
        if isinstance(reply, msgspec.Struct) and (not self._sends
                                                  or isinstance(reply, self._sends)):
            return reply
        raise TypeError(f"{self.path}'s handler returned a {type(reply).__name__}, "
                        f"not one of the types it declares it sends")

    def handle(self, session: Session, text: str) -> Reply:
        """A plain handler's answer to one text message (the session knows which kind)."""
        message = self._decode(session, text)
        if message is None or message.__class__ is Error:
            return message
        reply: Any = self._handler(session, message)
        return reply if reply.__class__ in self._sent_classes else self._checked(reply)

    async def handle_async(self, session: Session, text: str) -> Reply:
        """A coroutine handler's answer to one text message."""
        message = self._decode(session, text)
        if message is None or message.__class__ is Error:
            return message
        reply: Any = self._handler(session, message)
        return self._checked(await reply)


def endpoint(
    path: str, *, receives: Any = None, sends: Any = None, greeting: Greeting | None = None,
    heartbeat: Heartbeat = "idle", client_prefix: str | None = None,
) -> Callable[[Handler[In]], Endpoint[In]]:
    """Declare a WebSocket endpoint; pass the result to :class:`~service.plugin.WsKit`.

    ``receives`` and ``sends`` default to the handler's annotations. ``heartbeat``: ``idle``
    sends one only after an interval with nothing sent (``/ws``, ``/ws/echo``), ``periodic``
    one every interval (``/ws/health``). ``greeting`` builds the first message, if any.
    ``client_prefix`` starts every client id (default: the path's last part, ``calc_client``).
    """

    def declare(handler: Handler[In]) -> Endpoint[In]:
        inbound, outbound = receives, sends
        names = list(inspect.signature(handler).parameters)
        if inbound is None:
            inbound = _hint(handler, names[1]) if len(names) >= 2 else None
            if inbound is None:
                raise TypeError(f"{path}: annotate the handler's message parameter with what "
                                f"clients send, or pass receives=")
        if outbound is None:
            outbound = _hint(handler, "return")
        return Endpoint(path, handler, receives=inbound, sends=outbound, greeting=greeting,
                        heartbeat=heartbeat, client_prefix=client_prefix)

    return declare
