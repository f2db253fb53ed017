"""The one reader of every file gpumix plans from: bounded reads, safe parsing, bounded values.

Each reader (workload, config.json, throughput table, plan, SkyPilot CSV, efficiency file) goes
through here, so a bad file fails the same way everywhere: InputError(file, field, message), one
line, exit 2, before anything is written. The limits (docs/formats.md, "Limits") are:

  size      at most LIMITS[kind] bytes are read (limit + 1 to tell); only regular files, so a FIFO
            or /dev/zero is refused instead of hanging or filling memory
  text      UTF-8 (a UTF-8 BOM is dropped); UTF-16/32 and other bytes get a clear error
  JSON      nesting at most MAX_DEPTH deep; integers at most MAX_INT_DIGITS digits; NaN, Infinity
            and numbers beyond float range refused
  YAML      safe_load semantics; the document, aliases expanded, at most MAX_NODES nodes and
            MAX_DEPTH deep (an alias bomb fails on its size, before anything walks it)
  values    BOUNDS: every number finite and inside its documented range
  names     model and GPU names: 1..MAX_NAME characters, no control characters (no newlines), not
            starting with `-`
  messages  an offending value is quoted with at most QUOTE characters (quote())
"""
from __future__ import annotations

import json
import math
import os
import stat
import re
import unicodedata
from pathlib import Path

import yaml

from gpumix.planner.errors import InputError

MiB = 1024 * 1024
# kind -> most bytes a file of that kind may hold
LIMITS: dict[str, int] = {
    "workload": 16 * MiB, "config": 4 * MiB, "profiles": 64 * MiB, "plan": 64 * MiB,
    "catalog": 64 * MiB, "efficiency": 4 * MiB, "file": 64 * MiB,
}
MAX_DEPTH = 64
MAX_NODES = 2_000_000  # YAML nodes after alias expansion
MAX_INT_DIGITS = 30
MAX_NAME = 200
QUOTE = 100

# field -> (lowest, highest) accepted value, both inclusive
BOUNDS: dict[str, tuple[float, float]] = {
    "rate_rps": (1e-3, 1e6),  # requests/s of one model (below 1e-3 the checker's tolerance would accept no replicas)
    "tokens": (1, 10_000_000),  # input_tokens, output_tokens of a bucket or entry
    "tp": (1, 1024),  # tensor-parallel degree
    "available": (0, 1_000_000),  # GPUs of a type, instances of a shape
    "gpus": (1, 1024),  # GPUs of an instance shape
    "price_per_hour": (1e-6, 1e5),  # $/h of a GPU or an instance
    "max_rps": (1e-6, 1e7),  # throughput of one replica (0 also allowed: cannot serve)
    "slo_ms": (1e-3, 1e8),  # ttft_ms, tpot_ms
    "share": (1e-6, 1.0),  # a bucket's share of a model's requests
}


