"""Tool calls that wait for approval (issue 14, part 3): `needs_approval`, `Chat(approve=)`, `Approval`, `resume`.

For `Chat` and `AsyncChat`, both wire formats, streamed and not, against `lisette.testing.Sim` (real litellm provider
code over loopback HTTP, strict transcript checks). Each test asserts what the app sees (the `Approval`, the answer, the
exception), what ran (each tool records its calls), the history, and what reached the provider (the request bodies the
simulator captured). Written apart from the implementation, from the issue and the documented API."""
import asyncio, copy, gc, inspect, json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest
from lisette import Chat   # first: it keeps litellm's import offline and quiet
import litellm
from litellm import ModelResponse, ModelResponseStream
from lisette import AsyncChat, Approval, needs_approval, NOT_RUN
from lisette.testing import Reply, Call

from helpers import *

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])
STREAMS = pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(autouse=True)
def _collect_after():
    yield
    gc.collect(1)

# ---------------------------------------------------------------- tools that record what ran

def tools_for(cls):
    """`delete` (needs approval) and `add2` (doesn't), sync for `Chat` and async for `AsyncChat`, and the list of
    what each ran: ('delete', path) or ('add', a, b)"""
    ran = []
    if cls is AsyncChat:
        @needs_approval
        async def delete(path:str # the file to delete
                        )->str:
            "Delete a file"
            await asyncio.sleep(0)
            ran.append(('delete', path))
            return f'deleted {path}'
        async def add2(a:int, # the first number
                       b:int  # the second number
                      )->int:
            "Add two numbers"
            await asyncio.sleep(0)
            ran.append(('add', a, b))
            return a + b
    else:
        @needs_approval
        def delete(path:str # the file to delete
                  )->str:
            "Delete a file"
            ran.append(('delete', path))
            return f'deleted {path}'
        def add2(a:int, # the first number
                 b:int  # the second number
                )->int:
            "Add two numbers"
            ran.append(('add', a, b))
            return a + b
    return delete, add2, ran

def plain_tools(cls):
    "`remove` and `add2`, neither marked: which calls wait is up to `approve=`; and what ran"
    ran = []
    def remove(path:str # the file to remove
              )->str:
        "Remove a file"
        ran.append(('remove', path))
        return f'removed {path}'
    def add2(a:int, # the first number
             b:int  # the second number
            )->int:
        "Add two numbers"
        ran.append(('add', a, b))
        return a + b
    return remove, add2, ran

# ---------------------------------------------------------------- readers of request bodies

def body_results(body)->list:
    "(call id, text) of every tool result a request body carries, in order (either wire format)"
    out = []
    for m in body['messages']:
        if m.get('role') == 'tool':
            c = m['content']
            out.append((m['tool_call_id'], c if isinstance(c, str) else ''.join(p.get('text', '') for p in c)))
        elif isinstance(m.get('content'), list):
            for p in m['content']:
                if p.get('type') == 'tool_result':
                    c = p.get('content')
                    out.append((p['tool_use_id'], c if isinstance(c, str) else ''.join(q.get('text', '') for q in c or [])))
    return out

def body_args(body)->dict:
    "The arguments of every tool call a request body carries, by call id (either wire format)"
    out = {}
    for m in body['messages']:
        for tc in m.get('tool_calls') or []: out[tc['id']] = json.loads(tc['function']['arguments'])
        if isinstance(m.get('content'), list):
            for p in m['content']:
                if p.get('type') == 'tool_use': out[p['id']] = p['input']
    return out

def hist_args(hist)->dict:
    "The arguments of every tool call in a history, by call id"
    return {tc['id']: json.loads(tc['function']['arguments']) for m in hist if m['role'] == 'assistant'
            for tc in m.get('tool_calls') or []}



