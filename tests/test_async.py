"""`AsyncChat` against `Chat` and under concurrency: parity of histories and request bodies, tools running at
once, cancellation and abandoned streams leaving a valid transcript, many chats at once, every round streamed.
Everything runs against `lisette.testing.Sim` on loopback."""
import asyncio, gc, threading, time
import pytest
from lisette import Chat, delta_text, CANCELLED, NOT_RUN   # first: it keeps litellm's import offline and quiet
from litellm import ModelResponse, ModelResponseStream
from lisette import AsyncChat, StreamAbandoned
from lisette.testing import Sim, Reply, Call, Fault, check_anthropic, check_openai

from helpers import *

def resp_view(res:ModelResponse):
    "What matters in a full response: text, tool calls, finish reason (not its id or timestamps)"
    msg, ch = res.choices[0].message, res.choices[0]
    return ('response', msg.content, [(tc.id, tc.function.name, tc.function.arguments) for tc in msg.tool_calls or []],
            ch.finish_reason)

def view(o):
    "What matters in one item of a stream or of `return_all`"
    if isinstance(o, ModelResponseStream): return ('chunk', delta_text(o))
    if isinstance(o, ModelResponse): return resp_view(o)
    assert isinstance(o, dict), o
    return ('tool', dict(o))

# ---------------------------------------------------------------- tools

def explode(why:str # what went wrong
           )->str:
    "A tool that always fails"
    raise ValueError(f'boom: {why}')

# ---------------------------------------------------------------- 1. parity of Chat and AsyncChat

# Each scenario: a script factory (fresh `Reply`s, with fixed call ids so both runs match), the call's kwargs,
# and what the history must look like (roles, tool result texts) whatever the class.
SCENARIOS = {
    'plain': dict(
        script=lambda: [Reply(text='Two and two make four.', chunks=4)],
        kw={}, roles=['user', 'assistant'], tools=[]),
    'one_round': dict(
        script=lambda: [Reply(text='Let me add.', calls=[Call('add', {'a': 1, 'b': 2}, id='call_1')], chunks=2),
                        Reply(text='1 + 2 is 3.', chunks=3)],
        kw={}, roles=['user', 'assistant', 'tool', 'assistant'], tools=['3']),
    'three_rounds': dict(
        script=lambda: [Reply(calls=[Call('add', {'a': 1, 'b': 1}, id='call_r0')]),
                        Reply(text='Two more.', calls=[Call('add', {'a': 2, 'b': 2}, id='call_r1a'),
                                                       Call('add', {'a': 3, 'b': 3}, id='call_r1b')]),
                        Reply(calls=[Call('add', {'a': 4, 'b': 4}, id='call_r2')]),
                        Reply(text='2, 4, 6 and 8.', chunks=3)],
        kw={}, roles=['user', 'assistant', 'tool', 'assistant', 'tool', 'tool', 'assistant', 'tool', 'assistant'],
        tools=['2', '4', '6', '8']),
    'rounds_exhausted': dict(
        script=lambda: [Reply(calls=[Call('add', {'a': i, 'b': 1}, id=f'call_x{i}')]) for i in range(3)],
        kw=dict(max_tool_rounds=2, final_prompt='Summarise what you found.'),
        roles=['user', 'assistant', 'tool', 'assistant', 'tool', 'user', 'assistant', 'tool'],
        tools=['1', '2', NOT_RUN]),
    'failing_tool': dict(
        script=lambda: [Reply(calls=[Call('explode', {'why': 'no reason'}, id='call_f1'),
                                     Call('add', {'a': 5, 'b': 5}, id='call_f2')]),
                        Reply(text='One of them failed.')],
        kw={}, roles=['user', 'assistant', 'tool', 'tool', 'assistant'],
        tools=['Error: ValueError: boom: no reason', '10']),
}

def run_sync(sim, model, sc, mode):
    sim.reset(); sim.script(*sc['script']())
    chat = mk(Chat, sim, model, tools=[add, explode])
    if mode == 'stream': out = [view(o) for o in chat('Please work it out.', stream=True, **sc['kw'])]
    elif mode == 'return_all': out = [view(o) for o in chat('Please work it out.', return_all=True, **sc['kw'])]
    else: out = [view(chat('Please work it out.', **sc['kw']))]
    return chat.hist, list(sim.bodies), out, [r.status for r in sim.requests]

