"""Which fake identity each track shows, and when the identity guard looks at it again.

Per track: the guard's choice (:class:`~streamanon.generate.guard.IdentityChoice`), the time of
its next re-check, and, when the guard runs on a thread of its own, the choice or re-check under
way there. The pipeline asks once a frame which of its aligned faces may be generated and with
which latent (:meth:`TrackIdentities.select`); every other face is hidden another way (blurred),
so the rules here fail closed:

- a new track is shown once the guard has chosen a safe identity for it; until then (on the
  guard's thread) or when none is safe (retried every ``GUARD_RETRY_SECONDS``) it is left out;
- a shown identity is re-checked every ``check_seconds``, on the next frame after a check it
  passed by less than ``CLOSE_MARGIN`` (at most ``RECHECKS_PER_FRAME`` checks a frame, the most
  overdue first), and replaced at the first check it fails, or that fails to run, by a successor
  near it where the guard finds one (``IdentityGuard.choose(previous=...)``);
- on the guard's thread a re-check runs while the identity stays shown, as between checks; a
  failed one leaves the face out from the next frame until a new choice is in.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..types import AlignedFace
from .guard import IdentityChoice, IdentityGuard, View

# A track the guard refused (blurred meanwhile) is tried again after this many seconds.
GUARD_RETRY_SECONDS = 1.0
# Re-checks of shown identities run per frame at most (the most overdue first): faces that appear
# together fall due together, and checking all of them on one frame made that frame's latency spike.
RECHECKS_PER_FRAME = 1
# A shown identity that passes a re-check by less than this (in dlib distance past its bar) is
# checked again on the next frame instead of ``check_seconds`` later: on a talking face the distance
# moves by up to ~0.03 a frame, and on a shared talking clip `streamanon eval` found frames 92-94
# under 0.6 (0.56-0.59) between two checks passed by 0.04 and 0.02 at frames 90 and 96.
CLOSE_MARGIN = 0.05

log = logging.getLogger(__name__)

# (face, copy) -> where the guard judges the face in this frame; copy: the view outlives the frame's
# buffer (it goes to the guard's thread).
ViewOf = Callable[[AlignedFace, bool], View]


class TrackIdentities:
    """The guard's identities for the tracks of one stream.

    Args:
        guard: the identity guard.
        seed: ``generate.seed``, the base of every track's candidate latents.
        check_seconds: ``generate.guard_check_seconds``, stream time between re-checks.
        thread: where choices and re-checks run (``generate.guard_background``); None: in the
            caller's frame, which waits for them.
    """

    def __init__(self, guard: IdentityGuard, seed: int, check_seconds: float,
                 thread: ThreadPoolExecutor | None = None) -> None:  # fmt: skip
        self.guard = guard
        self.seed = int(seed)
        self.check_seconds = float(check_seconds)
        self.thread = thread
        self.choices: dict[int, IdentityChoice] = {}
        self.check_at: dict[int, float] = {}
        self.choosing: dict[int, Future] = {}  # on the guard's thread
        self.checking: dict[int, tuple[Future, IdentityChoice]] = {}  # on the guard's thread

    def reset(self) -> None:
        """Forget every track; work under way on the guard's thread is cancelled or ignored."""
        for pending in [*self.choosing.values(), *(future for future, _ in self.checking.values())]:
            pending.cancel()
        self.choices.clear()
        self.check_at.clear()
        self.choosing.clear()
        self.checking.clear()

    def select(self, aligned: Sequence[AlignedFace], t: float, known: set[int],
               view_of: ViewOf) -> tuple[list[AlignedFace], np.ndarray, list[str]]:  # fmt: skip
        """The faces of ``aligned`` that may be generated at stream time ``t``, their latents
        (B, latent_dim) and the name of each one's post-processing. ``known``: the tracker's
        track ids (the others are forgotten); ``view_of``: the frame's view of a face."""
        self._forget_all_but(known)
        for tid in [tid for tid, pending in self.choosing.items() if pending.done()]:
            self._take_background_choice(tid, self.choosing.pop(tid), t)
        for tid in [tid for tid, (pending, _) in self.checking.items() if pending.done()]:
            self._take_background_check(tid, *self.checking.pop(tid), aligned, view_of, t)
        due = sorted((self.check_at[face.track_id], face.track_id) for face in aligned
                     if face.track_id in self.choices and t >= self.check_at[face.track_id])  # fmt: skip
        check_now = {tid for _, tid in due[:RECHECKS_PER_FRAME]}
        kept, latents, ways = [], [], []
        for face in aligned:
            tid = face.track_id
            if tid in self.choosing:
                continue  # blurred until the guard's thread has its identity
            choice = self.choices.get(tid)
            if self.thread is not None and (choice is None or tid in check_now):
                view = view_of(face, True)  # used after this frame
                if choice is None or not choice.safe:
                    self._choose_in_background(tid, face, view, None)
                    continue
                # Shown meanwhile, as between checks; blurred from the first frame after a failure.
                self.checking[tid] = (self.thread.submit(self.guard.recheck_margin, face, choice, view), choice)
                self.check_at[tid] = math.inf
            elif choice is None or tid in check_now:
                view = view_of(face, False)
                safe = choice is not None and choice.safe
                margin = self.guard.recheck_margin(face, choice, view) if safe else -1.0
                if not margin >= 0.0:  # NaN (no measurement) fails too
                    previous = choice if safe else None  # a shown identity that failed: its successor first
                    choice = self._record(tid, self.guard.choose(face, self.seed, view, previous), t)
                else:
                    self.check_at[tid] = self._next_check(t, margin)
            if choice.safe:
                kept.append(face)
                latents.append(choice.latent)
                ways.append(choice.postprocess)
        dim = self.guard.generator.config.latent_dim
        return kept, np.stack(latents) if latents else np.zeros((0, dim), np.float32), ways

    def _next_check(self, t: float, margin: float) -> float:
        """When to look again at an identity that passed a check at ``t`` by ``margin``."""
        return t if margin < CLOSE_MARGIN else t + self.check_seconds

    def _forget_all_but(self, known: set[int]) -> None:
        for stale in [tid for tid in self.choices if tid not in known]:
            self.choices.pop(stale)
            self.check_at.pop(stale, None)
        for stale in [tid for tid in self.choosing if tid not in known]:
            self.choosing.pop(stale).cancel()
        for stale in [tid for tid in self.checking if tid not in known]:
            self.checking.pop(stale)[0].cancel()

    def _record(self, tid: int, choice: IdentityChoice, t: float) -> IdentityChoice:
        """Keep the guard's ``choice`` for track ``tid`` and schedule its next look at it."""
        if not choice.safe:
            log.info("track %d: no candidate identity is unlike the original (best distance %.3f); blurring it",
                     tid, choice.distance)  # fmt: skip
        self.choices[tid] = choice
        self.check_at[tid] = t + (self.check_seconds if choice.safe else GUARD_RETRY_SECONDS)
        return choice

    def _choose_in_background(self, tid: int, face: AlignedFace, view: View, previous: IdentityChoice | None) -> None:
        """Start choosing ``tid``'s identity on the guard's thread (``previous``: the shown identity
        it replaces, if any); fail closed meanwhile: the face is left out (blurred) until the choice
        is in."""
        self.choices.pop(tid, None)
        self.choosing[tid] = self.thread.submit(self.guard.choose, face, self.seed, view, previous)

    def _take_background_check(self, tid: int, pending: Future, checked: IdentityChoice,
                               aligned: Sequence[AlignedFace], view_of: ViewOf, t: float) -> None:  # fmt: skip
        """The result of a re-check made on the guard's thread: schedule the next one, or replace
        the identity (a failed check counts as a failure: fail closed)."""
        try:
            margin = float(pending.result())
        except Exception:  # noqa: BLE001 - an unverifiable identity is not shown
            log.exception("track %d: re-checking its identity failed; choosing another", tid)
            margin = -1.0
        if self.choices.get(tid) is not checked:
            return  # replaced meanwhile
        if margin >= 0.0:
            self.check_at[tid] = self._next_check(t, margin)
            return
        face = next((f for f in aligned if f.track_id == tid), None)
        if face is None:  # not detected this frame: choose when it is, blurred until then
            self.choices.pop(tid)
            return
        self._choose_in_background(tid, face, view_of(face, True), checked)

    def _take_background_choice(self, tid: int, pending: Future, t: float) -> None:
        """The result of a choice made on the guard's thread; a failed one is retried later
        (the face stays blurred meanwhile)."""
        try:
            self._record(tid, pending.result(), t)
        except Exception:  # noqa: BLE001 - a failed choice only delays the generated face
            log.exception("track %d: choosing an identity failed; blurring it and retrying", tid)
            self._record(tid, IdentityChoice(np.zeros(0, np.float32), -1, 0.0, 0, False, ""), t)