async def valid_after(sim, cls, model, hist):
    """`hist` is a valid transcript: every tool call answered, and one more call on a copy of it (a new chat, nothing
    awaiting) gets its answer in a request the strict simulator accepts. Resets the simulator first"""
    answered(hist)
    sim.reset(); sim.script(Reply(text='Still here.'))
    chat = mk(cls, sim, model, tools=list(tools_for(cls)[:2]), hist=copy.deepcopy(hist))
    assert text(await ask(chat, 'Are you there?')) == 'Still here.'
    accepted(sim, model)
    sim.reset()

# ---------------------------------------------------------------- calling

async def call(chat, msg, mode='plain', **kw):
    """One call on `chat`: (what it returns, everything it yields). mode: 'plain' (the call's return value),
    'all' (`return_all`: the last item is what is returned), 'stream' (the last item streamed)"""
    if mode == 'plain':
        r = await ask(chat, msg, **kw)
        return r, [r]
    out = await collect(chat, msg, stream=mode == 'stream', **kw)
    return out[-1], out

async def resume(chat, decisions, stream=False, **kw):
    "`chat.resume(decisions)`, sync (in a worker thread) or awaited, streamed or not: (its result, all it yielded)"
    if isinstance(chat, AsyncChat):
        if not stream:
            r = await chat.resume(decisions, **kw)
            return r, [r]
        out = [o async for o in await chat.resume(decisions, stream=True, **kw)]
        return out[-1], out
    if not stream:
        r = await asyncio.to_thread(sync_call, lambda: chat.resume(decisions, **kw))
        return r, [r]
    out = await asyncio.to_thread(sync_call, lambda: list(chat.resume(decisions, stream=True, **kw)))
    return out[-1], out

async def raised(chat, f):
    """What `f()` (a call on `chat`) raised at the call (an `AsyncChat` call: at its await; a `Chat` call: in a worker
    thread); None if nothing (streams are left unread)"""
    try:
        if isinstance(chat, AsyncChat):
            r = f()
            if inspect.isawaitable(r): await r
        else: await asyncio.to_thread(f)
    except Exception as e: return e
    return None

def mode_of(stream): return 'stream' if stream else 'plain'

# ================================================================ the pause

TIDY = [Call('delete', {'path': 'a.txt'}, id='d1'), Call('add2', {'a': 1, 'b': 2}, id='a1')]