async def run_async(sim, model, sc, mode):
    sim.reset(); sim.script(*sc['script']())
    chat = mk(AsyncChat, sim, model, tools=[add, explode])
    if mode == 'stream': out = [view(o) async for o in await chat('Please work it out.', stream=True, **sc['kw'])]
    elif mode == 'return_all': out = [view(o) async for o in await chat('Please work it out.', return_all=True, **sc['kw'])]
    else: out = [view(await chat('Please work it out.', **sc['kw']))]
    return chat.hist, list(sim.bodies), out, [r.status for r in sim.requests]

@MODELS
@pytest.mark.parametrize('mode', ['plain', 'stream', 'return_all'])
@pytest.mark.parametrize('name', list(SCENARIOS))
async def test_parity(sim, model, mode, name):
    "The same scripted conversation through `Chat` and `AsyncChat`: same history, same bodies, same responses"
    sc = SCENARIOS[name]
    # the sync chat runs in a thread so it can't lean on (or block) this event loop
    s_hist, s_bodies, s_out, s_status = await asyncio.to_thread(run_sync, sim, model, sc, mode)
    a_hist, a_bodies, a_out, a_status = await run_async(sim, model, sc, mode)

    # what the history must be, for both
    for hist in (s_hist, a_hist):
        assert roles(hist) == sc['roles']
        assert tool_texts(hist) == sc['tools']
        assert hist[0] == u('Please work it out.')
    n = len(sc['script']())
    assert s_status == a_status == [200]*n
    assert len(s_bodies) == len(a_bodies) == n

    # parity
    assert a_hist == s_hist
    assert a_bodies == s_bodies
    assert a_out == s_out

    # the final response is the scenario's last reply
    last = a_out[-1]
    assert last[0] == 'response'
    if name == 'rounds_exhausted':
        assert last[2] == [('call_x2', 'add', '{"a": 2, "b": 1}')]
        assert ['tool_choice' in b for b in a_bodies] == [False, False, True]
        assert 'Summarise what you found.' in body_texts(a_bodies[-1])
    else:
        assert last[1] == sc['script']()[-1].text and last[2] == []
    if mode == 'stream':
        assert all(b['stream'] is True for b in a_bodies)
        chunks = [o for o in a_out if o[0] == 'chunk']
        assert len(chunks) >= n   # every round streamed
    for b in a_bodies: assert check(model)(b) == []

# ---------------------------------------------------------------- 2. tools run concurrently

@MODELS
async def test_async_tools_overlap(sim, model):
    "The calls of one reply to an async tool run at once"
    spans = {}
    async def anap(s:float, # seconds
                   tag:str  # a name for this call
                  )->str:
        "Sleep s seconds, asynchronously"
        t0 = time.monotonic()
        await asyncio.sleep(s)
        spans[tag] = (t0, time.monotonic())
        return f'{tag} rested'
    sim.script(Reply(calls=[Call('anap', {'s': 0.3, 'tag': f't{i}'}, id=f'call_{i}') for i in range(3)]), Reply(text='Rested.'))
    chat = mk(AsyncChat, sim, model, tools=[anap])
    assert text(await chat('Rest three times.')) == 'Rested.'
    assert len(spans) == 3
    assert max(s for s,e in spans.values()) < min(e for s,e in spans.values()), spans  # all overlap
    assert tool_texts(chat.hist) == ['t0 rested', 't1 rested', 't2 rested']   # in call order

