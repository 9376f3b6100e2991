"""Tools that start while the reply calling them still streams (`start_early`: per tool, per chat, per call).

For `Chat` (sync tools) and `AsyncChat` (async tools, and sync tools run in threads), in both wire formats, against
`lisette.testing.Sim`. No test reads a clock to decide: a tool that should have started early is waited for with a
generous liveness timeout (10 s), and one that can't have started (the consumer holds the stream still, so the rest
of the reply isn't read) is checked after a short wait that can only turn a bug into a failure, never a pass into one."""
import asyncio, copy, gc, threading, time
import pytest
from lisette import Chat, AsyncChat, start_early, needs_approval, BudgetExceeded, Approval   # Chat first (helpers)
import litellm
from litellm import ModelResponse, ModelResponseStream
from lisette.testing import Sim, Reply, Call, Fault

from helpers import *

NOT = 0.2     # seconds given to a tool that must not have started (it can't, unless the feature is wrong)
PACE = 0.005  # seconds between streamed events: the reply really is still arriving; nothing depends on the figure

SETUPS = pytest.mark.parametrize('cls,tk', [(Chat, 'sync'), (AsyncChat, 'async'), (AsyncChat, 'sync')],
                                 ids=['Chat', 'AsyncChat-async-tools', 'AsyncChat-sync-tools'])
ASYNC_SETUPS = pytest.mark.parametrize('cls,tk', [(AsyncChat, 'async'), (AsyncChat, 'sync')],
                                       ids=['AsyncChat-async-tools', 'AsyncChat-sync-tools'])

@pytest.fixture(autouse=True)
def _collect_after():
    yield
    gc.collect(1)

# ---------------------------------------------------------------- tools that report what they do

class Probe:
    """Tools that log ('start'|'end'|'cancelled', name, i), set an event per (name, i) when they start and when they
    end, and wait first for `gate(name, i)` (a threading.Event, or None: no wait)"""
    def __init__(self, kind='sync', gate=None):
        self.kind, self.gate, self.log, self.lock, self.evs = kind, gate, [], threading.Lock(), {}
        self.release = threading.Event()   # a gate for tools told to `hold`

    def ev(self, what, name, i)->threading.Event:
        with self.lock: return self.evs.setdefault((what, name, i), threading.Event())
    def started(self, name, i)->bool: return self.ev('start', name, i).is_set()
    def ended(self, name, i)->bool: return self.ev('end', name, i).is_set()
    def did(self, what)->list: return [(n, i) for w,n,i in list(self.log) if w == what]

    def _note(self, what, name, i):
        with self.lock: self.log.append((what, name, i))
        self.ev(what, name, i).set()

    def run_sync(self, name, i):
        self._note('start', name, i)
        g = self.gate(name, i) if self.gate else None
        if g is not None: assert g.wait(HANG), f'{name} {i}: its gate never opened'
        self._note('end', name, i)
        return f'{name} {i}'

    async def run_async(self, name, i):
        self._note('start', name, i)
        try:
            g = self.gate(name, i) if self.gate else None
            t = time.monotonic()
            while g is not None and not g.is_set():
                assert time.monotonic() - t < HANG, f'{name} {i}: its gate never opened'
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self._note('cancelled', name, i)
            raise
        self._note('end', name, i)
        return f'{name} {i}'

    def tool(self, name='nap', mark=False, approval=False):
        "A tool `name`(i, pad='') of this probe's kind; `mark`: `start_early`; `approval`: `needs_approval`"
        p = self
        if self.kind == 'sync':
            def nap(i:int,       # which call this is
                    pad:str=''   # ignored
                   )->str:
                "Take a short nap"
                return p.run_sync(name, i)
        else:
            async def nap(i:int,       # which call this is
                          pad:str=''   # ignored
                         )->str:
                "Take a short nap"
                return await p.run_async(name, i)
        nap.__name__ = nap.__qualname__ = name
        if mark: start_early(nap)
        if approval: needs_approval(nap)
        return nap

def hold(p): return lambda name, i: p.release
def chain(p, n=3):
    "Call i waits for call i+1 to end: later calls finish first"
    return lambda name, i: p.ev('end', name, i+1) if i < n-1 else None

