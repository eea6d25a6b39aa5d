"""Outbound and supervision (all additive: nothing happens unless the action is sent)
------------------------------------------------------------------------------
* ``Originate`` of ``Local/<number>@hotline-outbound`` / ``@hotline-callback``
  (a citizen; :class:`~callcenter.pbx.traffic.CitizenModel` decides answer, ring time,
  keys): Newchannel ``;1`` (Down), Newchannel ``;2`` (Ring), NewCallerid ``;1``
  (the Originate's CallerID), LocalBridge, Newstate ``;1`` Ringing.  Not answered:
  Hangup ``;2``, Hangup ``;1`` (cause 19, or 17 busy), then ``OriginateResponse``
  ``Response: Failure``, ``Channel: Local/<number>@<context>``, ``Reason: 3`` (rang
  out at the model's ring-out or the ``Timeout``) or ``5`` (busy, after 1 s),
  ``Uniqueid: <null>``.  Answered: Newstate ``;2`` Up, Newstate ``;1`` Up,
  ``OriginateResponse`` ``Success``, ``Channel``/``Uniqueid`` of ``;1``, ``Reason: 4``.
  Header order is manager.c's: ``ActionID, Response, Channel, Application, Data``
  (or ``Context, Exten``) ``, Reason, Uniqueid, CallerIDNum, CallerIDName``.  The
  trunk leg ``;2`` dials is not modelled as a channel.
  - ``Application: AGI`` / ``Data: agi://host:port/script,arg1,...``: the IO edge
    runs the script on ``;1`` (:attr:`Pbx.agi_runs`); when it ends ``;1`` and ``;2``
    hang up (HangupRequest, Hangup ``;1``, SoftHangupRequest, Hangup ``;2``).
  - ``Context: hotline-queue`` / ``Exten: <queue>``: ``;1`` (caller ID set to the
    citizen's number: NewCallerid) joins the queue as an ordinary caller with the
    Originate's variables as channel variables (QueueCallerJoin, AgentCalled ...).
* ``Originate`` of a supervisor phone (``Local/1901@agents`` ... 1904) with
  ``Application: ChanSpy`` / ``Data: <prefix>,<options>``: Newchannel x2,
  NewCallerid, LocalBridge, DialBegin; ~1 s later Newstate x2 Up, DialEnd ANSWER,
  OriginateResponse Success (``Application: ChanSpy``, ``Data``, ``Reason: 4``);
  then ``ChanSpyStart`` (``Spyer*`` then ``Spyee*`` channel snapshots) on the first
  bridged channel whose name starts with the prefix.  When it hangs up:
  ``ChanSpyStop`` (same fields) just before its Hangup, and with option ``E`` the
  supervisor's channels hang up; without ``E`` the scan resumes.  A Hangup action on
  the spyer ends it (ChanSpyStop first).  Real ChanSpy with nothing to spy on keeps
  scanning (beeping) until the spyer hangs up; the sim scans once a second for
  ``spy_wait`` (5 s) and then hangs the spyer up.  Listen/whisper/barge (``w``,
  ``B``) only change audio in Asterisk; the sim logs the mode.  Any other phone:
  ``Response: Error`` ``Message: Originate failed``.
* ``MixMonitor`` (``Channel``, ``File``, ``Options``): unknown channel ``Response:
  Error`` / ``Message: No such channel`` (app_mixmonitor's text), else ``Response:
  Success`` (ActionID only) and ``MixMonitorStart`` (the channel's snapshot); when
  the channel hangs up ``MixMonitorStop`` (snapshot) just before its Hangup, and a
  :class:`Recording` in :attr:`Pbx.recordings` for the IO edge to write.
"""

from __future__ import annotations

import structlog

from callcenter.pbx.sim.model import AgiRun, Call, Channel, CitizenCall, Queue, SpyCall
from callcenter.pbx.sim.wire import (
    CALL,
    CID_PRES,
    JOIN_DELAY,
    RING_SCALE,
    UNKNOWN,
    ActionFields,
    error_frame,
    mask_number,
    response_frame,
)
from callcenter.pbx.traffic import (
    CallSpec,
)

log = structlog.get_logger(__name__)