@MODELS
async def test_sync_tools_overlap_and_loop_ticks(sim, model):
    """The calls of one reply to a sync tool run at once, in threads, and the event loop keeps ticking meanwhile.
    No clock: each call blocks its thread until the loop has ticked 5 times with all three running, so the reply
    comes back only if they ran at once and the loop was free (`HANG` s only guards against a hang)"""
    running, ticked = [], threading.Event()
    def nap(tag:str # a name for this call
           )->str:
        "Block until the event loop has ticked with all three calls running"
        running.append(tag)
        return f'{tag} rested' if ticked.wait(HANG) else f'{tag} never saw the loop tick'
    async def ticker():
        n = 0
        while not ticked.is_set():
            await asyncio.sleep(0.001)
            if len(running) == 3: n += 1
            if n == 5: ticked.set()
    sim.script(Reply(calls=[Call('nap', {'tag': f't{i}'}, id=f'call_{i}') for i in range(3)]), Reply(text='Rested.'))
    chat = mk(AsyncChat, sim, model, tools=[nap])
    tk = asyncio.create_task(ticker())
    try: assert text(await asyncio.wait_for(chat('Rest three times.'), 2*HANG)) == 'Rested.'
    finally: ticked.set(); tk.cancel()
    assert tool_texts(chat.hist) == ['t0 rested', 't1 rested', 't2 rested']

# ---------------------------------------------------------------- 3. cancellation and abandonment

@MODELS
@pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
async def test_cancel_during_request(sim, model, stream):
    "Cancelled while the request is in flight: the user's message stays, nothing else; the next call works"
    sim.script(Fault(delay=60, then=Reply(text='Too late.')), Reply(text='Back again.'))
    chat = mk(AsyncChat, sim, model)
    async def call():
        if stream: return [o async for o in await chat('Hello?', stream=True)]
        return await chat('Hello?')
    task = asyncio.create_task(call())
    await wait_until(lambda: len(sim.requests) == 1)   # the request reached the server and waits there
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert chat.hist == [u('Hello?')]

    res = await asyncio.wait_for(chat('Still there?'), HANG)
    assert sim.requests[0].status is None   # back while the cancelled request still waited to be answered
    assert text(res) == 'Back again.'
    assert chat.hist == [u('Hello?\n\nStill there?'), a('Back again.')]   # the unanswered message and the new one, merged
    assert len(sim.requests) == 2
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['Hello?\n\nStill there?']

@MODELS
async def test_cancel_during_second_round_request(sim, model):
    "Cancelled while round 2's request is in flight: round 1 stays whole; `chat()` with no message goes on from it"
    sim.script(Reply(calls=[Call('add', {'a': 2, 'b': 3}, id='call_1')]), Fault(delay=3, then=Reply(text='Too late.')),
               Reply(text='It is 5.'))
    chat = mk(AsyncChat, sim, model, tools=[add])
    task = asyncio.create_task(chat('2+3?'))
    await wait_until(lambda: len(sim.requests) == 2)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert roles(chat.hist) == ['user', 'assistant', 'tool'] and tool_texts(chat.hist) == ['5']
    assert text(await asyncio.wait_for(chat(), 5)) == 'It is 5.'
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant'] and chat.hist[-1] == a('It is 5.')
    accepted(sim, model)
    assert tool_use_ids(sim.bodies[-1]) == ['call_1']

def _slow_tools(kind, started, release, log):
    "A quick tool and a slow one (async: sleeps long; sync: blocks its thread)"
    def quick(x:int # a number
             )->str:
        "Answer at once"
        return f'quick {x}'
    if kind == 'async':
        async def slow(s:float # seconds
                      )->str:
            "Sleep for a long time"
            started.set()
            try: await asyncio.sleep(s)
            except asyncio.CancelledError:
                log.append('cancelled')
                raise
            return 'slept'
    else:
        def slow(s:float # seconds
                )->str:
            "Block for a long time"
            started.set()
            release.wait(s)   # a blocking sleep that the test can cut short at the end
            log.append('finished')
            return 'slept'
    return [quick, slow]