@CLASSES
@MODELS
@pytest.mark.parametrize('mode', ['plain', 'all', 'stream'])
async def test_call_pauses_before_a_waiting_tool(sim, cls, model, mode):
    """The model calls a tool that needs approval (and one that doesn't): the call returns (or yields, last) an
    `Approval` listing both calls and which waits; nothing ran; one request; the history is just the user's message;
    the chat keeps the `Approval` in `awaiting`"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(text='Let me tidy.', calls=TIDY, chunks=3), Reply(text='unused'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, out = await call(chat, 'Tidy up and add 1 and 2.', mode)
    assert isinstance(a, Approval), a
    assert chat.awaiting is a
    assert a.waiting == ['d1']
    assert a.calls == [{'id': 'd1', 'name': 'delete', 'arguments': {'path': 'a.txt'}, 'waits': True},
                       {'id': 'a1', 'name': 'add2', 'arguments': {'a': 1, 'b': 2}, 'waits': False}]
    assert a.reply['role'] == 'assistant' and [tc['id'] for tc in a.reply['tool_calls']] == ['d1', 'a1']
    assert 'delete' in repr(a) and 'waits' in repr(a)
    assert [o for o in out if isinstance(o, Approval)] == [a]   # one Approval, and last
    if mode == 'stream':
        assert any(isinstance(o, ModelResponseStream) for o in out)
        assert isinstance(out[-2], ModelResponse)   # the whole reply, then the Approval
    assert ran == []                                 # not even the call that doesn't wait
    assert len(sim.requests) == 1 and sim.pending == 1
    accepted(sim, model, 0)
    assert chat.hist == [u('Tidy up and add 1 and 2.')]
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
@STREAMS
async def test_new_message_while_awaiting_is_refused(sim, cls, model, stream):
    "A new message (or none) while the chat awaits approval: ValueError at the call, nothing sent, nothing changed"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=TIDY), Reply(text='unused'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Tidy up.', mode_of(stream))
    assert isinstance(a, Approval)
    hist = copy.deepcopy(chat.hist)
    for msg in ('Something else?', None):
        e = await raised(chat, lambda: chat(msg, stream=stream))
        assert isinstance(e, ValueError), e
        assert 'approval' in str(e), str(e)
    assert (len(sim.requests), ran, chat.hist, chat.awaiting) == (1, [], hist, a)
    # and the chat still goes on with resume
    r, _ = await resume(chat, {'d1': True}, stream)
    assert text(r) == 'unused'
    assert sorted(ran) == [('add', 1, 2), ('delete', 'a.txt')]

# ================================================================ decisions

FIVE = [Call('delete', {'path': 'one.txt'}, id='d1'), Call('add2', {'a': 1, 'b': 2}, id='a1'),
        Call('delete', {'path': 'two.txt'}, id='d2'), Call('delete', {'path': '/etc/passwd'}, id='d3'),
        Call('delete', {'path': 'four.txt'}, id='d4')]

@CLASSES
@MODELS
@STREAMS
async def test_each_kind_of_decision(sim, cls, model, stream):
    """Approved runs; False denies; a reason denies, with the reason; a dict runs with those arguments, which replace
    the model's in the history and in what is sent; the call that doesn't wait runs. The next request carries the
    results in call order, and is accepted"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=FIVE, chunks=2), Reply(text='Done tidying.', chunks=2))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Tidy up.', mode_of(stream))
    assert a.waiting == ['d1', 'd2', 'd3', 'd4']
    assert ran == [] and len(sim.requests) == 1
    r, out = await resume(chat, {'d1': True, 'd2': False, 'd3': 'outside the project', 'd4': {'path': 'four.bak'}}, stream)
    assert text(r) == 'Done tidying.'
    assert isinstance(r, ModelResponse) and not any(isinstance(o, Approval) for o in out)
    if stream: assert any(isinstance(o, ModelResponseStream) for o in out)
    assert chat.awaiting is None
    assert sorted(ran) == [('add', 1, 2), ('delete', 'four.bak'), ('delete', 'one.txt')]
    assert len(sim.requests) == 2
    accepted(sim, model, 1)
    want = [('d1', 'deleted one.txt'), ('a1', '3'), ('d2', 'Error: not approved'),
            ('d3', 'Error: not approved: outside the project'), ('d4', 'deleted four.bak')]
    assert body_results(sim.bodies[1]) == want
    assert tool_use_ids(sim.bodies[1]) == ['d1', 'a1', 'd2', 'd3', 'd4']
    assert body_args(sim.bodies[1]) == {'d1': {'path': 'one.txt'}, 'a1': {'a': 1, 'b': 2}, 'd2': {'path': 'two.txt'},
                                        'd3': {'path': '/etc/passwd'}, 'd4': {'path': 'four.bak'}}
    assert roles(chat.hist) == ['user', 'assistant'] + ['tool']*5 + ['assistant']
    assert [m['tool_call_id'] for m in chat.hist if m['role'] == 'tool'] == [w[0] for w in want]
    assert tool_texts(chat.hist) == [w[1] for w in want]
    assert hist_args(chat.hist)['d4'] == {'path': 'four.bak'}
    assert chat.hist[-1]['content'] == 'Done tidying.'
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
async def test_deny_all(sim, cls, model):
    "Every waiting call denied: nothing of theirs runs, the model is told, and answers; the next call works as usual"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'x'}, id='d1'), Call('delete', {'path': 'y'}, id='d2')]),
               Reply(text='Fine, nothing deleted.'), Reply(text='Hello.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    await call(chat, 'Delete x and y.')
    r, _ = await resume(chat, {'d1': False, 'd2': 'no'})
    assert text(r) == 'Fine, nothing deleted.' and ran == []
    assert body_results(sim.bodies[1]) == [('d1', 'Error: not approved'), ('d2', 'Error: not approved: no')]
    r = await ask(chat, 'Hi.')
    assert text(r) == 'Hello.' and len(sim.requests) == 3
    accepted(sim, model)

@CLASSES
@MODELS
async def test_edited_arguments_that_dont_fit_get_an_error_result(sim, cls, model):
    "New arguments the tool can't take: the call is answered with an error (as a model's bad call would be), not raised"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'x'}, id='d1')]), Reply(text='It failed.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    await call(chat, 'Delete x.')
    r, _ = await resume(chat, {'d1': {'file': 'x'}})
    assert text(r) == 'It failed.' and ran == []
    [(i, t)] = body_results(sim.bodies[1])
    assert i == 'd1' and t.startswith('Error:'), t
    assert body_args(sim.bodies[1]) == {'d1': {'file': 'x'}}
    accepted(sim, model, 1)

# ================================================================ bad decisions

@CLASSES
@MODELS
@STREAMS
async def test_bad_decisions_are_refused_before_anything_is_sent(sim, cls, model, stream):
    """Missing, unknown (including a call of the reply that doesn't wait) and ill-typed decisions: ValueError at the
    call, no request, nothing run, the chat still awaiting with its history as it was; then good decisions work"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'p'}, id='d1'), Call('add2', {'a': 2, 'b': 2}, id='a1'),
                            Call('delete', {'path': 'q'}, id='d2')]), Reply(text='Done.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Go.', mode_of(stream))
    assert a.waiting == ['d1', 'd2']
    hist = copy.deepcopy(chat.hist)
    bad = [{}, {'d1': True},                                   # missing
           {'d1': True, 'd2': True, 'a1': True},                # a call that doesn't wait
           {'d1': True, 'd2': True, 'zz': False},               # no such call
           {'d1': 1, 'd2': True}, {'d1': True, 'd2': None},     # not True/False/reason/arguments
           {'d1': ['p'], 'd2': True}, {'d1': 0, 'd2': True}]
    for d in bad:
        e = await raised(chat, lambda: chat.resume(d, stream=stream))
        assert isinstance(e, ValueError), (d, e)
        assert (len(sim.requests), ran, chat.hist, chat.awaiting) == (1, [], hist, a), d
    r, _ = await resume(chat, {'d1': True, 'd2': 'not q'}, stream)
    assert text(r) == 'Done.'
    assert body_results(sim.bodies[1]) == [('d1', 'deleted p'), ('a1', '4'), ('d2', 'Error: not approved: not q')]
    # nothing awaits any more: resuming again is refused too, before anything is sent
    e = await raised(chat, lambda: chat.resume({'d1': True}, stream=stream))
    assert isinstance(e, ValueError), e
    assert len(sim.requests) == 2

@CLASSES
@MODELS
async def test_resume_with_nothing_awaiting_is_refused(sim, cls, model):
    "A chat that never paused: resume raises ValueError, nothing sent"
    delete, add2, ran = tools_for(cls)
    chat = mk(cls, sim, model, tools=[delete, add2])
    for d in ({}, {'d1': True}):
        e = await raised(chat, lambda: chat.resume(d))
        assert isinstance(e, ValueError), e
    assert sim.requests == [] and chat.hist == []

# ================================================================ the tool loop goes on

@CLASSES
@MODELS
@STREAMS
async def test_loop_goes_on_after_resume(sim, cls, model, stream):
    "After resume, the model calls a tool that needs no approval: it runs, and the model answers (three requests)"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'a'}, id='d1')], chunks=2),
               Reply(calls=[Call('add2', {'a': 20, 'b': 22}, id='a2')], chunks=2),
               Reply(text='Deleted a; 20+22 is 42.', chunks=2))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Delete a, then add.', mode_of(stream))
    assert isinstance(a, Approval) and len(sim.requests) == 1
    r, out = await resume(chat, {'d1': True}, stream)
    assert text(r) == 'Deleted a; 20+22 is 42.'
    assert ran == [('delete', 'a'), ('add', 20, 22)]
    assert len(sim.requests) == 3 and chat.awaiting is None
    for i in (1, 2): accepted(sim, model, i)
    assert body_results(sim.bodies[1]) == [('d1', 'deleted a')]
    assert body_results(sim.bodies[2]) == [('d1', 'deleted a'), ('a2', '42')]
    assert not final(sim.bodies[1])   # the loop goes on as usual: tools still offered
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool', 'assistant']
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
@STREAMS
async def test_second_round_pauses_again(sim, cls, model, stream):
    """After resume, the model calls a waiting tool again: the resumed call returns a new `Approval` (the history has
    the first round, whole and valid); resuming that one finishes the turn"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'a'}, id='d1')]),
               Reply(text='And b.', calls=[Call('delete', {'path': 'b'}, id='d2'), Call('add2', {'a': 1, 'b': 1}, id='a2')]),
               Reply(text='Deleted a; b was refused; 1+1 is 2.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Delete a and b.', mode_of(stream))
    b, out = await resume(chat, {'d1': True}, stream)
    assert isinstance(b, Approval) and b is not a and chat.awaiting is b
    assert [o for o in out if isinstance(o, Approval)] == [b]
    assert b.waiting == ['d2'] and [c['id'] for c in b.calls] == ['d2', 'a2']
    assert ran == [('delete', 'a')]
    assert len(sim.requests) == 2
    accepted(sim, model, 1)
    assert roles(chat.hist) == ['user', 'assistant', 'tool']
    assert tool_texts(chat.hist) == ['deleted a']
    hist = copy.deepcopy(chat.hist)
    c, _ = await resume(chat, {'d2': 'keep b'}, stream)
    assert text(c) == 'Deleted a; b was refused; 1+1 is 2.'
    assert ran == [('delete', 'a'), ('add', 1, 1)]
    assert body_results(sim.bodies[2]) == [('d1', 'deleted a'), ('d2', 'Error: not approved: keep b'), ('a2', '2')]
    accepted(sim, model, 2)
    assert chat.hist[:3] == hist
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool', 'tool', 'assistant']
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
async def test_pause_in_a_later_round_keeps_earlier_rounds(sim, cls, model):
    "A first round that needs no approval runs; the second pauses: the history holds the first round, valid"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='a1')]),
               Reply(calls=[Call('delete', {'path': '3.txt'}, id='d1')]), Reply(text='Deleted 3.txt.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Add, then delete.')
    assert isinstance(a, Approval) and a.waiting == ['d1']
    assert ran == [('add', 1, 2)] and len(sim.requests) == 2
    assert roles(chat.hist) == ['user', 'assistant', 'tool']
    hist = copy.deepcopy(chat.hist)
    await valid_after(sim, cls, model, hist)
    sim.script(Reply(text='Deleted 3.txt.'))
    r, _ = await resume(chat, {'d1': True})
    assert text(r) == 'Deleted 3.txt.' and ran[-1] == ('delete', '3.txt')
    assert body_results(sim.bodies[-1]) == [('a1', '3'), ('d1', 'deleted 3.txt')]
    accepted(sim, model)

