"""Several PBXs seen as one centre: a read-only view over one :class:`CallCenter` each.

Theory of operation
-------------------
A large centre runs several Asterisks.  Each PBX's calls, members, counters, boot time
and link are its own (a ``Uniqueid`` or an interface such as ``PJSIP/1001`` is unique
only on one PBX), so the service keeps one pure :class:`~acd.state.CallCenter` per PBX
and feeds each the events of its own link.  :class:`Centres` answers the questions
the consoles, the dialer and the wallboard ask of "the centre" across all of them.

Keys: a call or agent of the home PBX (the first) is keyed as it always was (the bare
``Uniqueid`` or interface); one on another PBX as ``<pbx>:<key>``.  A bare key not on
the home PBX is looked for on the others, in order, so an operator account's interface
(``PJSIP/1001``) finds its member wherever the phone is registered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from acd.state import Agent, Call, CallCenter, PbxRestarted

T = TypeVar("T")


def pbx_of(row: object, home: str) -> str:
    """The name of the PBX a stored record (call, visit) was on: its ``pbx``, or ``home``
    (the home PBX) when it names none -- a record stored before migration 0013, or one
    of a centre with a single PBX.  :func:`callcenter.report_days.pbx_name` is the same
    rule in SQL."""
    return getattr(row, "pbx", "") or home


def split_key(key: str, names: Mapping[str, object]) -> tuple[str | None, str]:
    """``"pbx2:1.5"`` -> ``("pbx2", "1.5")`` when ``pbx2`` is a PBX; else ``(None, key)``
    (interfaces such as ``Local/1001@ctx`` hold no ``:``, ``SIP/x:y`` is not a PBX)."""
    pbx, sep, rest = key.partition(":")
    if sep and pbx in names:
        return pbx, rest
    return None, key


class _Merged(Mapping[str, T], Generic[T]):
    """``{key: item}`` over every PBX's own dict, keyed as the module docstring says."""

    def __init__(self, centres: Centres, attr: str) -> None:
        self._centres, self._attr = centres, attr

    def _dicts(self) -> Iterator[tuple[str, dict[str, T]]]:
        for name, centre in self._centres.by_pbx.items():
            yield name, getattr(centre, self._attr)

    def __getitem__(self, key: str) -> T:
        pbx, bare = split_key(key, self._centres.by_pbx)
        if pbx is not None:
            return getattr(self._centres.by_pbx[pbx], self._attr)[bare]
        for _, d in self._dicts():
            if key in d:
                return d[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for i, (name, d) in enumerate(self._dicts()):
            prefix = "" if i == 0 else f"{name}:"
            for key in d:
                yield prefix + key

    def __len__(self) -> int:
        return sum(len(d) for _, d in self._dicts())

    def values(self) -> Iterator[T]:  # type: ignore[override]
        for _, d in self._dicts():
            yield from d.values()


class Centres:
    """The read side of "the centre" over several PBXs (``by_pbx``: name -> centre, the
    home PBX first).  Same names as :class:`CallCenter` for what consoles read."""

    def __init__(self, by_pbx: dict[str, CallCenter]) -> None:
        if not by_pbx:
            raise ValueError("at least one PBX")
        self.by_pbx = by_pbx
        self.agents: Mapping[str, Agent] = _Merged(self, "agents")
        self.calls: Mapping[str, Call] = _Merged(self, "calls")

    @property
    def link_up(self) -> bool:
        """True while any PBX's link is up: the centre is live; the PBXs that are down
        are greyed one by one (:meth:`links`), not the whole picture."""
        return any(c.link_up for c in self.by_pbx.values())

    @property
    def link_reason(self) -> str:
        """Why the PBXs that are down are (``"pbx2: connection refused"``), "" when none."""
        return "; ".join(f"{name}: {c.link_reason}" for name, c in self.by_pbx.items()
                         if not c.link_up)

    @property
    def last_restart(self) -> PbxRestarted | None:
        """The latest restart or counter reset of any PBX."""
        seen = [c.last_restart for c in self.by_pbx.values() if c.last_restart is not None]
        return max(seen, key=lambda r: r.at) if seen else None

    def links(self) -> dict[str, tuple[bool, str]]:
        """Each PBX's link: name -> (up, reason)."""
        return {name: (c.link_up, c.link_reason) for name, c in self.by_pbx.items()}

    def queues(self) -> list[str]:
        return sorted({q for c in self.by_pbx.values() for q in c.queues()})

    def waiting_in(self, queue: str) -> list[Call]:
        """Callers waiting in ``queue`` on every PBX, longest waiting first."""
        out = [call for c in self.by_pbx.values() for call in c.waiting_in(queue)]
        out.sort(key=lambda call: call.joined_at)
        return out

    def longest_wait(self, queue: str | None, at: float) -> float:
        return max((c.longest_wait(queue, at) for c in self.by_pbx.values()), default=0.0)

    def agent_by_name(self, name: str) -> Agent | None:
        """The member of that name: the one on a call or ringing, else the one in a queue,
        else any (an operator signed in to queues on several PBXs is one member on each).
        By each PBX's own index of names (:meth:`CallCenter.agents_named`), which the
        centre's changes keep: no scan of every member of every PBX."""
        return best_agent([a for c in self.by_pbx.values() for a in c.agents_named(name)])

    def agents_of(self, interface: str, name: str = "") -> list[Agent]:
        """Every PBX's member for this operator (by interface, else by member name)."""
        out = []
        for c in self.by_pbx.values():
            a = c.agents.get(interface) if interface else None
            if a is None and name:
                a = c.agent_by_name(name)
            if a is not None:
                out.append(a)
        return out


def best_agent(agents: list[Agent]) -> Agent | None:
    """Of one operator's members on several PBXs, the one that matters now: on a call
    or ringing, else in a queue, else the first."""
    for wanted in (lambda a: a.call is not None, lambda a: bool(a.memberships)):
        for a in agents:
            if wanted(a):
                return a
    return agents[0] if agents else None