@MODELS
@pytest.mark.parametrize('kind', ['async', 'sync'])
@pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
async def test_cancel_during_tool(sim, model, kind, stream):
    "Cancelled while a tool runs: the round is kept whole, finished tools with their results, the rest cancelled"
    started, release, log = threading.Event(), threading.Event(), []
    sim.script(Reply(text='Working.', calls=[Call('quick', {'x': 7}, id='call_q'), Call('slow', {'s': 5}, id='call_s')]),
               Reply(text='Carrying on.'))
    chat = mk(AsyncChat, sim, model, tools=_slow_tools(kind, started, release, log))
    seen = []
    async def call():
        if stream:
            async for o in await chat('Do both.', stream=True): seen.append(o)
        else: return await chat('Do both.')
    task = asyncio.create_task(call())
    try:
        await wait_until(started.is_set)
        await asyncio.sleep(0.1)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=HANG)   # the slow tool holds until `release`, set only at the end
        assert done, 'the cancel waited for the slow tool'
        with pytest.raises(asyncio.CancelledError): task.result()
        assert len(sim.requests) == 1
        h = chat.hist
        assert roles(h) == ['user', 'assistant', 'tool', 'tool']
        assert h[0] == u('Do both.')
        assert h[1]['content'] == 'Working.'
        assert [tc['id'] for tc in h[1]['tool_calls']] == ['call_q', 'call_s']
        assert [(m['tool_call_id'], m['name'], m['content']) for m in h[2:]] == [
            ('call_q', 'quick', 'quick 7'), ('call_s', 'slow', CANCELLED)]
        if kind == 'async':
            await asyncio.sleep(0)
            assert log == ['cancelled']   # the running tool task was cancelled too
        if stream: assert not any(isinstance(o, dict) for o in seen)   # the round was cut before its results were read

        res = await asyncio.wait_for(chat('Go on.'), 5)
        assert text(res) == 'Carrying on.'
        assert roles(chat.hist) == ['user', 'assistant', 'tool', 'tool', 'user', 'assistant']
        assert chat.hist[-2:] == [u('Go on.'), a('Carrying on.')]
        accepted(sim, model)
        b = sim.bodies[-1]
        assert tool_use_ids(b) == ['call_q', 'call_s']
        assert CANCELLED in body_texts(b) and 'Go on.' in body_texts(b)
    finally: release.set()

@MODELS
@pytest.mark.parametrize('keep', [True, False], ids=['kept', 'dropped'])
async def test_abandon_stream_after_first_chunk(sim, model, keep):
    "A stream left after its first chunk: the next call goes ahead after the grace, the half reply is dropped"
    sim.script(Reply(text='A long story told in very many little chunks', chunks=8), Reply(text='OK.'))
    chat = mk(AsyncChat, sim, model)
    chat.abandon_after = 0.2
    g = await chat('Tell me a story.', stream=True)
    async for o in g: break
    assert isinstance(o, ModelResponseStream)
    if not keep:
        del g, o
        gc.collect()
    res = await asyncio.wait_for(chat('Never mind.'), 5)
    assert text(res) == 'OK.'
    assert chat.hist == [u('Tell me a story.\n\nNever mind.'), a('OK.')]
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['Tell me a story.\n\nNever mind.']
    if keep:
        with pytest.raises(StreamAbandoned): await g.__anext__()
        with pytest.raises(StreamAbandoned):
            async for o in g: pass
        assert chat.hist == [u('Tell me a story.\n\nNever mind.'), a('OK.')]   # reading it changed nothing

@MODELS
async def test_closed_stream_frees_chat_at_once(sim, model):
    "A stream closed with `aclose()` ends its call: the next call doesn't wait for the grace"
    sim.script(Reply(text='A long story told in very many little chunks', chunks=8), Reply(text='OK.'))
    chat = mk(AsyncChat, sim, model)
    chat.abandon_after = 3600   # an hour: only closing the stream can free the chat within `HANG`
    g = await chat('Tell me a story.', stream=True)
    async for o in g: break
    await g.aclose()
    assert text(await asyncio.wait_for(chat('Never mind.'), HANG)) == 'OK.'
    assert chat.hist == [u('Tell me a story.\n\nNever mind.'), a('OK.')]
    accepted(sim, model)

@MODELS
async def test_dropped_stream_frees_chat_at_once(sim, model):
    "A stream dropped by its reader ends its call (01_async: 'part of its call until ... dropped'): no waiting for the grace"
    sim.script(Reply(text='A long story told in very many little chunks', chunks=8), Reply(text='OK.'))
    chat = mk(AsyncChat, sim, model)
    chat.abandon_after = 3600   # an hour: only dropping the stream can free the chat within `HANG`
    async def peek():
        async for o in await chat('Tell me a story.', stream=True): return o
    assert isinstance(await peek(), ModelResponseStream)   # the stream is unreachable from here on
    gc.collect(); await asyncio.sleep(0.05)
    assert text(await asyncio.wait_for(chat('Never mind.'), HANG)) == 'OK.', 'the next call waited for the grace'
    assert chat.hist == [u('Tell me a story.\n\nNever mind.'), a('OK.')]
    accepted(sim, model)