# ================================================================ approve=

@CLASSES
@MODELS
@STREAMS
async def test_approve_by_name(sim, cls, model, stream):
    "`approve=` picks calls by the tool's name (given the name and the arguments as a dict); unmarked tools wait"
    remove, add2, ran = plain_tools(cls)
    seen = []
    def approve(name, args):
        seen.append((name, args))
        return name == 'remove'
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='a1'), Call('remove', {'path': 'r'}, id='r1')]),
               Reply(text='Removed r.'))
    chat = mk(cls, sim, model, tools=[remove, add2], approve=approve)
    a, _ = await call(chat, 'Go.', mode_of(stream))
    assert isinstance(a, Approval) and a.waiting == ['r1']
    assert ('add2', {'a': 1, 'b': 2}) in seen and ('remove', {'path': 'r'}) in seen
    assert ran == [] and len(sim.requests) == 1
    r, _ = await resume(chat, {'r1': True}, stream)
    assert text(r) == 'Removed r.'
    assert sorted(ran) == [('add', 1, 2), ('remove', 'r')]
    assert body_results(sim.bodies[1]) == [('a1', '3'), ('r1', 'removed r')]
    accepted(sim, model, 1)

@CLASSES
@MODELS
async def test_approve_by_arguments(sim, cls, model):
    "`approve=` picks calls of one tool by their arguments: only the big addition waits"
    remove, add2, ran = plain_tools(cls)
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='a1'), Call('add2', {'a': 500, 'b': 1}, id='a2'),
                            Call('add2', {'a': 3, 'b': 4}, id='a3')]),
               Reply(text='The big one was refused.'))
    chat = mk(cls, sim, model, tools=[remove, add2], approve=lambda name, args: args.get('a', 0) > 100)
    a, _ = await call(chat, 'Add.')
    assert isinstance(a, Approval) and a.waiting == ['a2']
    assert [c['waits'] for c in a.calls] == [False, True, False]
    assert ran == []
    r, _ = await resume(chat, {'a2': False})
    assert text(r) == 'The big one was refused.'
    assert sorted(ran) == [('add', 1, 2), ('add', 3, 4)]
    assert body_results(sim.bodies[1]) == [('a1', '3'), ('a2', 'Error: not approved'), ('a3', '7')]
    accepted(sim, model, 1)