# ---------------------------------------------------------------- driving a stream

async def until(cond, timeout)->bool:
    "Poll `cond` until it holds (True) or `timeout` s pass (False)"
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout: return False
        await asyncio.sleep(0.005)
    return True

def call_begins(o, k)->bool:
    "Is `o` the streamed chunk where tool call `k` begins (its id and name)?"
    if not isinstance(o, ModelResponseStream) or not o.choices: return False
    return any(d.index == k and d.id for d in o.choices[0].delta.tool_calls or [])

async def drive(chat, msg, cb=None, leave='break', **kw)->list:
    """Stream one call on `chat`, awaiting `cb(item)` (async, run on this loop) on each item as it comes; when `cb`
    returns 'stop' the caller leaves the stream (`leave`: 'break' out and drop it, or 'close' it). A sync chat's
    stream is read in a worker thread. The items read"""
    out = []
    if isinstance(chat, AsyncChat):
        s = await chat(msg, stream=True, **kw)
        async for o in s:
            out.append(o)
            if cb and await cb(o) == 'stop':
                if leave == 'close': await s.aclose()
                break
        del s
        return out
    loop = asyncio.get_running_loop()
    def run():
        s = chat(msg, stream=True, **kw)
        for o in s:
            out.append(o)
            if cb and asyncio.run_coroutine_threadsafe(cb(o), loop).result() == 'stop':
                if leave == 'close': s.close()
                break
    await asyncio.to_thread(sync_call, run)
    return out

def naps(n=3, name='nap', pad=0): return [Call(name, {'i': k} | ({'pad': 'x'*pad} if pad else {})) for k in range(n)]

def fmt(model): return 'anthropic' if model.startswith('anthropic') else 'openai'

async def resume(chat, decisions):
    "`chat.resume(decisions)`, not streamed (a sync chat's in a worker thread)"
    if isinstance(chat, AsyncChat): return await chat.resume(decisions)
    return await asyncio.to_thread(sync_call, lambda: chat.resume(decisions))

async def next_call_accepted(sim, chat, model):
    "The history is a valid transcript: one more call on the chat gets its answer, in a request the strict sim accepts"
    answered(chat.hist)
    sim.reset(); sim.script(Reply(text='Back again.'))
    assert text(await ask(chat, 'Are you there?', True)) == 'Back again.'
    accepted(sim, model)
    return sim.bodies[-1]

# ================================================================ 1. tools start before the reply ends