@MODELS
@pytest.mark.parametrize('stop_at', ['response', 'tool_result'])
async def test_abandon_stream_in_tool_round(sim, model, stop_at):
    """A stream left right after its tool-call response drops that reply (its tools never ran); left after the tool
    result, the whole round is kept"""
    add2, ran = recording_add()
    sim.script(Reply(text='Let me add.', calls=[Call('add2', {'a': 1, 'b': 2}, id='call_1')], chunks=2),
               Reply(text='OK, something else.'))
    chat = mk(AsyncChat, sim, model, tools=[add2])
    chat.abandon_after = 0.2
    g = await chat('What is 1+2?', stream=True)
    async for o in g:
        if stop_at == 'response' and isinstance(o, ModelResponse): break
        if stop_at == 'tool_result' and isinstance(o, dict): break
    if stop_at == 'response':
        assert [tc.function.name for tc in o.choices[0].message.tool_calls] == ['add2']
        assert ran == [] and chat.hist == [u('What is 1+2?')]
    else: assert o['content'] == '3'
    res = await asyncio.wait_for(chat('Something else.'), 5)
    assert text(res) == 'OK, something else.'
    if stop_at == 'response':
        assert ran == []
        assert chat.hist == [u('What is 1+2?\n\nSomething else.'), a('OK, something else.')]
        assert tool_use_ids(sim.bodies[-1]) == []
    else:
        assert ran == [(1, 2)]
        assert roles(chat.hist) == ['user', 'assistant', 'tool', 'user', 'assistant']
        assert tool_texts(chat.hist) == ['3'] and chat.hist[1]['content'] == 'Let me add.'
        assert tool_use_ids(sim.bodies[-1]) == ['call_1']
    accepted(sim, model)
    assert len(sim.requests) == 2   # round 2 of the abandoned call was never asked for
    with pytest.raises(StreamAbandoned): await g.__anext__()

@MODELS
async def test_stream_cut_by_server(sim, model):
    "A stream the server cuts off: an error for the reader, the half reply dropped, `chat()` asks again"
    sim.script(Fault(cut_after=4, then=Reply(text='This reply will never finish arriving at all', chunks=10)),
               Reply(text='Here it is, whole.'))
    chat = mk(AsyncChat, sim, model)
    got = []
    with pytest.raises(Exception) as ei:
        async for o in await chat('Tell me a story.', stream=True): got.append(o)
    assert not isinstance(ei.value, StreamAbandoned)
    assert any(isinstance(o, ModelResponseStream) for o in got) and not any(isinstance(o, ModelResponse) for o in got)
    assert chat.hist == [u('Tell me a story.')]
    assert len(sim.requests) == 1
    res = await asyncio.wait_for(chat(), 5)
    assert text(res) == 'Here it is, whole.'
    assert chat.hist == [u('Tell me a story.'), a('Here it is, whole.')]
    accepted(sim, model)

@MODELS
async def test_stream_cut_in_second_round(sim, model):
    "Cut in round 2 of a tool loop: round 1 (reply and result) stays whole, round 2's half reply is dropped"
    sim.script(Reply(calls=[Call('add', {'a': 2, 'b': 3}, id='call_1')]),
               Fault(cut_after=4, then=Reply(text='Two and three make five, as you can see', chunks=10)),
               Reply(text='It is 5.'))
    chat = mk(AsyncChat, sim, model, tools=[add])
    with pytest.raises(Exception):
        async for o in await chat('2+3?', stream=True): pass
    assert roles(chat.hist) == ['user', 'assistant', 'tool'] and tool_texts(chat.hist) == ['5']
    assert text(await asyncio.wait_for(chat(), 5)) == 'It is 5.'
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant']
    accepted(sim, model)

def _echo(body):
    "A reply naming the last user text of the request, so each call can tell it got its own answer"
    return Reply(text=f'echo: {body_texts(body)[-1]}', delay=0.05)

