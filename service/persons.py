"""Persons in a video: a clip's tracks linked by face descriptor, and what each person did over the whole clip.

A person is a label within one answer (1, 2, 3 ... in order of first appearance), meaningless outside it: there is
no gallery, no enrolment and no matching across videos, by design. Descriptors stay in the process
(``service.identity``); only the ids and the per-person timelines leave.

Linking is average-linkage agglomerative clustering over each track's few descriptors (its largest, sharpest
faces), with two rules: two clusters join only while their mean descriptor distance is under the threshold, and
never when any of their tracks were on screen in the same sampled frame (one person is not two faces at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from service.identity import FaceDescriber, TrackChips, distances
from service.results import PersonResult, TrackResult
from service.video.timeline import segments, summarize

# dlib's descriptor distance under which two tracks are one person (``EMOTION_VIDEO__PERSON_THRESHOLD``): the largest
# whose pairwise precision was >= 0.99 on 30 clips of half the shared photos' people (1.00 there, recall 0.96); on
# 48 clips of the other half, precision 0.977, recall 0.947 (benchmarks/persons.py). dlib's customary 0.6 merged
# different people there (precision 0.95 and 0.93).
DEFAULT_THRESHOLD = 0.575


@dataclass
class TrackFaces:
    """What linking knows of one track: the frames it was seen in and its descriptors (k x 128, maybe none)."""

    track_id: int
    frames: frozenset[int]
    first_seen: float
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))


def link(tracks: Sequence[TrackFaces], threshold: float = DEFAULT_THRESHOLD) -> dict[int, int]:
    """``track_id -> person_id``: persons numbered 1..n in order of first appearance. A track without descriptors
    is a person of its own."""
    n = len(tracks)
    members: list[list[int]] = [[i] for i in range(n)]
    # sums and counts of descriptor distances between clusters, so a merge updates one row (average linkage)
    total, count = np.zeros((n, n)), np.zeros((n, n))
    for i, a in enumerate(tracks):
        for j in range(i + 1, n):
            b = tracks[j]
            if len(a.descriptors) and len(b.descriptors) and not a.frames & b.frames:
                d = distances(a.descriptors, b.descriptors)
                total[i, j] = total[j, i] = float(d.sum())
                count[i, j] = count[j, i] = d.size
    veto = np.array([[bool(a.frames & b.frames) for b in tracks] for a in tracks], bool).reshape(n, n)
    alive = np.ones(n, bool)
    while True:
        mean = np.where((count > 0) & ~veto & alive[:, None] & alive[None], total / np.maximum(count, 1), np.inf)
        np.fill_diagonal(mean, np.inf)
        i, j = np.unravel_index(int(np.argmin(mean)), mean.shape) if n else (0, 0)
        if not n or mean[i, j] >= threshold:
            break
        members[i] += members[j]
        total[i], count[i], veto[i] = total[i] + total[j], count[i] + count[j], veto[i] | veto[j]
        total[:, i], count[:, i], veto[:, i] = total[i], count[i], veto[i]
        alive[j] = False
    clusters = sorted(
        (sorted(members[i]) for i in range(n) if alive[i]), key=lambda m: min(tracks[k].first_seen for k in m)
    )
    return {tracks[k].track_id: person for person, m in enumerate(clusters, 1) for k in m}


def build_persons(
    tracks: list[TrackResult], person_of: dict[int, int], labels: Sequence[str], step: float, duration: float
) -> list[PersonResult]:
    """Each person's tracks, time on screen, summary and segments over the whole clip, from its tracks' smoothed
    timelines (every sample counts alike, as in a track's summary); persons in id order."""
    out = []
    for person in sorted(set(person_of.values())):
        own = sorted((t for t in tracks if person_of.get(t.track_id) == person), key=lambda t: t.first_seen)
        samples = sorted((s for t in own for s in t.timeline), key=lambda s: s.t)
        probs = np.array([[s.prediction.emotions[label] for label in labels] for s in samples])
        with_va = all(s.prediction.valence is not None for s in samples)
        va = np.array([[s.prediction.valence, s.prediction.arousal] for s in samples]) if with_va else None
        spans = segments([s.t for s in samples], [s.prediction.dominant for s in samples], step, duration)
        out.append(
            PersonResult(
                person_id=person,
                track_ids=[t.track_id for t in own],
                time_on_screen=round(sum(s.end - s.start for s in spans), 3),
                summary=summarize(probs, va, list(labels)),
                segments=spans,
            )
        )
    return out


@dataclass(frozen=True)
class PersonLinking:
    """Linking in the video pipeline: the descriptor runtime, the distance threshold, faces described per track."""

    describer: FaceDescriber
    threshold: float = DEFAULT_THRESHOLD
    per_track: int = 3

    def collector(self) -> TrackChips:
        """What a scan fills with each track's best faces."""
        return TrackChips(self.describer, self.per_track)

    def faces(self, people: TrackChips, tracks: list[TrackResult]) -> list[TrackFaces]:
        """Each track's frames and descriptors (computed here, in one batch)."""
        described, none = people.descriptors(), np.zeros((0, 128), np.float32)
        return [
            TrackFaces(
                t.track_id, frozenset(people.frames.get(t.track_id, ())), t.first_seen, described.get(t.track_id, none)
            )
            for t in tracks
        ]

    def apply(
        self, people: TrackChips, tracks: list[TrackResult], labels: Sequence[str], step: float, duration: float
    ) -> tuple[list[TrackResult], list[PersonResult]]:
        """The tracks with their ``person_id``, and the persons; the descriptors are dropped on return."""
        person_of = link(self.faces(people, tracks), self.threshold)
        linked = [replace(t, person_id=person_of[t.track_id]) for t in tracks]
        return linked, build_persons(linked, person_of, labels, step, duration)