@SETUPS
@MODELS
@pytest.mark.parametrize('early', [True, False], ids=['early', 'not-early'])
async def test_tool_starts_while_the_reply_streams(sim, cls, tk, model, early):
    """At the chunk where call 2 begins (calls 0 and 1 are whole, call 2's arguments not yet sent), the consumer waits
    for call 0's tool to start: with `start_early` it has (and so has call 1's; call 2's can't have); without, it
    hasn't, and can't, since the reply isn't over. Either way the round ends the same"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool()], start_early=early)
    sim.script(Reply(calls=naps(3), pace=PACE), Reply(text='Rested.'))
    seen = {}
    async def cb(o):
        if call_begins(o, 2):
            seen['0'] = await until(lambda: p.started('nap', 0), HANG if early else NOT)
            seen['1'] = await until(lambda: p.started('nap', 1), HANG if early else NOT)
            seen['2'] = p.started('nap', 2)
        if isinstance(o, ModelResponse) and 'reply' not in seen: seen['reply'] = p.did('start')
    out = await drive(chat, 'Nap three times.', cb)
    assert (seen['0'], seen['1'], seen['2']) == (early, early, False), seen
    if not early: assert seen['reply'] == [], 'a tool started before the reply was over without start_early'
    assert text(out[-1]) == 'Rested.'
    assert tool_texts(chat.hist) == ['nap 0', 'nap 1', 'nap 2']
    assert sorted(p.did('start')) == [('nap', k) for k in range(3)], p.log   # each ran once
    accepted(sim, model)

# ================================================================ 2. the same history and requests as without

@SETUPS
@MODELS
async def test_same_history_and_requests_as_without_early_start(cls, tk, model):
    """The same script with and without `start_early` (a fresh Sim each, so the generated ids match), with tools
    whose later calls finish first (call i waits for call i+1 to end): the history, every request body, the answer
    and the finish order are the same; the results are in call order. In the early run all three tools had started
    by the time the whole reply came"""
    runs = {}
    for early in (False, True):
        with Sim() as s:
            p = Probe(tk)
            p.gate = chain(p)
            s.script(Reply(text='Napping.', calls=naps(3), pace=PACE), Reply(text='Rested.'))
            chat = mk(cls, s, model, tools=[p.tool()], start_early=early)
            at_reply = {}
            async def cb(o):
                if isinstance(o, ModelResponse) and not at_reply:
                    at_reply['started'] = await until(lambda: all(p.started('nap', k) for k in range(3)), HANG if early else 0)
            out = await drive(chat, 'Nap three times.', cb)
            accepted(s, model)
            assert at_reply['started'] is early
            runs[early] = dict(hist=copy.deepcopy(chat.hist), bodies=copy.deepcopy(s.bodies), answer=text(out[-1]),
                               ends=p.did('end'))
    assert runs[True]['ends'] == [('nap', 2), ('nap', 1), ('nap', 0)], runs[True]['ends']
    assert tool_texts(runs[True]['hist']) == ['nap 0', 'nap 1', 'nap 2']
    assert runs[True]['hist'] == runs[False]['hist']
    assert len(runs[True]['bodies']) == len(runs[False]['bodies']) == 2
    for a,b in zip(runs[True]['bodies'], runs[False]['bodies']): assert a == b
    assert runs[True] == runs[False]

# ================================================================ 3. opt in per tool, per chat, per call

@SETUPS
@MODELS
@pytest.mark.parametrize('where', ['tool', 'chat', 'call'])
async def test_opt_in_per_tool_chat_or_call(sim, cls, tk, model, where):
    """`nap` marked `@start_early` (where='tool'), `Chat(start_early=True)`, or `start_early=True` on the first call
    only. A reply calls nap, peek (never marked), nap: at call 2's start nap 0 has started; peek 1 has too unless only
    nap is marked. A second call without the option starts early again per tool and per chat, not per call; a third
    with `start_early=False` on the call starts only the marked tool early"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=where == 'tool'), p.tool('peek')],
              **({'start_early': True} if where == 'chat' else {}))
    calls = [Call('nap', {'i': 0}), Call('peek', {'i': 1}), Call('nap', {'i': 2})]
    async def one(n, nap_early, peek_early, **kw):
        sim.reset(); p.log.clear(); p.evs.clear()
        sim.script(Reply(calls=calls, pace=PACE), Reply(text=f'Done {n}.'))
        seen = {}
        async def cb(o):
            if call_begins(o, 2):
                seen['nap'] = await until(lambda: p.started('nap', 0), HANG if nap_early else NOT)
                seen['peek'] = await until(lambda: p.started('peek', 1), HANG if peek_early else NOT)
        out = await drive(chat, f'Go {n}.', cb, **kw)
        assert (seen['nap'], seen['peek']) == (nap_early, peek_early), (n, seen)
        assert text(out[-1]) == f'Done {n}.'
        assert tool_texts(chat.hist)[-3:] == ['nap 0', 'peek 1', 'nap 2']
        assert sorted(p.did('start')) == [('nap', 0), ('nap', 2), ('peek', 1)]
        accepted(sim, model)
    await one(1, True, where != 'tool', **({'start_early': True} if where == 'call' else {}))
    await one(2, where != 'call', where == 'chat')
    await one(3, where == 'tool', False, start_early=False)

# ================================================================ 4. never early