def echo_chat(sim, model, abandon_after=None)->AsyncChat:
    "An `AsyncChat` on `sim` answering with `_echo`; `abandon_after`, if given, the grace an unread stream gets"
    sim.default = _echo
    chat = mk(AsyncChat, sim, model)
    if abandon_after is not None: chat.abandon_after = abandon_after
    return chat

@MODELS
async def test_two_calls_at_once_dont_interleave(sim, model):
    "Two calls at once on one chat: one after the other, each with its own answer"
    chat = echo_chat(sim, model, abandon_after=0.1)
    r1, r2 = await asyncio.wait_for(asyncio.gather(chat('first'), chat('second')), 10)
    assert (text(r1), text(r2)) == ('echo: first', 'echo: second')
    assert chat.hist == [u('first'), a('echo: first'), u('second'), a('echo: second')]
    assert [body_texts(b) for b in sim.bodies] == [['first'], ['first', 'echo: first', 'second']]
    accepted(sim, model)

@MODELS
async def test_two_streamed_calls_at_once(sim, model):
    "Two streamed calls at once, each read to the end by its own task: not interleaved"
    chat = echo_chat(sim, model, abandon_after=0.1)
    async def read(msg): return [o async for o in await chat(msg, stream=True)]
    o1, o2 = await asyncio.wait_for(asyncio.gather(read('first'), read('second')), 10)
    assert (text(o1[-1]), text(o2[-1])) == ('echo: first', 'echo: second')
    assert ''.join(delta_text(o) or '' for o in o2 if isinstance(o, ModelResponseStream)) == 'echo: second'
    assert chat.hist == [u('first'), a('echo: first'), u('second'), a('echo: second')]
    accepted(sim, model)

@MODELS
async def test_waiting_call_starts_when_the_first_ends(sim, model):
    "A call waiting for another starts when that one ends, not after `abandon_after` (an hour here)"
    chat = echo_chat(sim, model, abandon_after=3600)
    r1, r2 = await asyncio.wait_for(asyncio.gather(chat('first'), chat('second')), HANG)
    assert chat.hist == [u('first'), a('echo: first'), u('second'), a('echo: second')]

@MODELS
async def test_abandoned_stream_doesnt_block_calls_at_once(sim, model):
    """A stream left unread (but still referenced) while two more calls come at once: they go ahead after the grace,
    one at a time; reading the stream afterwards raises `StreamAbandoned`"""
    sim.script(Reply(text='A long story told in very many little chunks', chunks=8))
    chat = echo_chat(sim, model, abandon_after=0.2)
    g = await chat('Tell me a story.', stream=True)
    first = await g.__anext__()
    assert isinstance(first, ModelResponseStream)
    r1, r2 = await asyncio.wait_for(asyncio.gather(chat('first'), chat('second')), 10)
    first = 'Tell me a story.\n\nfirst'   # the abandoned call's message, unanswered, and the next one's, merged
    assert (text(r1), text(r2)) == (f'echo: {first}', 'echo: second')
    h = chat.hist
    assert h == [u(first), a(f'echo: {first}'), u('second'), a('echo: second')]
    for i in (-2, -1): accepted(sim, model, i)
    with pytest.raises(StreamAbandoned): await g.__anext__()
    assert len(chat.hist) == 4

@MODELS
@pytest.mark.parametrize('busy', ['in_flight', 'abandoned'])
async def test_waiting_calls_keep_their_order(sim, model, busy):
    """Calls that wait for a busy chat go in the order they were made ('a call waits for the one before it').
    in_flight: the chat answers a slow request (0.3 s); 'B' is called at 0 s, 'C' at 0.15 s.
    abandoned: a stream sits unread; 'B' and 'C' are called at once"""
    chat = echo_chat(sim, model, abandon_after=0.2)
    if busy == 'in_flight':
        sim.script(Reply(text='slow answer', delay=0.3))
        busy_task = asyncio.create_task(chat('A'))
        await wait_until(lambda: len(sim.requests) == 1)
        tb = asyncio.create_task(chat('B'))
        await asyncio.sleep(0.15)
        tc = asyncio.create_task(chat('C'))
        await asyncio.wait_for(asyncio.gather(busy_task, tb, tc), 10)
        head = [u('A'), a('slow answer')]
    else:
        sim.script(Reply(text='A long story told in very many little chunks', chunks=8))
        g = await chat('A', stream=True)
        await g.__anext__()
        await asyncio.wait_for(asyncio.gather(chat('B'), chat('C')), 10)
        head = []
    b = 'B' if head else 'A\n\nB'   # an abandoned call's unanswered message merges with the next one
    assert chat.hist == head + [u(b), a(f'echo: {b}'), u('C'), a('echo: C')]