class OutboundCalls:
    """Originates to citizens (return visits, call-backs) and supervisor phones (ChanSpy):
    the part of :class:`~callcenter.pbx.sim.app_queue.Pbx` that only runs when an action asks."""

    # ------------------------------------------------------------------ calls to citizens

    def _originate_citizen(self, f: ActionFields, aid: str, number: str, context: str,
                           variables: dict[str, str], cid: tuple[str, str]) -> str:
        if not number:
            return error_frame(aid, "Originate failed")
        try:
            timeout = float(f.get("timeout") or 30000) / 1000.0
        except ValueError:
            timeout = 30.0
        app = f.get("application")
        cc = CitizenCall(number, context, aid, app, f.get("data") if app else "",
                         "" if app else (f.get("context") or "default"),
                         "" if app else (f.get("exten") or "s"),
                         (cid[0] or UNKNOWN, cid[1] or UNKNOWN), timeout, variables)
        log.debug("pbx_sim.citizen_originate", number=mask_number(number), context=context,
                  app=app or f"{cc.context},{cc.exten}")
        self._at(self.now, self._citizen_dial, cc)
        return response_frame(aid, Message="Originate successfully queued")

    def _citizen_dial(self, cc: CitizenCall) -> None:
        """The Local pair towards the citizen: ``;2`` dials out the trunk, ``;1`` rings."""
        base = f"Local/{cc.number}@{cc.dial_context}-{self._next_local():08x}"
        vars_ = dict(cc.variables)
        a1 = cc.a1 = self._new_channel(base + ";1", 0, cc.dial_context, cc.number, "", vars_, cc)
        a2 = cc.a2 = self._new_channel(base + ";2", 4, cc.dial_context, cc.number, a1.uniqueid,
                                       vars_, cc)
        self._chan("Newchannel", a1)
        self._chan("Newchannel", a2)
        a1.set(cid_num=cc.cid_num, cid_name=cc.cid_name)
        self._chan("NewCallerid", a1, CID_PRES)
        self._local_bridge(a1, a2, cc.dial_context, cc.number, "No")
        a2.set(app="Dial", appdata=f"PJSIP/{cc.number}@trunk,{int(cc.timeout)}")
        citizen = self.citizen
        if citizen.answers():
            ring = citizen.ring_time()
            if ring < cc.timeout:
                a1.set(state=5)
                self._chan("Newstate", a1)
                self._at(self.now + ring, self._citizen_up, cc)
                return
            reason = 3
        else:
            reason = citizen.no_answer_reason()
        if reason == 5:  # busy at once
            self._at(self.now + 1.0, self._citizen_fail, (cc, 5))
        else:  # rings until the originate's Timeout (or the model's ring-out)
            a1.set(state=5)
            self._chan("Newstate", a1)
            self._at(self.now + min(cc.timeout, citizen.no_answer_ring), self._citizen_fail,
                     (cc, 3))

    def _originate_response(self, cc: CitizenCall | SpyCall, ok: bool, reason: int,
                            channel: str, uniqueid: str) -> None:
        """manager.c's OriginateResponse: Application/Data or Context/Exten variant."""
        if isinstance(cc, SpyCall):
            where = f"Application: ChanSpy\r\nData: {cc.data}\r\n"
        elif cc.app:
            where = f"Application: {cc.app}\r\nData: {cc.appdata}\r\n"
        else:
            where = f"Context: {cc.context}\r\nExten: {cc.exten}\r\n"
        self._emit("OriginateResponse", CALL,
                   (f"ActionID: {cc.action_id}\r\n" if cc.action_id else "")
                   + f"Response: {'Success' if ok else 'Failure'}\r\nChannel: {channel}\r\n"
                   f"{where}Reason: {reason}\r\nUniqueid: {uniqueid}\r\n"
                   f"CallerIDNum: {cc.cid_num}\r\nCallerIDName: {cc.cid_name}\r\n")

    def _citizen_fail(self, arg: tuple[CitizenCall, int]) -> None:
        cc, reason = arg
        if not cc.live:
            return
        cc.live = False
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        cause = 17 if reason == 5 else 19
        self._hangup(a2, cause)
        self._hangup(a1, cause)
        self._originate_response(cc, False, reason, f"Local/{cc.number}@{cc.dial_context}",
                                 "<null>")

    def _citizen_up(self, cc: CitizenCall) -> None:
        """The citizen answers: OriginateResponse Success, then the application or the queue."""
        if not cc.live:
            return
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        cc.up = True
        a2.set(state=6, priority=2)
        self._chan("Newstate", a2)
        a1.set(state=6)
        self._chan("Newstate", a1)
        self._originate_response(cc, True, 4, a1.name, a1.uniqueid)
        queue = self.queues.get(cc.exten) if not cc.app else None
        if cc.app:
            a1.set(app=cc.app, appdata=cc.appdata)
            if cc.app.lower() == "agi":
                url, *args = [p.strip() for p in cc.appdata.split(",")]
                self.agi_runs.append(AgiRun(a1.name, a1.uniqueid, url, tuple(args), cc.number,
                                            UNKNOWN, cc.dial_context, cc.number,
                                            dict(a1.vars)))
            else:  # nothing else is simulated: the application ends at once
                self._at(self.now + 1.0, self._citizen_down, cc)
        elif queue is not None and cc.context == self.config.queue_context:
            self._callback_join(cc, queue)
        else:
            self._at(self.now + 1.0, self._citizen_down, cc)

    def _callback_join(self, cc: CitizenCall, queue: Queue) -> None:
        """``;1`` runs ``hotline-queue,<queue>,1``: Queue() as a caller with the call's variables."""
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        v = cc.variables
        spec = CallSpec(at=self.now, number=cc.number, name="", queue=queue.name,
                        hotline=v.get("HOTLINE", "12345"), category=v.get("CATEGORY", "consult"),
                        ivr_path=v.get("IVR_PATH", ""), kind="callback")
        call = Call(spec, queue)
        call.c2, call.c1 = a1, a2  # c2: the channel in the queue; c1: the leg to the citizen
        a1.owner = a2.owner = call
        a1.set(context=self.config.queue_context, exten=queue.name, cid_num=cc.number)
        self._chan("NewCallerid", a1, CID_PRES)
        a1.set(app="Answer", appdata="")
        self._at(self.now + JOIN_DELAY, self._join, call)

    def _citizen_down(self, cc: CitizenCall) -> None:
        if not cc.live:
            return
        cc.live = False
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        if not cc.up:  # hung up while ringing (Hangup action): no answer
            self._hangup(a2, 16)
            self._hangup(a1, 16)
            self._originate_response(cc, False, 3, f"Local/{cc.number}@{cc.dial_context}",
                                     "<null>")
            return
        self._hangup_req(a1, soft=False)
        self._hangup(a1)
        self._hangup_req(a2, soft=True)
        self._hangup(a2)

    def agi_done(self, channel: str) -> None:
        """The IO edge's FastAGI script on ``channel`` ended: the channel hangs up."""
        ch = self.channels.get(channel)
        if ch is not None and isinstance(ch.owner, CitizenCall):
            self._citizen_down(ch.owner)

    # ------------------------------------------------------------------ ChanSpy

    def _spy_dial(self, spy: SpyCall) -> None:
        ctx = self.config.agent_context
        base = f"Local/{spy.ext}@{ctx}-{self._next_local():08x}"
        a1 = spy.a1 = self._new_channel(base + ";1", 0, ctx, spy.ext, "", {}, spy)
        a2 = spy.a2 = self._new_channel(base + ";2", 4, ctx, spy.ext, a1.uniqueid, {}, spy)
        self._chan("Newchannel", a1)
        self._chan("Newchannel", a2)
        a1.set(cid_num=spy.cid_num or UNKNOWN, cid_name=spy.cid_name or UNKNOWN)
        self._chan("NewCallerid", a1, CID_PRES)
        self._local_bridge(a1, a2, ctx, spy.ext, "No")
        self._emit("DialBegin", CALL, f"{a1.dsnap()}DialString: {spy.ext}@{ctx}\r\n")
        self._at(self.now + self.config.spy_ring * RING_SCALE, self._spy_up, spy)

    def _spy_up(self, spy: SpyCall) -> None:
        if not spy.live:
            return
        a1, a2 = spy.a1, spy.a2
        assert a1 is not None and a2 is not None
        a2.set(state=6, priority=2)
        self._chan("Newstate", a2)
        a1.set(state=6, app="ChanSpy", appdata=spy.data)
        self._chan("Newstate", a1)
        self._emit("DialEnd", CALL, f"{a1.dsnap()}DialStatus: ANSWER\r\n")
        self._originate_response(spy, True, 4, a1.name, a1.uniqueid)
        log.debug("pbx_sim.chanspy", spyer=a1.name, prefix=spy.prefix, mode=spy.mode,
                  options=spy.options)
        spy.deadline = self.now + self.config.spy_wait
        self._spy_scan(spy)

    def _spy_scan(self, spy: SpyCall) -> None:
        """ChanSpy's channel scan: the first bridged channel whose name starts with the prefix."""
        if not spy.live or spy.spyee is not None:
            return
        prefix = spy.prefix.lower()
        target = next((ch for ch in self.channels.values()
                       if ch.bridge and ch.owner is not spy and ch.name.lower().startswith(prefix)),
                      None) if prefix else None
        if target is None:
            if self.now >= spy.deadline:
                self._spy_down(spy)
            else:
                self._at(self.now + 1.0, self._spy_scan, spy)
            return
        assert spy.a1 is not None
        spy.spyee = target
        self._spied.setdefault(target.name, []).append(spy)
        self._emit("ChanSpyStart", CALL, f"{spy.a1.render('Spyer')}{target.render('Spyee')}")

    def _spy_stop(self, spy: SpyCall) -> None:
        target = spy.spyee
        if target is None or spy.a1 is None:
            return
        spy.spyee = None
        spies = self._spied.get(target.name, [])
        if spy in spies:
            spies.remove(spy)
        if not spies:
            self._spied.pop(target.name, None)
        self._emit("ChanSpyStop", CALL, f"{spy.a1.render('Spyer')}{target.render('Spyee')}")

    def _spyee_gone(self, ch: Channel) -> None:
        """The spied-on channel hangs up: ChanSpyStop; option E ends the spyer, else it scans."""
        for spy in list(self._spied.get(ch.name, [])):
            self._spy_stop(spy)
            if "E" in spy.options:
                self._at(self.now, self._spy_down, spy)
            else:
                spy.deadline = self.now + self.config.spy_wait
                self._at(self.now + 1.0, self._spy_scan, spy)

    def _spy_down(self, spy: SpyCall) -> None:
        if not spy.live:
            return
        spy.live = False
        self._spy_stop(spy)
        a1, a2 = spy.a1, spy.a2
        assert a1 is not None and a2 is not None
        self._hangup_req(a1, soft=False)
        self._hangup(a1)
        self._hangup_req(a2, soft=True)
        self._hangup(a2)