@SETUPS
@MODELS
async def test_needs_approval_tool_never_starts_early(sim, cls, tk, model):
    """On a `start_early` chat a tool marked `needs_approval` doesn't start while the reply streams, nor before the
    app approves it; approved (`resume`), it runs once"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('guard', approval=True)], start_early=True)
    sim.script(Reply(calls=naps(2, 'guard'), pace=PACE))
    seen = {}
    async def cb(o):
        if isinstance(o, ModelResponse): seen['reply'] = await until(lambda: p.did('start'), NOT)
    out = await drive(chat, 'Guard twice.', cb)
    assert isinstance(out[-1], Approval), out[-1]
    assert seen['reply'] is False and p.log == [], p.log
    assert not await until(lambda: p.log, NOT), p.log   # nor after the call paused
    sim.reset(); sim.script(Reply(text='Guarded.'))
    r = await resume(chat, {i: True for i in chat.awaiting.waiting})
    assert text(r) == 'Guarded.'
    assert tool_texts(chat.hist) == ['guard 0', 'guard 1']
    assert sorted(p.did('start')) == [('guard', 0), ('guard', 1)]
    accepted(sim, model)

@SETUPS
@MODELS
async def test_tool_beside_one_that_waits_for_approval_runs_once(sim, cls, tk, model):
    """A reply calls `nap` (start_early) and then `guard` (needs_approval): the round pauses for the app. As without
    early start, `nap` runs once in all: its result then is the one in the history after `resume`. (Started early,
    and its reply paused, it must not run a second time when the round goes on.) Fails today: the early run is
    dropped when the round pauses (`drop_early`), and `resume` runs nap again"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=True), p.tool('guard', approval=True)])
    sim.script(Reply(calls=[Call('nap', {'i': 0}), Call('guard', {'i': 1})], pace=PACE))
    out = await drive(chat, 'Nap and guard.')
    assert isinstance(out[-1], Approval), out[-1]
    await until(lambda: False, NOT)   # let an early nap (if any) run or be cancelled
    sim.reset(); sim.script(Reply(text='Done.'))
    r = await resume(chat, {chat.awaiting.waiting[0]: True})
    assert text(r) == 'Done.'
    assert tool_texts(chat.hist) == ['nap 0', 'guard 1']
    accepted(sim, model)
    n = p.did('start').count(('nap', 0))
    assert n == 1, f'nap ran {n} times for one call of it (started early for the paused reply, then again on resume): {p.log}'

@SETUPS
@MODELS
async def test_chat_with_approve_never_starts_early(sim, cls, tk, model):
    "A chat with `approve=` (here approving nothing: no call waits) starts nothing early, even with start_early"
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=True)], start_early=True, approve=lambda name, args: False)
    sim.script(Reply(calls=naps(3), pace=PACE), Reply(text='Rested.'))
    seen = {}
    async def cb(o):
        if call_begins(o, 2): seen['0'] = await until(lambda: p.started('nap', 0), NOT)
    out = await drive(chat, 'Nap three times.', cb)
    assert seen['0'] is False
    assert text(out[-1]) == 'Rested.' and tool_texts(chat.hist) == ['nap 0', 'nap 1', 'nap 2']
    accepted(sim, model)

@SETUPS
@MODELS
async def test_non_streamed_call_does_not_stream_inside(sim, cls, tk, model):
    "A call that isn't streamed, on a start_early chat with a marked tool: its requests are not streamed; tools run once"
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=True)], start_early=True)
    sim.script(Reply(calls=naps(3)), Reply(text='Rested.'))
    assert text(await ask(chat, 'Nap three times.')) == 'Rested.'
    assert [b.get('stream', False) for b in sim.bodies] == [False, False]
    assert tool_texts(chat.hist) == ['nap 0', 'nap 1', 'nap 2']
    assert sorted(p.did('start')) == [('nap', k) for k in range(3)]
    accepted(sim, model)