@CLASSES
@MODELS
async def test_approve_false_for_every_call_runs_as_usual(sim, cls, model):
    "`approve=` that picks nothing: no pause, the tools run, the model answers"
    remove, add2, ran = plain_tools(cls)
    sim.script(Reply(calls=[Call('remove', {'path': 'r'}, id='r1')]), Reply(text='Removed.'))
    chat = mk(cls, sim, model, tools=[remove, add2], approve=lambda name, args: False)
    r = await ask(chat, 'Go.')
    assert text(r) == 'Removed.' and ran == [('remove', 'r')] and chat.awaiting is None
    assert len(sim.requests) == 2

# ================================================================ limits and broken calls

@CLASSES
@MODELS
@STREAMS
async def test_max_tool_rounds_reached_answers_not_run_without_pausing(sim, cls, model, stream):
    """With the rounds used up, the final request asks for words; a model that calls a waiting tool anyway gets
    "not run" for it, and the call ends with its response, not an `Approval`"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='a1')]),
               Reply(text='Deleting.', calls=[Call('delete', {'path': 'z'}, id='d1')]), Reply(text='unused'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    r, out = await call(chat, 'Add, then delete.', mode_of(stream), max_tool_rounds=1)
    assert not isinstance(r, Approval) and not any(isinstance(o, Approval) for o in out)
    assert isinstance(r, ModelResponse)
    assert chat.awaiting is None
    assert ran == [('add', 1, 2)]
    assert len(sim.requests) == 2 and final(sim.bodies[1])
    assert tool_texts(chat.hist) == ['3', NOT_RUN]
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool']
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
@pytest.mark.parametrize('how', ['marked', 'approve'])
async def test_broken_arguments_on_a_waiting_tool_get_an_error_without_pausing(sim, cls, model, how):
    """A call of a tool that would wait, with arguments that are not valid JSON: nothing to approve, so no pause; the
    call gets an error result and the model answers"""
    if how == 'marked': tool, _, ran = tools_for(cls); kw = {}
    else: tool, _, ran = plain_tools(cls); kw = dict(approve=lambda name, args: True)
    name = tool.__name__
    sim.script(Reply(calls=[Call(name, '{"path": ', id='x1')]), Reply(text='That call was broken.'))
    chat = mk(cls, sim, model, tools=[tool], **kw)
    r = await ask(chat, 'Go.')
    assert not isinstance(r, Approval), r
    assert chat.awaiting is None
    assert text(r) == 'That call was broken.'
    assert ran == [] and len(sim.requests) == 2
    [t] = tool_texts(chat.hist)
    assert t.startswith('Error: arguments'), t
    accepted(sim, model, 1)

# ================================================================ save / load

@CLASSES
@MODELS
async def test_save_and_load_keep_awaiting(sim, cls, model, tmp_path):
    "A chat saved while it waits loads waiting, refuses a new message, and resumes (same process)"
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=TIDY), Reply(text='Tidied.'))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Tidy up.')
    p = tmp_path/'waiting.json'
    chat.save(p)
    later = cls.load(p, tools=[delete, add2], api_key='sk-test')
    assert isinstance(later.awaiting, Approval)
    assert (later.awaiting.waiting, later.awaiting.calls) == (a.waiting, a.calls)
    assert later.hist == chat.hist
    e = await raised(later, lambda: later('Something else?'))
    assert isinstance(e, ValueError), e
    assert len(sim.requests) == 1
    r, _ = await resume(later, {'d1': {'path': 'a.bak'}})
    assert text(r) == 'Tidied.'
    assert sorted(ran) == [('add', 1, 2), ('delete', 'a.bak')]
    assert body_results(sim.bodies[1]) == [('d1', 'deleted a.bak'), ('a1', '3')]
    accepted(sim, model, 1)
    later.save(p)
    assert json.loads(p.read_text())['awaiting'] is None

RESUMER = textwrap.dedent('''
    import asyncio, json, sys
    from lisette import Chat, AsyncChat, Approval, needs_approval
    from litellm import ModelResponse
    path, cls_name, stream, decisions, store = sys.argv[1], sys.argv[2], sys.argv[3] == '1', json.loads(sys.argv[4]), sys.argv[5] == '1'
    ran = []
    @needs_approval
    def delete(path:str # the file to delete
              )->str:
        "Delete a file"
        ran.append(['delete', path])
        return f'deleted {path}'
    def add2(a:int, # the first number
             b:int  # the second number
            )->int:
        "Add two numbers"
        ran.append(['add', a, b])
        return a + b
    def report(chat, r, n):
        print(json.dumps(dict(text=r.choices[0].message.content if isinstance(r, ModelResponse) else repr(r),
                              approval=isinstance(r, Approval), items=n, awaiting=chat.awaiting is not None, ran=ran,
                              tools=[m['content'] for m in chat.hist if m['role'] == 'tool'], roles=[m['role'] for m in chat.hist])))
    kw = dict(store=path) if store else {}
    if cls_name == 'Chat':
        chat = Chat.load(path, tools=[delete, add2], api_key='sk-test', **kw)
        assert isinstance(chat.awaiting, Approval), chat.awaiting
        if stream: out = list(chat.resume(decisions, stream=True)); r = out[-1]
        else: out = [r := chat.resume(decisions)]
        report(chat, r, len(out))
    else:
        async def main():
            chat = AsyncChat.load(path, tools=[delete, add2], api_key='sk-test', **kw)
            assert isinstance(chat.awaiting, Approval), chat.awaiting
            if stream: out = [o async for o in await chat.resume(decisions, stream=True)]; r = out[-1]
            else: out = [r := await chat.resume(decisions)]
            report(chat, r, len(out))
        asyncio.run(main())
''')

def run_resumer(path, cls, stream, decisions, store=False)->dict:
    "Resume the chat saved at `path` in another process; what it printed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(('ANTHROPIC', 'OPENAI'))}
    r = subprocess.run([sys.executable, '-c', RESUMER, str(path), cls.__name__, '1' if stream else '0', json.dumps(decisions),
                        '1' if store else '0'], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])

@CLASSES
@MODELS
@STREAMS
async def test_resume_in_another_process(sim, cls, model, stream, tmp_path):
    """Paused and saved here; loaded and resumed by another process, against the same simulator: the tools ran there
    (the one that doesn't wait too), the denied call was answered with the reason, and the request it sent carries the
    results in call order and passes the strict check"""
    delete, add2, ran = tools_for(cls)
    sim.script(Reply(calls=[Call('delete', {'path': 'a.txt'}, id='d1'), Call('add2', {'a': 1, 'b': 2}, id='a1'),
                            Call('delete', {'path': '/etc'}, id='d2')], chunks=2),
               Reply(text='Deleted a.bak; /etc refused; 3.', chunks=2))
    chat = mk(cls, sim, model, tools=[delete, add2])
    a, _ = await call(chat, 'Tidy up.', mode_of(stream))
    assert isinstance(a, Approval) and a.waiting == ['d1', 'd2']
    p = tmp_path/'waiting.json'
    chat.save(p)
    assert 'sk-test' not in p.read_text()
    got = await asyncio.to_thread(run_resumer, p, cls, stream, {'d1': {'path': 'a.bak'}, 'd2': 'not /etc'})
    assert got['text'] == 'Deleted a.bak; /etc refused; 3.' and not got['approval']
    if stream: assert got['items'] > 1
    assert got['awaiting'] is False
    assert sorted(map(tuple, got['ran'])) == [('add', 1, 2), ('delete', 'a.bak')]
    assert got['tools'] == ['deleted a.bak', '3', 'Error: not approved: not /etc']
    assert got['roles'] == ['user', 'assistant', 'tool', 'tool', 'tool', 'assistant']
    assert ran == []   # nothing ran in this process
    assert len(sim.requests) == 2
    accepted(sim, model, 1)
    assert body_results(sim.bodies[1]) == [('d1', 'deleted a.bak'), ('a1', '3'), ('d2', 'Error: not approved: not /etc')]
    assert body_args(sim.bodies[1])['d1'] == {'path': 'a.bak'}

@pytest.mark.parametrize('cls,model', [(Chat, SONNET), (AsyncChat, GPT)], ids=['sync-anthropic', 'async-openai'])
async def test_store_file_resumed_in_another_process(sim, cls, model, tmp_path):
    """With `store=`, the file holds the `Approval` as soon as the call pauses; another process loads it (keeping it up
    to date), resumes, and the file then holds the finished turn, nothing awaiting"""
    delete, add2, ran = tools_for(cls)
    p = tmp_path/'chat.json'
    sim.script(Reply(calls=[Call('delete', {'path': 'k'}, id='d1')]), Reply(text='Deleted k.'))
    chat = mk(cls, sim, model, tools=[delete, add2], store=p)
    a, _ = await call(chat, 'Delete k.')
    assert isinstance(a, Approval)
    saved = json.loads(p.read_text())
    assert saved['awaiting']['waiting'] == ['d1'] and [m['role'] for m in saved['hist']] == ['user']
    got = await asyncio.to_thread(run_resumer, p, cls, False, {'d1': True}, True)
    assert got['text'] == 'Deleted k.' and got['ran'] == [['delete', 'k']] and got['awaiting'] is False
    saved = json.loads(p.read_text())
    assert saved['awaiting'] is None
    assert [m['role'] for m in saved['hist']] == ['user', 'assistant', 'tool', 'assistant']
    assert len(sim.requests) == 2 and ran == []
    accepted(sim, model, 1)
