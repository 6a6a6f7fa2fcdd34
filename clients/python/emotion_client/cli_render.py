"""The CLI's human-readable tables, from the API's JSON answers (plain dicts, as the server sent them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; short rows (an error message) are padded."""
    body = [["-" if c is None else str(c) for c in row] for row in rows]
    cells = [[str(c) for c in headers], *(row + [""] * (len(headers) - len(row)) for row in body)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.2f}"


def _top(emotions: dict[str, float], n: int = 3) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(emotions.items(), key=lambda kv: -kv[1])[:n])


def _affect(p: dict) -> list[Any]:
    return [p["dominant"], f"{p['emotions'][p['dominant']]:.2f}", _signed(p.get("valence")), _signed(p.get("arousal"))]


AFFECT = ["DOMINANT", "P", "VALENCE", "AROUSAL"]


def render_image(answers: Sequence[tuple[str, dict]]) -> str:
    """One row per face found in each photo, largest first; a photo without faces or refused gets one row."""
    rows = []
    for path, answer in answers:
        if "faces" not in answer:
            rows.append([path, *[None] * 7, f"error: {answer.get('detail')}"])  # in the last, unaligned column
            continue
        size = f"{answer['width']}x{answer['height']}"
        if not answer["faces"]:
            rows.append([path, size, *[None] * 6, "no face found"])
        for i, face in enumerate(answer["faces"], 1):
            box = face["box"]
            where = f"{box['x']},{box['y']} {box['width']}x{box['height']}"
            rows.append([path, size, i, where, *_affect(face), _top(face["emotions"])])
    return table(["FILE", "SIZE", "FACE", "BOX", *AFFECT, "TOP 3"], rows)


def render_face(answers: Sequence[tuple[str, dict]]) -> str:
    rows = []
    for path, a in answers:
        refused = [None] * 4 + [f"error: {a.get('detail')}"]
        rows.append([path, *_affect(a), _top(a["emotions"])] if "emotions" in a else [path, *refused])
    return table(["FILE", *AFFECT, "TOP 3"], rows)


def render_video(name: str, answer: dict) -> str:
    model = answer["model"]
    head = (
        f"{name}: {answer['duration_s']:.1f} s, {answer['width']}x{answer['height']}, "
        f"{answer['frames_analyzed']} frames analysed at {answer['sample_fps']:g} fps, "
        f"{len(answer['tracks'])} face track(s), model {model['name']} {model['version']}"
    )
    rows = [
        [t["track_id"], f"{t['first_seen']:.1f}", f"{t['last_seen']:.1f}", *_summary_cells(t["summary"]),
         len(t["segments"])]
        for t in answer["tracks"]
    ]  # fmt: skip
    lines = [head]
    if rows:
        lines.append(table(["TRACK", "FROM S", "TO S", "DOMINANT", "SHARE", "VALENCE", "AROUSAL", "SEGMENTS"], rows))
    if answer.get("summary"):
        lines.append(f"whole clip: {_top(answer['summary']['emotions'])}")
    lines += [f"warning: {warning}" for warning in answer.get("warnings", [])]
    return "\n".join(lines)


def render_models(answer: dict) -> str:
    rows = []
    for m in answer["models"]:
        accuracy = (m.get("metrics") or {}).get("val", {}).get("accuracy")
        state = m["state"] + (f" ({m['error']})" if m.get("error") else "")
        acc = None if accuracy is None else f"{accuracy:.3f}"
        rows.append([m["name"], m["version"], "*" if m["default"] else "", m["task"], state, len(m["labels"]), acc])
    return table(["NAME", "VERSION", "DEFAULT", "TASK", "STATE", "LABELS", "VAL ACCURACY"], rows)


def render_health(answer: dict) -> str:
    model = answer.get("model")
    parts = [answer["status"], f"{model['name']} {model['version']}" if model else "", answer.get("detail") or ""]
    return "  ".join(p for p in parts if p)


def _face_cells(face: dict) -> list[Any]:
    return [face["track_id"], *_affect(face), _top(face["emotions"])]


def render_stream_live(result: dict, dropped: int) -> str:
    """The live table of one result, redrawn in place: one row per face, the frame's figures above."""
    head = (
        f"frame {result['seq']}  t {result['t']:.2f} s  {result['width']}x{result['height']}  "
        f"server {result['server_ms']:.1f} ms  skipped {result['skipped']} (dropped so far {dropped})  "
        f"{len(result['faces'])} face(s)"
    )
    rows = [_face_cells(face) for face in result["faces"]] or [[None, "no face found"]]
    return f"{head}\n{table(['TRACK', *AFFECT, 'TOP 3'], rows)}"


def render_stream_line(result: dict) -> str:
    """One plain line per result, where the output is not a terminal."""
    faces = "; ".join(
        f"track {f['track_id']} {f['dominant']} {f['emotions'][f['dominant']]:.2f} "
        f"v {_signed(f.get('valence')) or '-'} a {_signed(f.get('arousal')) or '-'}"
        for f in result["faces"]
    )
    head = f"t {result['t']:.2f} s  frame {result['seq']}  skipped {result['skipped']}  {result['server_ms']:.1f} ms"
    return f"{head}  {faces or 'no face'}"


def render_stream_summary(summary: dict) -> str:
    """A session's final summary: frame counts, one row per track, the whole session's top labels."""
    n = summary["frames"]
    lines = [
        f"session: {n['received']} frames received, {n['analysed']} analysed, {n['dropped']} dropped, "
        f"{n['bad']} unreadable; {len(summary['tracks'])} face track(s)"
    ]
    rows = [
        [t["track_id"], f"{t['first_seen']:.1f}", f"{t['last_seen']:.1f}", t["samples"], *_summary_cells(t["summary"]),
         len(t["segments"])]
        for t in summary["tracks"]
    ]  # fmt: skip
    if rows:
        head = ["TRACK", "FROM S", "TO S", "FRAMES", "DOMINANT", "SHARE", "VALENCE", "AROUSAL", "SEGMENTS"]
        lines.append(table(head, rows))
    if summary.get("summary"):
        lines.append(f"whole session: {_top(summary['summary']['emotions'])}")
    return "\n".join(lines)


def _summary_cells(s: dict) -> list[Any]:
    return [
        s["dominant"],
        f"{s['share'].get(s['dominant'], 0):.2f}",
        _signed(s.get("valence")),
        _signed(s.get("arousal")),
    ]