@SETUPS
@MODELS
async def test_structured_call_starts_nothing_early(sim, cls, tk, model):
    """`structured` (streamed) on a start_early chat whose tool `nap` is marked, asking for an object made by a function
    also named `nap`: the object is made once, by that function; the chat's `nap` never runs"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=True)], start_early=True)
    made = []
    def nap(i:int,      # which call this is
            pad:str=''  # ignored
           )->str:
        "Take a short nap"
        made.append(i); return f'made {i}'
    sim.script(Reply(calls=[Call('nap', {'i': 7})], pace=PACE))
    if isinstance(chat, AsyncChat): r = await chat.structured('Make one.', nap, stream=True)
    else: r = await asyncio.to_thread(sync_call, lambda: chat.structured('Make one.', nap, stream=True))
    assert r == 'made 7' and made == [7]
    assert sim.bodies[0].get('stream') is True
    assert not await until(lambda: p.log, NOT), p.log
    accepted(sim, model)

@SETUPS
@MODELS
async def test_last_round_calls_never_start(sim, cls, tk, model):
    """`max_tool_rounds=1`: the second reply's calls (the model calling tools anyway in the final round) never run,
    early or not: they are answered as not run"""
    p = Probe(tk)
    chat = mk(cls, sim, model, tools=[p.tool('nap', mark=True)], start_early=True)
    sim.script(Reply(calls=naps(1), pace=PACE), Reply(calls=[Call('nap', {'i': k}) for k in (1, 2)], pace=PACE))
    await drive(chat, 'Nap.', max_tool_rounds=1)
    assert not await until(lambda: p.started('nap', 1) or p.started('nap', 2), NOT), p.log
    assert p.did('start') == [('nap', 0)]
    assert tool_texts(chat.hist)[0] == 'nap 0' and all(t.startswith('Error: not run') for t in tool_texts(chat.hist)[1:])
    assert final(sim.bodies[1])
    await next_call_accepted(sim, chat, model)

# ================================================================ 5. the stream breaks after tools started

CUT = {'openai': 9, 'anthropic': 11}   # events through call 1's last argument piece (openai: role chunk + 4 a call)

@SETUPS
@MODELS
async def test_stream_breaks_after_tools_started(sim, cls, tk, model):
    """The connection drops after calls 0 and 1 are whole (call 0's tool seen started): the call raises; the reply is
    not in the history, which stays a valid transcript; async tools started early are cancelled (CancelledError), a
    sync tool finishes unheard; the next call is accepted and carries no trace of the broken reply"""
    p = Probe(tk); p.gate = hold(p)
    chat = mk(cls, sim, model, tools=[p.tool('nap')], start_early=True)
    sim.script(Fault(cut_after=CUT[fmt(model)], then=Reply(calls=naps(3), pace=PACE)))
    seen = {}
    async def cb(o):
        if call_begins(o, 1): seen['0'] = await until(lambda: p.started('nap', 0), HANG)
    with pytest.raises(litellm.exceptions.MidStreamFallbackError): await drive(chat, 'Nap three times.', cb)   # litellm's word for it
    assert seen['0'] is True
    assert roles(chat.hist) == ['user'], chat.hist
    if tk == 'async':
        assert await until(lambda: ('nap', 0) in p.did('cancelled'), HANG), p.log
    p.release.set()
    if tk == 'sync': assert await until(lambda: p.ended('nap', 0), HANG), p.log
    else: assert not await until(lambda: p.did('end'), NOT), p.log
    assert roles(chat.hist) == ['user'], chat.hist   # a tool that finished later is unheard
    assert not p.started('nap', 2)
    body = await next_call_accepted(sim, chat, model)
    assert tool_use_ids(body) == []
    assert roles(chat.hist) == ['user', 'assistant']

# ================================================================ 6. the caller cancels, breaks out, closes

async def check_dropped_after_nap_0(sim, chat, model, p, tk):
    """After a reply was dropped once call 0's tool had started: the history is the question alone; an async tool was
    cancelled, a sync one finishes unheard; call 2 never started; the next call is accepted"""
    assert roles(chat.hist) == ['user'], chat.hist
    if tk == 'async': assert await until(lambda: ('nap', 0) in p.did('cancelled'), HANG), p.log
    p.release.set()
    if tk == 'sync': assert await until(lambda: p.ended('nap', 0), HANG), p.log   # it finishes, unheard
    assert roles(chat.hist) == ['user'], chat.hist
    assert not p.started('nap', 2)
    assert tool_use_ids(await next_call_accepted(sim, chat, model)) == []

@ASYNC_SETUPS
@MODELS
async def test_caller_cancels_the_task_after_tools_started(sim, cls, tk, model):
    """The task reading the stream is cancelled once call 0's tool has started (at call 2's start): the task ends
    cancelled; no reply in the history; async tools started early are cancelled; the next call is accepted"""
    p = Probe(tk); p.gate = hold(p)
    chat = mk(cls, sim, model, tools=[p.tool('nap')], start_early=True)
    sim.script(Reply(calls=naps(3), pace=0.05), Reply(text='never'))
    ready = asyncio.Event()
    async def cb(o):
        if call_begins(o, 2):
            assert await until(lambda: p.started('nap', 0), HANG)
            ready.set()
    task = asyncio.ensure_future(drive(chat, 'Nap three times.', cb))
    await asyncio.wait_for(ready.wait(), HANG)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    await check_dropped_after_nap_0(sim, chat, model, p, tk)

@SETUPS
@MODELS
@pytest.mark.parametrize('leave', ['break', 'close'])
async def test_caller_leaves_the_stream_after_tools_started(sim, cls, tk, model, leave):
    """The caller breaks out of the stream (and drops it), or closes it, at call 2's start, once call 0's tool has
    started: no reply in the history; async tools started early are cancelled; the next call is accepted"""
    p = Probe(tk); p.gate = hold(p)
    chat = mk(cls, sim, model, tools=[p.tool('nap')], start_early=True)
    sim.script(Reply(calls=naps(3), pace=PACE), Reply(text='never'))
    async def cb(o):
        if call_begins(o, 2):
            assert await until(lambda: p.started('nap', 0), HANG)
            return 'stop'
    out = await drive(chat, 'Nap three times.', cb, leave=leave)
    assert not any(isinstance(o, ModelResponse) for o in out)
    await check_dropped_after_nap_0(sim, chat, model, p, tk)

# ================================================================ 7. a spending cap stops the stream

@SETUPS
@MODELS
async def test_spending_cap_stops_the_stream_after_a_tool_started(sim, cls, tk, model):
    """Each call's arguments are ~105 tokens; the call's `token_budget` is the request's input plus 160: call 0 is
    whole (and started) under the cap, and the estimate reaches it during call 1's arguments. `BudgetExceeded`; the
    early task is cancelled; call 1 never started; no reply in the history; the next call (no cap) is accepted"""
    p = Probe(tk); p.gate = hold(p)
    chat = mk(cls, sim, model, tools=[p.tool('nap')], start_early=True)
    msg = 'Nap three times.'
    cap = litellm.token_counter(model=model, messages=[u(msg)]) + 160
    sim.script(Reply(calls=naps(3, pad=400), pace=PACE))
    seen = {}
    async def cb(o):
        if call_begins(o, 1): seen['0'] = await until(lambda: p.started('nap', 0), HANG)
    with pytest.raises(BudgetExceeded): await drive(chat, msg, cb, token_budget=cap)
    assert seen['0'] is True
    assert roles(chat.hist) == ['user'], chat.hist
    if tk == 'async': assert await until(lambda: ('nap', 0) in p.did('cancelled'), HANG), p.log
    p.release.set()
    if tk == 'sync': assert await until(lambda: p.ended('nap', 0), HANG), p.log   # it finishes, unheard
    assert roles(chat.hist) == ['user'], chat.hist
    assert p.did('start') == [('nap', 0)], p.log
    assert tool_use_ids(await next_call_accepted(sim, chat, model)) == []

# ================================================================ 8. a store

@SETUPS
@MODELS
async def test_store_reloads_to_the_same_history(sim, cls, tk, model, tmp_path):
    """`store=` on a start_early chat: while the reply streams (tools started) the store holds a valid transcript
    without it; after the early round it reloads (`load`) to the chat's history, and the loaded chat goes on"""
    path = tmp_path/'chat.json'
    p = Probe(tk); p.gate = chain(p)
    nap = p.tool('nap')
    chat = mk(cls, sim, model, tools=[nap], start_early=True, store=path)
    sim.script(Reply(text='Napping.', calls=naps(3), pace=PACE), Reply(text='Rested.'))
    mid = {}
    async def cb(o):
        if call_begins(o, 2):
            assert await until(lambda: p.started('nap', 0), HANG)
            mid['hist'] = cls.load(path, tools=[nap]).hist
    out = await drive(chat, 'Nap three times.', cb)
    assert text(out[-1]) == 'Rested.'
    assert roles(mid['hist']) == ['user'], mid['hist']
    back = cls.load(path, tools=[nap], api_key='sk-test', api_base=base(sim, model))
    assert back.hist == chat.hist
    assert tool_texts(back.hist) == ['nap 0', 'nap 1', 'nap 2']
    assert back.start_early is True
    await next_call_accepted(sim, back, model)
