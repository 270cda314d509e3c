"""The only reader of model output: strict, lenient and incremental.

`parse_judgment(text)` reads every output variant seen from Omni-RRM models:
the released schema (score_A, score_B, better, reasoning, final_verdict), the
README variant (`verdict` plus a `criteria` object of strings), `reasoning` as
an object keyed by short criterion names, `score_1` / `score_2`, JSON in a
markdown fence or with text around it, raw newlines inside strings, trailing
commas and output cut off mid-way; and the project's `rubric-v2` format. It
never raises on model output and never invents a verdict: when none can be
read, the judgment has `status.ok == False` and says why.

`parse_partial(text)` reads a stream in progress: which criteria are complete
so far, and the verdict once it has been written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .rubric import DEFAULT_RUBRIC, Rubric
from .schema import (
    KEY_SCORE,
    SCORE_MAX, SCORE_MIN, VERDICT_A, VERDICT_B, VERDICT_TIE, CriterionResult, Grade, Judgment, ParseStatus,
)

# Accepted spellings, compared after lower-casing and dropping non-alphanumerics.
_SCORE_A_KEYS = ("scorea", "score1", "ascore", "overallscorea", "scoreresponsea", "scoreanswera")
_SCORE_B_KEYS = ("scoreb", "score2", "bscore", "overallscoreb", "scoreresponseb", "scoreanswerb")
_BETTER_KEYS = ("better", "verdict", "winner", "preferred", "betteranswer", "betterresponse", "choice")
_FINAL_KEYS = ("finalverdict", "finalanswer", "answer")
_RATIONALE_KEYS = ("rationale", "analysis", "reasoning", "explanation", "comment", "justification", "text")
_CRITERIA_KEYS = ("criteria", "rubric", "dimensions", "criteriaanalysis")
_REASONING_KEYS = ("reasoning", "rationale", "analysis", "explanation")

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?")
_ANSWER_TAG = re.compile(r"\[\[\s*(A|B|equal|tie|same|draw)\s*\]\]|<answer>\s*(A|B|equal|tie)\s*</answer>", re.I)
_PART = re.compile(r"(?:\*\*)?\bPart\s*(\d+)\s*(?:\*\*)?\s*[:.)\-]", re.I)
_THINK = re.compile(r"</?think>", re.I)
_MAX_CANDIDATES = 32  # '{' positions tried before giving up (bounds the work on junk)


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


# ----------------------------------------------------------------------------
# Lenient JSON: one scanner that repairs what models get wrong.
# ----------------------------------------------------------------------------

@dataclass
class _Scan:
    text: str  # repaired JSON text of one top-level object
    end: int  # index in the source just after the object (len(source) when cut off)
    truncated: bool
    open_path: list = field(default_factory=list)  # keys of the containers left open at the cut
    repaired: bool = False


def _scan_object(src: str, start: int) -> _Scan:
    """Scan the JSON object opening at src[start] == '{', repairing as it goes.

    Repairs: raw control characters inside strings are escaped, trailing commas
    dropped; if the source ends first, an open string is closed, a dangling key
    or separator dropped and every open container closed.
    """
    out: list[str] = []
    stack: list[dict] = []  # frames: {"kind": "{" or "[", "key": last key, "want_key": bool}
    in_str = escape = False
    str_is_key = False
    str_start_out = 0
    key_buf: list[str] = []
    repaired = False
    i = start
    n = len(src)
    while i < n:
        ch = src[i]
        if in_str:
            if escape:
                escape = False
                out.append(ch)
                if str_is_key:
                    key_buf.append(ch)
            elif ch == "\\":
                escape = True
                out.append(ch)
            elif ch == '"':
                in_str = False
                out.append(ch)
                if str_is_key:
                    stack[-1]["key"] = "".join(key_buf)
                    stack[-1]["key_at"] = str_start_out  # where a dangling key would be cut from
            elif ch in "\n\r\t":
                out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
                repaired = True
            else:
                out.append(ch)
                if str_is_key:
                    key_buf.append(ch)
            i += 1
            continue
        if ch == "/" and src.startswith(("//", "/*"), i):
            # A comment (models copy them from prompt examples: `// or [[B]]`) is no part of the object.
            end = src.find("\n" if src[i + 1] == "/" else "*/", i + 2)
            i = n if end == -1 else end + (0 if src[i + 1] == "/" else 2)
            repaired = True
            continue
        if ch == '"':
            in_str = True
            str_is_key = bool(stack) and stack[-1]["kind"] == "{" and stack[-1]["want_key"]
            key_buf = []
            str_start_out = len(out)
            out.append(ch)
        elif ch in "{[":
            stack.append({"kind": ch, "key": None, "want_key": ch == "{"})
            out.append(ch)
        elif ch in "}]":
            if not stack:
                break
            _drop_trailing_comma(out)
            stack.pop()
            out.append(ch)
            if not stack:
                return _Scan("".join(out), i + 1, False, [], repaired or _had_trailing_comma(src, start, i))
        elif ch == ":":
            if stack and stack[-1]["kind"] == "{":
                stack[-1]["want_key"] = False
                stack[-1]["key_at"] = None
            out.append(ch)
        elif ch == ",":
            if stack and stack[-1]["kind"] == "{":
                stack[-1]["want_key"] = True
            out.append(ch)
        else:
            out.append(ch)
        i += 1

    # The source ended inside the object: close what is open. A key without its
    # value is dropped; an object waiting for its next key has no open member.
    if in_str and str_is_key:
        del out[str_start_out:]
    elif in_str:
        if escape:
            out.pop()
        out.append('"')
    elif stack[-1]["kind"] == "{" and stack[-1]["want_key"] and stack[-1].get("key_at") is not None:
        del out[stack[-1]["key_at"]:]
    open_path = [None if f["want_key"] else f["key"] for f in stack if f["kind"] == "{"]
    while open_path and open_path[-1] is None:
        open_path.pop()
    text = "".join(out).rstrip()
    text = _fix_dangling(text)
    closers = "".join("}" if f["kind"] == "{" else "]" for f in reversed(stack))
    return _Scan(text + closers, n, True, open_path, True)


def _drop_trailing_comma(out: list[str]) -> None:
    j = len(out) - 1
    while j >= 0 and out[j].isspace():
        j -= 1
    if j >= 0 and out[j] == ",":
        del out[j]


def _had_trailing_comma(src: str, start: int, end: int) -> bool:
    return re.search(r",\s*[}\]]", src[start:end + 1]) is not None


_LITERALS = ("true", "false", "null")


def _fix_dangling(text: str) -> str:
    """Make a JSON prefix end on a complete value (so closing brackets make it valid)."""
    while True:
        stripped = text.rstrip()
        if stripped.endswith(","):
            text = stripped[:-1]
            continue
        if stripped.endswith(":"):
            return stripped + " null"
        m = re.search(r"([A-Za-z0-9.+\-]+)$", stripped)
        if m and not stripped.endswith('"'):
            word = m.group(1)
            head = stripped[: m.start()]
            if word in _LITERALS or re.fullmatch(r"-?\d+(\.\d+)?([eE][+\-]?\d+)?", word):
                return stripped
            if any(lit.startswith(word) for lit in _LITERALS):
                return head + "null"
            digits = re.match(r"-?\d+(\.\d+)?", word)
            return head + (digits.group(0) if digits else "null")
        return stripped


def _find_object(text: str) -> tuple[dict | None, _Scan | None, list[str]]:
    """The first JSON object in `text` that looks like a judgment, with notes on what was off."""
    notes: list[str] = []
    search_from = 0
    fence = _FENCE.search(text)
    if fence:
        notes.append("output wrapped in a markdown fence")
        search_from = fence.end()
    fallback = None
    # Two passes after a fence: from inside it, then from the start (a judgment written before the fence).
    for base in (search_from, 0) if search_from else (0,):
        pos = text.find("{", base)
        tried = 0
        while pos != -1 and tried < _MAX_CANDIDATES:
            tried += 1
            scan = _scan_object(text, pos)
            try:
                obj = json.loads(scan.text)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj:
                recognised = _looks_like_judgment(obj)
                if recognised and not scan.truncated:
                    return obj, scan, notes + _surroundings(text, pos, scan.end, bool(fence))
                if recognised and fallback is None:
                    fallback = (obj, scan, notes + _surroundings(text, pos, scan.end, bool(fence)))
            pos = text.find("{", pos + 1)
        if fallback:
            return fallback
    return None, None, notes


_FIELD = re.compile(r'"((?:[^"\\]|\\.)+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false|null)')


def _fields_one_by_one(text: str) -> tuple[dict | None, _Scan | None]:
    """When no object is valid JSON (a placeholder such as <integer> inside): the plain fields of the last
    object-like span that states a verdict, read one by one. The model's own fields, not loose tags around them."""
    found = None
    pos, tried = text.find("{"), 0
    while pos != -1 and tried < _MAX_CANDIDATES:
        tried += 1
        scan = _scan_object(text, pos)
        fields = {}
        for m in _FIELD.finditer(text, pos, scan.end):
            try:
                fields.setdefault(json.loads(f'"{m.group(1)}"'), json.loads(m.group(2)))
            except json.JSONDecodeError:
                continue
        if _get(fields, _FINAL_KEYS)[0] or _get(fields, _BETTER_KEYS)[0]:
            found = (fields, scan)
        pos = text.find("{", max(pos + 1, scan.end))
    return found or (None, None)