# ---------------------------------------------------------------- 4. scale

@MODELS
async def test_hundred_chats_at_once(sim, model):
    "100 `AsyncChat`s under one gather each end with their own question and their own answer"
    sim.default = lambda body: Reply(text=f'echo: {body_texts(body)[-1]}')
    chats = [mk(AsyncChat, sim, model) for _ in range(100)]
    res = await asyncio.wait_for(asyncio.gather(*[c(f'question {i}') for i,c in enumerate(chats)]), 60)
    for i,(c,r) in enumerate(zip(chats, res)):
        assert text(r) == f'echo: question {i}'
        assert c.hist == [u(f'question {i}'), a(f'echo: question {i}')]
    assert len(sim.requests) == 100 and all(r.status == 200 and not r.rejected for r in sim.requests)

# ---------------------------------------------------------------- 5. every round streams, with the same kwargs

@MODELS
@pytest.mark.parametrize('cls', [AsyncChat, Chat], ids=['async', 'sync'])
async def test_every_round_streams_with_same_kwargs(sim, model, cls):
    "A streamed 2-round tool loop: both requests stream, carry temp, prefill and extra kwargs; chunks of both come through"
    sim.script(Reply(text=' let me add.', calls=[Call('add', {'a': 15, 'b': 23}, id='call_1')], chunks=3),
               Reply(text=' 15 + 23 is 38, as the tool says.', chunks=5))
    chat = mk(cls, sim, model, tools=[add])
    prefill = 'Sure,' if model == SONNET else ''   # OpenAI chat models take no prefill
    kw = dict(stream=True, temp=0.3, prefill=prefill, max_tokens=321)
    if cls is Chat: out = await asyncio.to_thread(lambda: list(chat('What is 15 + 23?', **kw)))
    else: out = [o async for o in await chat('What is 15 + 23?', **kw)]

    bodies = sim.bodies
    assert len(bodies) == 2
    assert [b['stream'] for b in bodies] == [True, True]
    assert [b['temperature'] for b in bodies] == [0.3, 0.3]
    assert [b['max_tokens'] for b in bodies] == [321, 321]
    assert ['tool_choice' in b for b in bodies] == [False, False]
    if model == SONNET:
        for b in bodies: assert body_texts(b)[-1] == 'Sure,' and b['messages'][-1]['role'] == 'assistant'
    else: assert [b['stream_options'] for b in bodies] == [{'include_usage': True}]*2
    for b in bodies: assert check(model)(b) == []

    kinds = [type(o).__name__ for o in out]
    assert [k for i,k in enumerate(kinds) if i == 0 or kinds[i-1] != k] == \
        ['ModelResponseStream', 'ModelResponse', 'dict', 'ModelResponseStream', 'ModelResponse']
    i1 = kinds.index('ModelResponse')
    r1 = [o for o in out[:i1] if isinstance(o, ModelResponseStream)]
    r2 = [o for o in out[kinds.index('dict'):] if isinstance(o, ModelResponseStream)]
    assert len(r1) >= 3 and len(r2) >= 5
    assert ''.join(delta_text(o) or '' for o in r1) == prefill + ' let me add.'
    assert ''.join(delta_text(o) or '' for o in r2) == prefill + ' 15 + 23 is 38, as the tool says.'
    assert text(out[i1]) == prefill + ' let me add.'
    assert text(out[-1]) == prefill + ' 15 + 23 is 38, as the tool says.'
    assert chat.hist[-1] == a(prefill + ' 15 + 23 is 38, as the tool says.')
    assert tool_texts(chat.hist) == ['38']