def quote(value, limit: int = QUOTE) -> str:
    """repr(value), cut to `limit` characters with an ellipsis: error messages never carry a whole
    megabyte of bad input. Large containers are not repr'd in full first."""
    if isinstance(value, (dict, list, tuple)) and len(value) > limit:
        value = type(value).__name__ + f" of {len(value)} items"
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[:4 * limit]
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_bytes(path: Path | str, kind: str = "file", field: str = "") -> bytes:
    """At most LIMITS[kind] bytes of a regular file; InputError naming `field` otherwise."""
    path, limit = Path(path), LIMITS[kind]
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(str(path), field, "file not found") from None
    except OSError as e:
        raise InputError(str(path), field, f"cannot read: {e.strerror or e}") from None
    except ValueError as e:  # an embedded NUL byte in the path
        raise InputError(quote(str(path)), field, f"cannot read: {e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(str(path), field, "not a regular file (a directory, device or pipe)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 * MiB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise InputError(str(path), field, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise InputError(str(path), field, f"larger than the {limit // MiB} MiB a {kind} file may be")
    return b"".join(chunks)


def decode(data: bytes, path: Path | str, field: str = "") -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) >= 2 and (data[0] == 0) != (data[1] == 0)):
        raise InputError(str(path), field, "looks like UTF-16 or UTF-32; save the file as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(str(path), field, f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def read_text(path: Path | str, kind: str = "file", field: str = "") -> str:
    return decode(read_bytes(path, kind, field), path, field)


# -- JSON ------------------------------------------------------------------------------------------

class _Refused(ValueError):
    pass


class _LongInt:
    """Stands in for an integer literal too long to convert; _check_tree reports it with its field."""

    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(text: str):
    digits = len(text.lstrip("-"))
    return _LongInt(digits) if digits > MAX_INT_DIGITS else int(text)


def parse_json(text: str, path: Path | str, field: str = ""):
    """NaN, Infinity and 1e400 parse (to floats) so that _check_tree can name their field."""
    try:
        doc = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        where = f"{field} line {e.lineno} column {e.colno}".strip()
        raise InputError(str(path), where, f"malformed JSON: {e.msg}") from None
    except RecursionError:
        raise InputError(str(path), field, f"nested deeper than {MAX_DEPTH} levels") from None
    _check_tree(doc, path, field)
    return doc


def _field(parts: tuple) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")
_NO_KEY = object()


def _check_tree(doc, path, field: str) -> None:
    """Depth, value count and the numbers of a parsed document, without recursion; errors name the
    field (`models[0].rate_rps`)."""
    stack, nodes = [(doc, ())], 0
    while stack:
        v, at = stack.pop()
        nodes += 1
        if len(at) >= MAX_DEPTH:
            raise InputError(str(path), field, f"nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise InputError(str(path), field, f"more than {MAX_NODES:,} values")
        if isinstance(v, dict):
            bad = next((k for k in v if not isinstance(k, str)), _NO_KEY)
            if bad is not _NO_KEY:  # YAML `~: 1`, `1: 2`, `yes: 3`: every key gpumix reads is text
                raise InputError(str(path), _field(at) or field or "<root>",
                                 f"a key that is not text: {quote(bad)} (quote it, or remove it)")
            stack.extend((x, (*at, k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, (*at, i)) for i, x in enumerate(v))
        elif isinstance(v, str) and _SURROGATE.search(v):  # JSON's "\ud800": not text any output can hold
            raise InputError(str(path), _field(at) or field, "holds a lone UTF-16 surrogate (\\ud800-\\udfff): "
                             "not valid Unicode")
        elif isinstance(v, float) and not math.isfinite(v):
            raise InputError(str(path), _field(at) or field, f"must be a finite number (an integer or a decimal), got {quote(v)}")
        elif isinstance(v, _LongInt):
            raise InputError(str(path), _field(at) or field,
                             f"an integer of {v.digits} digits (at most {MAX_INT_DIGITS})")
        elif isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 3.33 * MAX_INT_DIGITS:
            raise InputError(str(path), _field(at) or field, f"an integer of more than {MAX_INT_DIGITS} digits")


def read_json(path: Path | str, kind: str = "file", field: str = ""):
    return parse_json(read_text(path, kind, field), path, field)


# -- YAML ------------------------------------------------------------------------------------------

class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures the composed document, aliases expanded, before constructing it."""

    def compose_document(self):
        node = super().compose_document()
        _node_size(node)
        return node


def _node_size(root) -> None:
    """Expanded size and depth of a node graph, memoised per node (linear in distinct nodes)."""
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        kids = ([v for kv in node.value for v in kv] if isinstance(node, yaml.MappingNode)
                else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        n = 1 + sum(size[id(k)][0] for k in kids if id(k) in size)
        d = 1 + max((size[id(k)][1] for k in kids if id(k) in size), default=0)
        if n > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)")
        if d > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        size[id(node)] = (n, d)


def parse_yaml(text: str, path: Path | str, field: str = ""):
    try:
        doc = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as e:
        raise InputError(str(path), field, f"refused YAML: {e}") from None
    except RecursionError:
        raise InputError(str(path), field, f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else field
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(str(path), where, f"malformed YAML: {quote(problem, QUOTE)}") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. int() of a 5,000-digit scalar
        raise InputError(str(path), field, f"refused YAML value: {quote(str(e))}") from None
    _check_tree(doc, path, field)
    return doc


def read_structured(path: Path | str, kind: str = "file", field: str = ""):
    """A JSON (by the .json suffix) or YAML file, bounded as the module docstring says."""
    text = read_text(path, kind, field)
    if Path(path).suffix.lower() == ".json":
        return parse_json(text, path, field)
    return parse_yaml(text, path, field)


# -- values ----------------------------------------------------------------------------------------

def in_bounds(value: float, bound: str) -> bool:
    lo, hi = BOUNDS[bound]
    return lo <= value <= hi


def bounds_text(bound: str) -> str:
    lo, hi = BOUNDS[bound]
    return f"[{lo:g}, {hi:g}]"


def name_problem(value) -> str | None:
    """Why `value` is not an acceptable model or GPU name, or None when it is."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if len(value) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if value.strip().startswith("-"):  # the export refuses it too: `vllm serve` would read it as an option
        return "starts with '-' (it would read as an option of `vllm serve`)"
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        return f"contains the control character {bad!r} (names may not hold control characters or newlines)"
    return None


def exists(path) -> bool:
    """Path(path).exists() that answers False, not an exception, for a name the OS refuses (too
    long, a NUL, a loop): the caller then reports the path as not found, in one line."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False