def _surroundings(text: str, start: int, end: int, fenced: bool) -> list[str]:
    if fenced:
        return []
    before, after = text[:start].strip(), text[end:].strip()
    return ["text around the JSON object"] if before or after else []


def _looks_like_judgment(obj: dict) -> bool:
    keys = {_norm(k) for k in obj}
    known = set(_SCORE_A_KEYS + _SCORE_B_KEYS + _BETTER_KEYS + _FINAL_KEYS + _CRITERIA_KEYS + _REASONING_KEYS)
    return bool(keys & (known | {KEY_SCORE}))


def _get(obj: dict, names: tuple[str, ...]):
    for k, v in obj.items():
        if _norm(k) in names:
            return k, v
    return None, None


# ----------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------

def read_verdict(value) -> str | None:
    """A verdict letter from a field value: 'A', '[[B]]', '<answer>[[equal]]</answer>', 'Answer A', 'tie'."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    s = str(value).strip()
    m = _ANSWER_TAG.search(s)
    if m:
        s = m.group(1) or m.group(2)
    low = re.sub(r"[^a-z0-9 ]", " ", s.lower()).strip()
    low = re.sub(r"^(answer|response|option|candidate)\s+", "", low)
    if low in ("a", "1", "first"):
        return VERDICT_A
    if low in ("b", "2", "second"):
        return VERDICT_B
    if low in ("equal", "tie", "same", "draw", "neither", "both", "equally good", "none"):
        return VERDICT_TIE
    return None


def _read_score(value, name: str, errors: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        errors.append(f"{name} is not a number: {value!r}")
        return None
    if isinstance(value, (int, float)):
        score = float(value)
    else:
        m = re.match(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$", str(value))
        if not m:
            errors.append(f"{name} is not a number: {value!r}")
            return None
        score = float(m.group(1))
    if not SCORE_MIN <= score <= SCORE_MAX:
        errors.append(f"{name} {score:g} is outside {SCORE_MIN}-{SCORE_MAX}")
        return None
    return int(score) if score.is_integer() else score


def _winner(score_a, score_b) -> str | None:
    if score_a is None or score_b is None:
        return None
    return VERDICT_A if score_a > score_b else VERDICT_B if score_b > score_a else VERDICT_TIE


# ----------------------------------------------------------------------------
# Criteria
# ----------------------------------------------------------------------------

def split_parts(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> dict[str, str]:
    """Split a rationale ('<think>Part 1: ... Part 5: ...</think>') into {criterion key: text}.

    One `Part k` per criterion (the released convention) gives Part k to criterion k; so does any rationale still
    being written (an open <think>), so that a stream settles part by part. Otherwise (fewer parts than criteria:
    the release's teachers also wrote two parts, four criteria then safety; or no parts at all, on one line or
    under headings) the criteria are found by their wording, in rubric order: each one's passage starts at the
    clause that first names it and runs to the next one's.
    """
    raw = text.replace("\\n", "\n")
    body = _THINK.sub("", raw).strip()
    marks = list(_PART.finditer(body))
    still_open = raw.lstrip().lower().startswith("<think>") and "</think>" not in raw.lower()
    if marks and (still_open or max(int(m.group(1)) for m in marks) >= len(rubric.criteria)):
        found: dict[str, str] = {}
        for m, nxt in zip(marks, marks[1:] + [None]):
            idx = int(m.group(1)) - 1
            if 0 <= idx < len(rubric.criteria):
                # This part's text runs to the next part's mark, or (the last part) to the end.
                chunk = body[m.end(): nxt.start() if nxt else len(body)].strip()
                found.setdefault(rubric.criteria[idx].key, chunk)
        return found
    return _split_by_wording(body, rubric)


_CLAUSE_END = re.compile(r"[.;:!?,](?=\s)|\n|(?:\*\*)?\bPart\s*\d+\s*(?:\*\*)?\s*[:.)\-]", re.I)


def _name_pattern(c) -> re.Pattern:
    names = {n.replace("_", " ") for n in c.names()}
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b", re.I)


def _split_by_wording(body: str, rubric: Rubric) -> dict[str, str]:
    starts: list[tuple[int, str, re.Pattern]] = []  # (clause start, key, the name that marked it)
    after = 0
    for c in rubric.criteria:
        names = _name_pattern(c)
        mention = names.search(body, after) or c.cue_pattern.search(body, after)
        if mention is None:
            continue
        bounds = [m.end() for m in _CLAUSE_END.finditer(body, 0, mention.start())]
        start = max([after, *bounds])
        starts.append((start, c.key, names))
        after = mention.end()
    found = {}
    for (start, key, names), nxt in zip(starts, starts[1:] + [None]):
        chunk = _PART.sub(" ", body[start: nxt[0] if nxt else len(body)]).strip(" \t\n,;")
        heading = re.match(r"[\s*#\-\d.]*(?:" + names.pattern + r")[^\n:]{0,40}?\**\s*:\s*", chunk, re.I)
        found[key] = re.sub(r"\s+", " ", chunk[heading.end():] if heading else chunk).strip()
    return found


def _criteria_from(obj: dict, rubric: Rubric, errors: list[str]) -> tuple[dict[str, CriterionResult], str]:
    """Per-criterion results found in the object, and which variant carried them."""
    out: dict[str, CriterionResult] = {}
    _, crit = _get(obj, _CRITERIA_KEYS)
    variant = ""
    entries: list[tuple[str, object]] = []
    if isinstance(crit, dict):
        entries = list(crit.items())
    elif isinstance(crit, list):
        for item in crit:
            if isinstance(item, dict):
                _, name = _get(item, ("key", "name", "criterion", "title"))
                entries.append((str(name or ""), item))
    if entries:
        variant = "criteria"
        for name, value in entries:
            c = rubric.find(name)
            if c is None:
                errors.append(f"unknown criterion {name!r}")
                continue
            out[c.key] = _criterion_result(c, value, errors)
        return out, variant
    _, reasoning = _get(obj, _REASONING_KEYS)
    if isinstance(reasoning, dict):
        variant = "reasoning-object"
        for name, value in reasoning.items():
            c = rubric.find(name)
            if c is None:
                errors.append(f"unknown criterion {name!r}")
                continue
            out[c.key] = _criterion_result(c, value, errors)
    elif isinstance(reasoning, str):
        variant = "think-parts"
        for key, text in split_parts(reasoning, rubric).items():
            c = rubric.find(key)
            out[key] = CriterionResult(key=key, title=c.title, rationale=text)
    return out, variant


def _criterion_result(c, value, errors: list[str]) -> CriterionResult:
    if isinstance(value, dict):
        _, rationale = _get(value, _RATIONALE_KEYS)
        _, sa = _get(value, _SCORE_A_KEYS)
        _, sb = _get(value, _SCORE_B_KEYS)
        _, single = _get(value, (KEY_SCORE,))
        score_a = _read_score(sa if sa is not None else single, f"{c.key}.score_A", errors)
        score_b = _read_score(sb, f"{c.key}.score_B", errors)
        _, win = _get(value, ("winner", "better", "verdict"))
        winner = read_verdict(win) or _winner(score_a, score_b)
        return CriterionResult(c.key, c.title, str(rationale or "").strip(), score_a, score_b, winner)
    return CriterionResult(c.key, c.title, str(value or "").strip())


def _in_rubric_order(found: dict[str, CriterionResult], rubric: Rubric) -> list[CriterionResult]:
    return [found.get(c.key) or CriterionResult(c.key, c.title) for c in rubric.criteria]


# ----------------------------------------------------------------------------
# Judgments
# ----------------------------------------------------------------------------

def _failure(raw: str, reason: str, rubric: Rubric, fmt: str = "unknown", errors=()) -> Judgment:
    return Judgment(
        verdict=None, score_a=None, score_b=None, criteria=_in_rubric_order({}, rubric), raw=raw,
        status=ParseStatus(ok=False, format=fmt, errors=[*errors, reason], consistent=False),
    )


def parse_judgment(text: str | None, rubric: Rubric = DEFAULT_RUBRIC) -> Judgment:
    """Read a pairwise judgment from model output. Never raises; never guesses a verdict."""
    raw = text if isinstance(text, str) else ""
    try:
        return _parse_judgment(raw, rubric)
    except Exception as e:  # a parser bug must not take a batch down; report it instead
        return _failure(raw, f"parser error: {type(e).__name__}: {e}", rubric)


def _parse_judgment(raw: str, rubric: Rubric) -> Judgment:
    if not raw.strip():
        return _failure(raw, "empty output", rubric)
    obj, scan, errors = _find_object(raw)
    if obj is None:
        obj, scan = _fields_one_by_one(raw)
        if obj is not None:
            errors.append("the JSON object is not valid: its fields were read one by one")
    if obj is None:
        tag = _ANSWER_TAG.findall(raw)
        if tag:
            verdict = read_verdict(tag[-1][0] or tag[-1][1])
            found = split_parts(raw, rubric)
            crit = {k: CriterionResult(k, rubric.find(k).title, v) for k, v in found.items()}
            return Judgment(verdict, None, None, _in_rubric_order(crit, rubric), raw,
                            ParseStatus(True, "answer-tag", ["no JSON object; verdict read from the answer tag"]))
        return _failure(raw, "no JSON judgment found in the output", rubric)
    if scan.truncated:
        errors.append("output is truncated")
    score_a = _read_score(_get(obj, _SCORE_A_KEYS)[1], "score_A", errors)
    score_b = _read_score(_get(obj, _SCORE_B_KEYS)[1], "score_B", errors)
    found, variant = _criteria_from(obj, rubric, errors)

    final_key, final = _get(obj, _FINAL_KEYS)
    better_key, better = _get(obj, _BETTER_KEYS)
    v_final, v_better = read_verdict(final), read_verdict(better)
    consistent = True
    if final_key and v_final is None and final not in (None, ""):
        errors.append(f"{final_key} is not a verdict: {str(final)[:40]!r}")
    if better_key and v_better is None and better not in (None, ""):
        errors.append(f"{better_key} is not a verdict: {str(better)[:40]!r}")
    if v_final and v_better and v_final != v_better:
        errors.append(f"{final_key} says {v_final} but {better_key} says {v_better}")
        consistent = False
    verdict = v_final or v_better
    if verdict is None:
        tag = _ANSWER_TAG.findall(raw[scan.end:]) if not scan.truncated else []
        if tag:
            verdict = read_verdict(tag[-1][0] or tag[-1][1])
            errors.append("verdict read from an answer tag outside the JSON")
    by_scores = _winner(score_a, score_b)
    if verdict and by_scores and verdict != by_scores:
        errors.append(f"verdict {verdict} disagrees with the scores ({score_a:g} vs {score_b:g})")
        consistent = False
    missing = [c.key for c in rubric.criteria if c.key not in found or not found[c.key].rationale]
    if missing:
        errors.append(f"rationale missing for {', '.join(missing)}")

    fmt = _format_name(obj, variant)
    if verdict is None:
        reason = "output ends before the verdict" if scan.truncated else "no verdict in the output"
        return Judgment(None, score_a, score_b, _in_rubric_order(found, rubric), raw,
                        ParseStatus(False, fmt, [*errors, reason], False))
    return Judgment(verdict, score_a, score_b, _in_rubric_order(found, rubric), raw,
                    ParseStatus(True, fmt, errors, consistent))


def _format_name(obj: dict, variant: str) -> str:
    keys = {_norm(k) for k in obj}
    if variant == "criteria" and "verdict" in keys and any(isinstance(v, dict) for v in _criteria_values(obj)):
        return "rubric-v2"
    if variant == "criteria":
        return "omni-rrm-readme"
    if variant == "reasoning-object":
        return "omni-rrm-reasoning-object"
    if "score1" in keys or "score2" in keys:
        return "omni-rrm-numbered"
    return "omni-rrm"


def _criteria_values(obj: dict) -> list:
    _, crit = _get(obj, _CRITERIA_KEYS)
    return list(crit.values()) if isinstance(crit, dict) else list(crit or [])


# ----------------------------------------------------------------------------
# Streams
# ----------------------------------------------------------------------------

@dataclass
class PartialJudgment:
    """What a stream in progress has settled so far."""

    criteria: list[CriterionResult]  # complete criteria, in rubric order
    pending: list[str]  # keys of the criteria not complete yet
    verdict: str | None = None
    score_a: float | None = None
    score_b: float | None = None


def parse_partial(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> PartialJudgment:
    """Criteria complete so far, and the verdict once written. Never raises."""
    try:
        return _parse_partial(text or "", rubric)
    except Exception:
        return PartialJudgment([], rubric.keys)


def _parse_partial(text: str, rubric: Rubric) -> PartialJudgment:
    start = text.find("{")
    if start == -1:
        return PartialJudgment([], rubric.keys)
    scan = _scan_object(text, start)
    try:
        obj = json.loads(scan.text)
    except json.JSONDecodeError:
        return PartialJudgment([], rubric.keys)
    open_path = scan.open_path if scan.truncated else []
    open_top = open_path[0] if open_path else None
    errors: list[str] = []
    found, variant = _criteria_from(obj, rubric, errors)
    done: dict[str, CriterionResult] = {}
    if variant == "think-parts":
        order = [c.key for c in rubric.criteria if c.key in found]
        still_open = open_top is not None and _norm(open_top) in _REASONING_KEYS and not _closed_think(obj)
        for key in order[:-1] if still_open and order else order:
            done[key] = found[key]
    else:
        open_crit = rubric.find(open_path[1]) if len(open_path) > 1 and open_path[1] else None
        for key, result in found.items():
            if not (open_crit and open_crit.key == key):
                done[key] = result
    def settled(names):
        key, value = _get(obj, names)
        return None if key is None or (open_top is not None and _norm(open_top) == _norm(key)) else value

    verdict = read_verdict(settled(_FINAL_KEYS)) or read_verdict(settled(_BETTER_KEYS))
    return PartialJudgment(
        criteria=[done[c.key] for c in rubric.criteria if c.key in done],
        pending=[c.key for c in rubric.criteria if c.key not in done],
        verdict=verdict,
        score_a=_read_score(settled(_SCORE_A_KEYS), "score_A", errors),
        score_b=_read_score(settled(_SCORE_B_KEYS), "score_B", errors),
    )


def _closed_think(obj: dict) -> bool:
    _, reasoning = _get(obj, _REASONING_KEYS)
    return isinstance(reasoning, str) and "</think>" in reasoning


# ----------------------------------------------------------------------------
# Pointwise grades
# ----------------------------------------------------------------------------

def parse_grade(text: str | None, rubric: Rubric = DEFAULT_RUBRIC) -> Grade:
    """Read a pointwise grade ({"criteria": {...: {rationale, score}}, "score": n}). Never raises."""
    raw = text if isinstance(text, str) else ""
    try:
        if not raw.strip():
            raise _NoGrade("empty output")
        obj, scan, errors = _find_object(raw)
        if obj is None:
            raise _NoGrade("no JSON grade found in the output")
        if scan.truncated:
            errors.append("output is truncated")
        found, _ = _criteria_from(obj, rubric, errors)
        score = _read_score(_get(obj, (KEY_SCORE, "overallscore", "overall"))[1], "score", errors)
        ok = score is not None
        if not ok:
            errors.append("no overall score in the output")
        return Grade(score, _in_rubric_order(found, rubric), raw, ParseStatus(ok, "grade", errors, ok))
    except _NoGrade as e:
        return Grade(None, _in_rubric_order({}, rubric), raw, ParseStatus(False, "grade", [str(e)], False))
    except Exception as e:
        return Grade(None, _in_rubric_order({}, rubric), raw,
                     ParseStatus(False, "grade", [f"parser error: {type(e).__name__}: {e}"], False))


class _NoGrade(Exception):
    pass


__all__ = ["parse_judgment", "parse_partial", "parse_grade", "split_parts", "read_verdict", "PartialJudgment"]
