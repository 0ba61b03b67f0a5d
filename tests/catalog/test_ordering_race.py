"""Global order under concurrent writers: a tailing reader sees every event once, in order, with no gaps."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import catalog
from catalog import events as ev
from catalog.store import NewEvent

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
WRITERS, BATCHES, BATCH = 4, 25, 40  # small batches use INSERT, big ones COPY: mix both


def _batch(writer: int, n: int) -> list[NewEvent]:
    size = BATCH if n % 2 else 5
    return [
        NewEvent(ev.ImageExcluded(sha256="%064x" % (writer * 10**6 + n * 1000 + i + 1), reason=f"w{writer} b{n}"), T0)
        for i in range(size)
    ]


def test_concurrent_writers_and_a_tailing_reader(cat: catalog.Catalog):
    batches: dict[tuple[int, int], list[int]] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    def write(writer: int) -> None:
        try:
            for n in range(BATCHES):
                batches[(writer, n)] = cat.store.append(_batch(writer, n)).positions
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    seen: list[int] = []

    def read() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read once more after the writers finished
            page = cat.store.read(after, limit=97)
            seen.extend(e.position for e in page)
            if page:
                after = page[-1].position
            elif finished:
                return

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join(timeout=60)
    assert not errors
    total = sum(len(p) for p in batches.values())
    assert total == cat.store.head()
    # every event exactly once, in position order, no gaps
    assert seen == list(range(1, total + 1))
    # each batch's positions are contiguous, and batches never interleave
    for positions in batches.values():
        assert positions == list(range(positions[0], positions[0] + len(positions)))


def test_tail_follows_new_appends(cat: catalog.Catalog):
    cat.store.append(_batch(0, 0))

    def later() -> None:
        cat.store.append(_batch(1, 1))

    timer = threading.Timer(0.3, later)
    timer.start()
    seen = [e.position for e in cat.store.tail(after=2, idle_timeout=2.0)]
    timer.join()
    assert seen == list(range(3, 5 + BATCH + 1))
