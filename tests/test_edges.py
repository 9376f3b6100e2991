"""Issue 11, "no silent failures": each edge a user or the randomized tester found, as the behaviour decided for it.

One test (or one parametrized family) per bullet of the issue, for `Chat` and `AsyncChat` and both wire formats
where the bullet applies to both. Each asserts what the user sees (a return value, an exception, the history) and
what reached the provider (the request bodies `lisette.testing.Sim` captured; `sim.requests == []` for "nothing
sent"). Not here: the randomized test, the simulator's own fixes, and the local model under concurrency."""
import asyncio, copy, gc, json, os, re, subprocess, sys, textwrap, threading, time, warnings
from dataclasses import dataclass
import pytest
from pydantic import BaseModel, Field
from lisette import Chat   # first: it keeps litellm's import offline and quiet
import litellm
from litellm import ModelResponse
from lisette import AsyncChat
from lisette.testing import Reply, Call, Fault

from helpers import *

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])
STREAMS = pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
SUR = chr(0xd800)   # a lone surrogate: a str Python holds but UTF-8 can't encode

@pytest.fixture(autouse=True)
def _collect_after():
    yield
    gc.collect(1)   # what a test left open is closed here, where no lock is held

# ---------------------------------------------------------------- helpers


def refused(sim, err, exc, pat, hist_before=None, chat=None):
    "`err` is an `exc` whose text matches `pat`; nothing was sent; the history is as it was"
    sent = [r.status for r in sim.requests]
    assert isinstance(err, exc), f'expected {exc} at the call, got {err!r}; requests sent (statuses): {sent}'
    assert re.search(pat, str(err), re.I), f'{str(err)!r} does not name the problem ({pat!r})'
    assert sim.requests == [], f'refused, yet {len(sim.requests)} requests were sent'
    if chat is not None: assert chat.hist == hist_before, chat.hist

async def next_call_works(sim, chat, model, msg='Next?'):
    "Forget any script; a fresh message gets its answer, stored after it, in a request the provider accepts"
    sim.reset(); sim.default = None
    sim.script(Reply(text='Next answer.'))
    res = await ask(chat, msg)
    assert text(res) == 'Next answer.'
    assert chat.hist[-2:] == [u(msg), a('Next answer.')]
    accepted(sim, model)

def encodable(o)->bool:
    "Can `o` be sent as UTF-8 JSON (no lone surrogates anywhere)?"
    try: json.dumps(o, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError: return False
    return True

def alternates(hist)->bool:
    "No two user messages in a row, nor two assistant messages (tool results may sit between them)"
    rs = [r for r in roles(hist) if r != 'system']
    return all(not (x == y and x in ('user', 'assistant')) for x,y in zip(rs, rs[1:]))

def paired(hist):
    "Every tool call id in `hist` is unique, and each is answered by exactly one tool message right after its call"
    ids = [tc['id'] for m in hist if m['role'] == 'assistant' for tc in m.get('tool_calls') or []]
    assert len(ids) == len(set(ids)), f'tool call ids reused: {ids}'
    for i,m in enumerate(hist):
        if m['role'] != 'assistant' or not m.get('tool_calls'): continue
        want = [tc['id'] for tc in m['tool_calls']]
        got = [r['tool_call_id'] for r in hist[i+1:i+1+len(want)] if r['role'] == 'tool']
        assert got == want, f'message {i}: calls {want} answered by {got}'

def tool_call(id, name='add', args='{"a": 1, "b": 2}'):
    return {'id': id, 'type': 'function', 'function': {'name': name, 'arguments': args}}

def tool_msg(id, content, name='add'): return {'role': 'tool', 'tool_call_id': id, 'name': name, 'content': content}

def calls_msg(*ids): return {'role': 'assistant', 'content': None, 'tool_calls': [tool_call(i) for i in ids]}

def is_abandoned(e)->bool: return any(c.__name__ == 'StreamAbandoned' for c in type(e).__mro__)

def run_bounded(f, timeout=10):
    "Run `f()` in a daemon thread (a hang can't keep pytest from exiting); its result, or raise what it raised"
    box = {}
    def go():
        try: box['res'] = f()
        except BaseException as e: box['err'] = e
    t = threading.Thread(target=go, daemon=True)
    t.start(); t.join(timeout)
    assert not t.is_alive(), f'still running after {timeout} s: it hangs'
    if 'err' in box: raise box['err']
    return box['res']

# ================================================================ Caller input that gets into the history

BAD_MESSAGES = [   # (id, message, the exception, a pattern its text must match)
    ('tool_message_answering_no_call', {'role': 'tool', 'content': 'hi'}, (ValueError, TypeError), r'tool'),
    ('tool_message_with_an_id', {'role': 'tool', 'tool_call_id': 'call_x', 'content': 'hi'}, (ValueError, TypeError), r'tool'),
    ('assistant_message', {'role': 'assistant', 'content': 'I said this.'}, (ValueError, TypeError), r'assistant'),
    ('system_message', {'role': 'system', 'content': 'Be brief.'}, (ValueError, TypeError), r'system|\bsp\b'),
    ('bogus_part', [{'type': 'bogus'}], (ValueError, TypeError), r'bogus'),
    ('image_url_part_without_url', [{'type': 'image_url'}], (ValueError, TypeError), r'url'),
    ('image_url_part_with_empty_url', ['Look:', {'type': 'image_url', 'image_url': {}}], (ValueError, TypeError), r'url'),
    ('lone_surrogate', 'hi ' + SUR, ValueError, r'surrogate|encod|utf-?8'),
    ('lone_surrogate_in_a_part', ['Look:', {'type': 'text', 'text': 'hi ' + SUR}], ValueError, r'surrogate|encod|utf-?8'),
]

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('msg,exc,pat', [c[1:] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES])
async def test_bad_message_is_refused_before_sending(sim, cls, stream, model, msg, exc, pat):
    """A message no provider would take (a tool/assistant/system dict, an unknown or incomplete part, text UTF-8 can't
    encode): refused at the call, naming the problem; nothing sent; history untouched; the chat goes on"""
    sim.default = Reply(text='Sent anyway.')   # what the original code got back, after sending it
    chat = mk(cls, sim, model, tools=[add], hist=['Hi.', 'Hello!'])
    before = copy.deepcopy(chat.hist)
    err = await raised_at_call(chat, msg, stream=stream)
    refused(sim, err, exc, pat, before, chat)
    await next_call_works(sim, chat, model)

@CLASSES
@MODELS
async def test_assistant_message_first_is_refused(sim, cls, model):
    "A new chat whose first message is the assistant's: refused (Anthropic: 'first message must use the user role')"
    sim.default = Reply(text='Sent anyway.')
    chat = mk(cls, sim, model)
    err = await raised_at_call(chat, {'role': 'assistant', 'content': 'I speak first.'})
    refused(sim, err, (ValueError, TypeError), r'assistant', [], chat)
    await next_call_works(sim, chat, model)

BAD_HISTS = [   # (id, hist=, a pattern the error must match)
    ('assistant_first', [a('I speak first.'), u('Hi.')], r'user|first|assistant'),
    ('tool_calls_unanswered', [u('Add 1 and 2.'), calls_msg('call_1'), u('Well?')], r'call_1|tool|answer'),
    ('tool_calls_half_answered', [u('Add twice.'), calls_msg('call_1', 'call_2'), tool_msg('call_1', '3'), u('Well?')],
     r'call_2|tool|answer'),
    ('tool_message_answering_nothing', [u('Hi.'), a('Hello!'), tool_msg('call_9', '3')], r'tool|call_9'),
    ('two_user_messages_in_a_row', [u('Hi.'), u('Hi again.')], r'user|alternat|row'),
    ('empty_text', [u('Hi.'), a('')], r'empty|no text'),
    ('lone_surrogate', ['hi ' + SUR, 'Hello!'], r'surrogate|encod|utf-?8'),
]

@CLASSES
@MODELS
@pytest.mark.parametrize('hist,pat', [c[1:] for c in BAD_HISTS], ids=[c[0] for c in BAD_HISTS])
def test_bad_hist_is_refused_at_construction(sim, cls, model, hist, pat):
    "`hist=` that is not a valid transcript: a ValueError when the chat is made, naming the problem; nothing sent"
    err = None
    try: mk(cls, sim, model, tools=[add], hist=hist)
    except Exception as e: err = e
    refused(sim, err, ValueError, pat)

@CLASSES
@MODELS
@pytest.mark.parametrize('sp,pat', [('   ', r'system prompt|\bsp\b|empty|blank'), ('Be brief ' + SUR, r'surrogate|encod|utf-?8')],
                         ids=['blank', 'lone_surrogate'])
def test_bad_system_prompt_is_refused_at_construction(sim, cls, model, sp, pat):
    "`sp='   '` (Anthropic: 'text content blocks must be non-empty') or an unencodable `sp`: a ValueError, nothing sent"
    err = None
    try: mk(cls, sim, model, sp=sp)
    except Exception as e: err = e
    refused(sim, err, ValueError, pat)

def tool_script(sim):
    "A tool round then an answer: what a call that was not refused would have run through"
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2}, id='call_t')]), Reply(text='It is 3.'))

BAD_OPTIONS = [   # (id, per-call kwargs, the exception, a pattern its text must match)
    ('final_prompt_int', dict(final_prompt=123, max_tool_rounds=1), TypeError, r'final_prompt'),
    ('final_prompt_blank', dict(final_prompt='   ', max_tool_rounds=1), ValueError, r'final_prompt'),
    ('final_prompt_lone_surrogate', dict(final_prompt='Sum up ' + SUR, max_tool_rounds=1), ValueError, r'surrogate|encod|utf-?8'),
    ('tool_timeout_str', dict(tool_timeout='5'), TypeError, r'tool_timeout'),
    ('tool_timeout_negative', dict(tool_timeout=-1), ValueError, r'tool_timeout'),
    ('tool_timeout_zero', dict(tool_timeout=0), ValueError, r'tool_timeout'),
    ('prefill_lone_surrogate', dict(prefill='Sure ' + SUR), ValueError, r'surrogate|encod|utf-?8'),
]

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kw,exc,pat', [c[1:] for c in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS])
async def test_bad_call_option_is_refused_before_sending(sim, cls, stream, model, kw, exc, pat):
    """A bad per-call option (checked today only once the tools ran, or never): refused at the call by both classes
    alike, naming it; nothing sent; history untouched"""
    tool_script(sim)
    chat = mk(cls, sim, model, tools=[add], hist=['Hi.', 'Hello!'])
    before = copy.deepcopy(chat.hist)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # a prefill on a model litellm thinks takes none warns; not the point here
        err = await raised_at_call(chat, 'Add 1 and 2.', stream=stream, **kw)
    refused(sim, err, exc, pat, before, chat)
    await next_call_works(sim, chat, model)

@CLASSES
@MODELS
@pytest.mark.parametrize('tt,exc', [('5', TypeError), (-1, ValueError), (0, ValueError)], ids=['str', 'negative', 'zero'])
def test_bad_tool_timeout_on_the_chat_is_refused(sim, cls, model, tt, exc):
    "`tool_timeout=` on the chat: a positive number or None, checked when it is made (-1 made every tool 'time out')"
    err = None
    try: mk(cls, sim, model, tools=[add], tool_timeout=tt)
    except Exception as e: err = e
    refused(sim, err, exc, r'tool_timeout')

# ================================================================ Model output that poisons the history

def echo(s:str # any text
        )->str:
    "Say the text back"
    return 'got ' + s

@CLASSES
@MODELS
@pytest.mark.parametrize('where', ['tool_arguments', 'reply_text'])
async def test_lone_surrogate_from_the_model_is_stored_as_text_that_encodes(sim, cls, model, where):
    """A lone surrogate in the model's tool-call arguments (valid JSON) or text: stored as U+FFFD, so every later
    request encodes; the tool round finishes and one more call succeeds"""
    if where == 'tool_arguments':
        sim.script(Reply(calls=[Call('echo', '{"s": "hi ' + SUR + '"}', id='call_s')]), Reply(text='Echoed.'))
    else: sim.script(Reply(text='hi ' + SUR))
    chat = mk(cls, sim, model, tools=[echo])
    res = await ask(chat, 'Go.')
    if where == 'tool_arguments': assert text(res) == 'Echoed.'
    else: assert text(res).startswith('hi ')
    assert encodable(chat.hist), chat.hist
    assert '\ufffd' in json.dumps(chat.hist, ensure_ascii=False)
    assert roles(chat.hist) == (['user', 'assistant', 'tool', 'assistant'] if where == 'tool_arguments' else ['user', 'assistant'])
    assert all(r.status == 200 for r in sim.requests), [r.status for r in sim.requests]
    await next_call_works(sim, chat, model)
    sent = json.dumps(sim.bodies[-1], ensure_ascii=False)
    assert '\ufffd' in sent and SUR not in sent   # the replaced text went out, as UTF-8

@CLASSES
@MODELS
async def test_reused_tool_call_id_is_made_unique(sim, cls, model):
    """A model that reuses `call_0` every round (local OpenAI-compatible servers do): stored with unique ids, each result
    under its call's id, so Anthropic's 'tool_use ids must be unique' never comes"""
    add2, ran = recording_add()
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='call_0')]),
               Reply(calls=[Call('add2', {'a': 3, 'b': 4}, id='call_0')]),
               Reply(text='3 and 7.'))
    chat = mk(cls, sim, model, tools=[add2])
    res = await ask(chat, 'Add 1+2, then 3+4.')
    assert text(res) == '3 and 7.'
    assert ran == [(1, 2), (3, 4)]
    assert tool_texts(chat.hist) == ['3', '7']
    paired(chat.hist)
    for i in range(3): accepted(sim, model, i)
    ids = tool_use_ids(sim.bodies[-1])
    assert len(ids) == 2 and len(set(ids)) == 2, ids
    await next_call_works(sim, chat, model)

def stored_with_reused_ids():
    "A history a local server's chat left: `call_0` in both rounds"
    c1, c2 = calls_msg('call_0'), {'role': 'assistant', 'content': None, 'tool_calls': [tool_call('call_0', args='{"a": 3, "b": 4}')]}
    return [u('Add 1+2, then 3+4.'), c1, tool_msg('call_0', '3'), c2, tool_msg('call_0', '7'), a('3 and 7.')]

@CLASSES
@pytest.mark.parametrize('source', ['openai_chat', 'stored_history'])
async def test_history_with_reused_ids_moves_to_claude(sim, cls, source):
    """`Chat(claude, hist=chat.hist)` from an OpenAI-format chat whose model reused ids (or from such a stored
    history): ids renamed consistently, and Claude accepts every later request"""
    if source == 'openai_chat':
        sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2}, id='call_0')]),
                   Reply(calls=[Call('add', {'a': 3, 'b': 4}, id='call_0')]), Reply(text='3 and 7.'))
        old = mk(cls, sim, GPT, tools=[add])
        await ask(old, 'Add 1+2, then 3+4.')
        hist = old.hist
    else: hist = stored_with_reused_ids()
    sim.reset()
    claude = mk(cls, sim, SONNET, tools=[add], hist=hist)
    assert roles(claude.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool', 'assistant']
    assert tool_texts(claude.hist) == ['3', '7']
    paired(claude.hist)
    await next_call_works(sim, claude, SONNET, 'And 5+6?')
    ids = tool_use_ids(sim.bodies[-1])
    assert len(ids) == 2 and len(set(ids)) == 2, ids

DEEP = '{"a": ' + '['*3000 + ']'*3000 + '}'

def deep_json_reads()->bool:
    "Can this Python's json read DEEP? (From 3.13 it can; before, it raises RecursionError.)"
    try: json.loads(DEEP); return True
    except RecursionError: return False

@CLASSES
@pytest.mark.parametrize('stream', [True], ids=['stream'])   # a whole (non-streamed) response that deep litellm can't parse itself (1.110)
async def test_arguments_nested_too_deep_are_an_error_result(sim, cls, stream):
    """Tool arguments nested 3,000 levels deep: an error result for the model (not a RecursionError, nor a litellm
    error wrapping one, for the caller); the round is kept and the model answers"""
    add2, ran = recording_add()
    sim.script(Reply(calls=[Call('add2', DEEP, id='call_d')]), Reply(text='Those arguments were too deep.'), Reply(text='Retried.'))
    chat = mk(cls, sim, GPT, tools=[add2])
    try: res = await ask(chat, 'Go deep.', stream)
    except Exception as e: pytest.fail(f'the caller got {type(e).__name__}: {str(e)[:300]}; {len(sim.requests)} requests sent')
    assert text(res) == 'Those arguments were too deep.'
    assert ran == []
    assert len(sim.requests) == 2 and roles(sim.bodies[1]['messages'])[-1] == 'tool', \
        f'request 2 was not the tool round: {[roles(b["messages"]) for b in sim.bodies]}'
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant']
    [err] = tool_texts(chat.hist)
    assert err.startswith('Error') and re.search(r'nest|deep|must be an integer', err, re.I), err[:200]   # read by Python 3.13+'s json
    accepted(sim, GPT)
    assert err in body_texts(sim.bodies[-1])   # the model read the error
    await next_call_works(sim, chat, GPT)

@CLASSES
@STREAMS
@MODELS
async def test_empty_reply_is_not_stored_and_next_message_merges(sim, cls, stream, model):
    """An empty reply is not stored as `content: ''` (litellm then sends its invented '[System: Empty message content
    sanitised ...]' as the assistant's words); the next message joins the unanswered one"""
    sim.script(Reply(text=''))
    chat = mk(cls, sim, model)
    await ask(chat, 'Hi.', stream)
    assert chat.hist == [u('Hi.')], chat.hist
    sim.script(Reply(text='Hello!'))
    res = await ask(chat, 'Are you there?', stream)
    assert text(res) == 'Hello!'
    assert chat.hist == [u('Hi.\n\nAre you there?'), a('Hello!')]
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['Hi.\n\nAre you there?']
    assert not any('sanitised' in json.dumps(b) for b in sim.bodies)
    await next_call_works(sim, chat, model)
    assert not any('sanitised' in json.dumps(b) for b in sim.bodies)

@CLASSES
async def test_think_after_an_unanswered_tool_round_works_on_claude(sim, cls):
    """A turn that ended on a tool round answered 'not run' (the model called a tool on its last round), then
    `think='l'`: Claude accepts it ('Expected `thinking` ... but found `tool_use`' is never sent); history unchanged"""
    add2, ran = recording_add()
    sim.script(Reply(calls=[Call('add2', {'a': 1, 'b': 2}, id='toolu_1')]),
               Reply(calls=[Call('add2', {'a': 3, 'b': 4}, id='toolu_2')]))
    chat = mk(cls, sim, SONNET, tools=[add2])
    await ask(chat, 'Add 1+2, then 3+4.', max_tool_rounds=1)
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool'] and ran == [(1, 2)]
    before = copy.deepcopy(chat.hist)
    for i,q in enumerate(['So what is it?', 'Are you sure?']):
        sim.script(Reply(thinking='Let me think.', text=f'Answer {i}.'))
        res = await ask(chat, q, think='l')
        assert text(res) == f'Answer {i}.'
        accepted(sim, SONNET)
        assert (sim.bodies[-1].get('thinking') or {}).get('type') in ('enabled', 'adaptive'), sim.bodies[-1].get('thinking')
        assert q in body_texts(sim.bodies[-1])[-1]
    assert chat.hist[:5] == before
    assert roles(chat.hist)[5:] == ['user', 'assistant', 'user', 'assistant']
    assert [m['content'] for m in chat.hist[5:]] == ['So what is it?', 'Answer 0.', 'Are you sure?', 'Answer 1.']

async def test_think_after_a_cancel_during_tools_works_on_claude(sim):
    "An `AsyncChat` call cancelled while its tool runs (the history ends `assistant(tool_use), tool`), then `think='l'`: accepted"
    started = asyncio.Event()
    async def slow(s:float # seconds
                  )->str:
        "Sleep for a while"
        started.set()
        await asyncio.sleep(s)
        return 'slept'
    sim.script(Reply(calls=[Call('slow', {'s': 30}, id='toolu_s')]))
    chat = mk(AsyncChat, sim, SONNET, tools=[slow])
    task = asyncio.create_task(chat('Sleep.'))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert roles(chat.hist) == ['user', 'assistant', 'tool']
    before = copy.deepcopy(chat.hist)
    sim.script(Reply(thinking='It was cancelled.', text='The nap was cut short.'))
    res = await asyncio.wait_for(chat('What happened?', think='l'), 5)
    assert text(res) == 'The nap was cut short.'
    accepted(sim, SONNET)
    assert (sim.bodies[-1].get('thinking') or {}).get('type') in ('enabled', 'adaptive')
    assert chat.hist[:3] == before
    assert [(m['role'], m['content']) for m in chat.hist[3:]] == [('user', 'What happened?'), ('assistant', 'The nap was cut short.')]

# ================================================================ After a failed call

@CLASSES
@MODELS
async def test_message_after_a_failed_call_is_merged(sim, cls, model):
    "A call that failed for good (500, `num_retries=0`), then `chat('new')`: one user message with both texts"
    sim.script(Fault(status=500), Fault(status=500))
    chat = mk(cls, sim, model, num_retries=0)
    with pytest.raises(litellm.InternalServerError): await ask(chat, 'First?')
    assert len(sim.requests) == 1
    assert chat.hist == [u('First?')]
    sim.reset(); sim.script(Reply(text='Both answered.'))
    res = await ask(chat, 'Second?')
    assert text(res) == 'Both answered.'
    assert roles(chat.hist) == ['user', 'assistant']
    assert chat.hist == [u('First?\n\nSecond?'), a('Both answered.')]
    accepted(sim, model)
    assert roles(sim.bodies[-1]['messages']) == ['user']
    assert body_texts(sim.bodies[-1]) == ['First?\n\nSecond?']

@CLASSES
@MODELS
async def test_no_message_after_a_failed_call_retries_it(sim, cls, model):
    "`chat()` with no message after a failed call still sends the unanswered message, once"
    sim.script(Fault(status=500))
    chat = mk(cls, sim, model, num_retries=0)
    with pytest.raises(litellm.InternalServerError): await ask(chat, 'First?')
    sim.reset(); sim.script(Reply(text='Answered.'))
    assert text(await ask(chat)) == 'Answered.'
    assert chat.hist == [u('First?'), a('Answered.')]
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['First?']

@CLASSES
@STREAMS
@MODELS
async def test_retries_by_default(sim, cls, stream, model):
    "A 429 with `retry-after`, then a reply: retried by default (as the official SDKs do); exactly 2 requests"
    sim.script(Fault(status=429, headers={'retry-after': '0'}), Reply(text='After the wait.'), Reply(text='Too many.'))
    chat = mk(cls, sim, model)
    res = await ask(chat, 'Hello?', stream)
    assert text(res) == 'After the wait.'
    assert [r.status for r in sim.requests] == [429, 200]
    assert chat.hist == [u('Hello?'), a('After the wait.')]
    accepted(sim, model)

@CLASSES
@MODELS
@pytest.mark.parametrize('status', [408, 409, 500, 503, 529])
async def test_transient_statuses_are_retried_by_default(sim, cls, model, status):
    "408, 409, 5xx and 529 (with `retry-after-ms`), then a reply: retried by default; exactly 2 requests"
    sim.script(Fault(status=status, headers={'retry-after-ms': '10'}), Reply(text='After the wait.'), Reply(text='Too many.'))
    chat = mk(cls, sim, model)
    res = await ask(chat, 'Hello?')
    assert text(res) == 'After the wait.'
    assert [r.status for r in sim.requests] == [status, 200]
    assert chat.hist == [u('Hello?'), a('After the wait.')]

@CLASSES
@MODELS
async def test_client_timeout_is_not_retried(sim, cls, model):
    "`timeout=` is the caller's deadline: a stalled provider gets 1 request, then `litellm.Timeout`"
    sim.script(*[Fault(delay=1, then=Reply(text='Too late.')) for _ in range(3)])
    chat = mk(cls, sim, model, timeout=0.3)
    with pytest.raises(litellm.Timeout): await ask(chat, 'Hello?')
    assert len(sim.requests) == 1
    assert chat.hist == [u('Hello?')]

@CLASSES
@MODELS
async def test_num_retries_0_turns_retries_off(sim, cls, model):
    "`num_retries=0`: the 429 is the caller's at once, after 1 request"
    sim.script(Fault(status=429, headers={'retry-after': '0'}), Reply(text='Too late.'))
    chat = mk(cls, sim, model, num_retries=0)
    with pytest.raises(litellm.RateLimitError): await ask(chat, 'Hello?')
    assert [r.status for r in sim.requests] == [429]
    assert chat.hist == [u('Hello?')]

@CLASSES
@MODELS
async def test_persistent_500_is_tried_3_times_by_default(sim, cls, model):
    "A 500 that persists, default settings: 3 requests (2 retries), then the error; the history keeps the message"
    sim.script(*[Fault(status=500, headers={'retry-after': '0'}) for _ in range(6)])
    chat = mk(cls, sim, model)
    with pytest.raises(litellm.InternalServerError): await ask(chat, 'Hello?')
    assert [r.status for r in sim.requests] == [500, 500, 500]
    assert chat.hist == [u('Hello?')]

# ================================================================ Capability metadata is not the truth

def web_search_tools(body)->list:
    return [t for t in body.get('tools') or [] if 'web_search' in str(t.get('type', '')) + str(t.get('name', ''))]

@CLASSES
@pytest.mark.parametrize('where', ['chat', 'call'])
async def test_search_on_claude_alias_is_sent(sim, cls, where):
    "`search='l'` on 'anthropic/claude-sonnet-4-5' (litellm's alias entry says no web search): sent, not refused"
    sim.script(Reply(text='Found it.', citations=[{'url': 'https://example.com/a', 'title': 'A', 'cited_text': 'Found'}]))
    chat = mk(cls, sim, SONNET, **({'search': 'l'} if where == 'chat' else {}))
    res = await ask(chat, 'Look it up.', **({} if where == 'chat' else {'search': 'l'}))
    assert text(res).startswith('Found it.')
    assert len(sim.requests) == 1
    accepted(sim, SONNET)
    assert web_search_tools(sim.bodies[-1]), sim.bodies[-1].get('tools')

@CLASSES
async def test_think_is_not_refused_from_model_info(sim, cls):
    """`think='l'` on gpt-4o (litellm's info: no `reasoning_effort`): lisette doesn't refuse it. It is sent (with
    `reasoning_effort`), or refused by litellm itself (its `UnsupportedParamsError`), never by lisette"""
    sim.script(Reply(text='Thought about it.'))
    chat = mk(cls, sim, GPT, num_retries=0)
    err, res = None, None
    try: res = await ask(chat, 'Think hard.', think='l')
    except Exception as e: err = e
    if err is None:
        assert text(res) == 'Thought about it.'
        assert len(sim.requests) == 1 and sim.bodies[-1].get('reasoning_effort') == 'low', sim.bodies
        assert chat.hist == [u('Think hard.'), a('Thought about it.')]
    else:
        assert type(err).__module__.startswith('litellm'), f'refused by lisette: {err!r}'
        assert isinstance(err, litellm.UnsupportedParamsError), repr(err)
        assert sim.requests == []

@CLASSES
@STREAMS
async def test_prefill_on_gpt4o_is_sent_with_a_warning(sim, cls, stream):
    "`prefill=` on gpt-4o (litellm's info: no prefill): sent (a warning says it may not be taken), never dropped"
    sim.script(Reply(text=' a short answer.'))
    chat = mk(cls, sim, GPT)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        if cls is AsyncChat: res = await ask(chat, 'Answer briefly.', stream, prefill='Here is')
        else: res = list(chat('Answer briefly.', stream=True, prefill='Here is'))[-1] if stream else chat('Answer briefly.', prefill='Here is')
    assert text(res) == 'Here is a short answer.'
    assert sim.bodies[-1]['messages'][-1] == {'role': 'assistant', 'content': 'Here is'}
    assert any('prefill' in str(w.message).lower() for w in ws), [str(w.message) for w in ws]
    assert chat.hist == [u('Answer briefly.'), a('Here is a short answer.')]

# ================================================================ Tools and concurrency

@CLASSES
@MODELS
async def test_both_classes_run_both_kinds_of_tool(sim, cls, model):
    "An async tool in a sync `Chat` (called from a thread with a running loop, as in Jupyter) runs: its result reaches the model"
    sim.script(Reply(calls=[Call('aadd', {'a': 2, 'b': 3}, id='call_a'), Call('add', {'a': 4, 'b': 5}, id='call_s')]),
               Reply(text='5 and 9.'))
    chat = mk(cls, sim, model, tools=[aadd, add])
    res = await chat('Add both.') if cls is AsyncChat else chat('Add both.')   # sync: right here, in the loop's thread
    assert text(res) == '5 and 9.'
    assert tool_texts(chat.hist) == ['5', '9']
    accepted(sim, model)
    assert ['5', '9'] == [t for t in body_texts(sim.bodies[-1]) if t in ('5', '9')]
    assert not any('coroutine' in t for t in body_texts(sim.bodies[-1]))

OWN_CHAT = r'Error: RuntimeError: .*(own chat|chat that is running it)'

@MODELS
async def test_async_tool_calling_its_own_asyncchat_gets_an_error(sim, model):
    "An async tool that awaits its own `AsyncChat`: an error result naming the problem (not a hang); the call finishes"
    async def ask_myself(q:str # a question
                        )->str:
        "Ask this very chat"
        return text(await chat(q))
    sim.script(Reply(calls=[Call('ask_myself', {'q': 'Inner?'}, id='call_i')]), Reply(text='I could not ask myself.'),
               Reply(text='Inner answer (should never be sent).'))
    chat = mk(AsyncChat, sim, model, tools=[ask_myself])
    try: res = await asyncio.wait_for(chat('Ask yourself.'), 5)
    except (TimeoutError, asyncio.TimeoutError): pytest.fail('the call hangs: the tool waits for its own chat, which waits for the tool')
    assert text(res) == 'I could not ask myself.'
    [err] = tool_texts(chat.hist)
    assert re.match(OWN_CHAT, err), err
    assert len(sim.requests) == 2
    accepted(sim, model)
    assert err in body_texts(sim.bodies[-1])
    await next_call_works(sim, chat, model)

@MODELS
def test_sync_tool_calling_its_own_chat_gets_an_error(sim, model):
    "A tool that calls the sync `Chat` running it: an error result naming the problem ('busy' was the old, wrong one)"
    def ask_myself(q:str # a question
                  )->str:
        "Ask this very chat"
        return text(chat(q))
    sim.script(Reply(calls=[Call('ask_myself', {'q': 'Inner?'}, id='call_i')]), Reply(text='I could not ask myself.'),
               Reply(text='Inner answer (should never be sent).'))
    chat = mk(Chat, sim, model, tools=[ask_myself])
    res = run_bounded(lambda: chat('Ask yourself.'))
    assert text(res) == 'I could not ask myself.'
    [err] = tool_texts(chat.hist)
    assert re.match(OWN_CHAT, err), err
    assert len(sim.requests) == 2
    accepted(sim, model)

@MODELS
def test_sync_stream_read_in_one_thread_is_not_cut_by_a_call_from_another(sim, model):
    """Thread A reads a stream slowly; thread B calls the same `Chat`: A's stream ends with its full response (B waits)
    or raises `StreamAbandoned`, never stops silently; B gets its answer"""
    story = 'one two three four five six seven eight'
    sim.script(Reply(text=story, chunks=8, pace=0.01), Reply(text='B answered.'))
    chat = mk(Chat, sim, model)
    got, a_err, b_out, first = [], [], [], threading.Event()
    def reader():
        try:
            for o in chat('A?', stream=True):
                got.append(o); first.set()
                time.sleep(0.02)   # a slow reader
        except Exception as e: a_err.append(e)
        finally: first.set()
    def caller():
        try: b_out.append(chat('B?'))
        except Exception as e: b_out.append(e)
    ta = threading.Thread(target=reader, daemon=True); ta.start()
    assert first.wait(10)
    tb = threading.Thread(target=caller, daemon=True); tb.start()
    ta.join(20); tb.join(20)
    assert not ta.is_alive() and not tb.is_alive(), 'a thread hangs'
    abandoned = bool(a_err) and is_abandoned(a_err[0])
    assert not a_err or abandoned, f'A raised {a_err[0]!r}'
    if not abandoned:
        assert isinstance(got[-1], ModelResponse), f'A stream stopped after {len(got)} items, silently: no final response, no error'
        assert text(got[-1]) == story
    assert isinstance(b_out[0], ModelResponse), f'B: {b_out[0]!r}'
    assert text(b_out[0]) == 'B answered.'
    accepted(sim, model)
    assert alternates(chat.hist), roles(chat.hist)
    assert chat.hist[-1] == a('B answered.')
    if not abandoned:
        assert chat.hist == [u('A?'), a(story), u('B?'), a('B answered.')]
        assert body_texts(sim.bodies[-1]) == ['A?', story, 'B?']

@MODELS
def test_sync_stream_left_unread_then_read_raises(sim, model):
    "In one thread, a stream left unread is closed by the next call; reading it afterwards raises `StreamAbandoned`"
    sim.script(Reply(text='one two three four five six', chunks=6), Reply(text='B answered.'))
    chat = mk(Chat, sim, model)
    g = chat('A?', stream=True)
    next(g)
    res = chat('B?')
    assert text(res) == 'B answered.'
    accepted(sim, model)
    hist = copy.deepcopy(chat.hist)
    with pytest.raises(Exception) as ei: next(g)
    assert is_abandoned(ei.value), f'reading the closed stream raised {ei.value!r}, not StreamAbandoned'
    assert chat.hist == hist   # reading it changed nothing
    assert alternates(chat.hist) and chat.hist[-1] == a('B answered.'), chat.hist
    assert len(sim.requests) == 2

@MODELS
async def test_queued_call_cancelled_as_the_earlier_call_ends_never_sends(sim, model):
    """A call queued behind another, cancelled in the very loop iteration the earlier call ends (the race
    `asyncio.wait_for` loses on Python 3.10/3.11): it raises CancelledError, sends nothing, leaves no trace"""
    sim.script(Reply(text='A answered.', delay=0.2), Reply(text='B answered (should never be sent).'))
    chat = mk(AsyncChat, sim, model)
    task_a = asyncio.create_task(chat('A?'))
    await wait_until(lambda: chat._active is not None)
    turn_a = chat._active
    task_b = asyncio.create_task(chat('B?'))
    set_ended = turn_a.ended.set
    def set_and_cancel_b():
        set_ended()
        task_b.cancel()    # the same iteration: the wait B is in finishes and B is cancelled at once
    turn_a.ended.set = set_and_cancel_b
    assert text(await asyncio.wait_for(task_a, 5)) == 'A answered.'
    try: b = await asyncio.wait_for(task_b, 5)
    except asyncio.CancelledError: b = 'cancelled'
    assert b == 'cancelled', f'the cancelled call went on and returned {b!r}'
    assert len(sim.requests) == 1, f'the cancelled call sent its request: {[body_texts(x) for x in sim.bodies]}'
    assert chat.hist == [u('A?'), a('A answered.')]
    await next_call_works(sim, chat, model)
    assert body_texts(sim.bodies[-1]) == ['A?', 'A answered.', 'Next?']

class Address(BaseModel):
    "A postal address"
    city: str = Field(description='the city it is in')
    street: str = Field(description='the street and number')

class Person(BaseModel):
    "A person and where they live"
    name: str = Field(description="the person's full name")
    address: Address = Field(description='where they live')

@dataclass
class Point:
    "A point on the plane"
    x: int  # the horizontal coordinate
    y: int  # the vertical coordinate

def tool_schema(body)->dict:
    "The parameters schema of the (only) tool in a request body, either wire format"
    [t] = body['tools']
    return t['input_schema'] if 'input_schema' in t else t['function']['parameters']

STRUCTS = [
    ('nested_pydantic', Person, {'name': 'Ada Lovelace', 'address': {'city': 'London', 'street': '12 St James Sq'}},
     ['name', 'address'], ["the person's full name", 'where they live', 'the city it is in', 'the street and number'], ['city', 'street']),
    ('dataclass', Point, {'x': 3, 'y': 4}, ['x', 'y'], ['the horizontal coordinate', 'the vertical coordinate'], []),
]

@CLASSES
@MODELS
@pytest.mark.parametrize('tool,args,props,descs,inner', [c[1:] for c in STRUCTS], ids=[c[0] for c in STRUCTS])
async def test_structured_sends_the_real_schema(sim, cls, model, tool, args, props, descs, inner):
    """`structured()` with a pydantic model (nested) or a dataclass: the tool schema sent has its real properties and
    descriptions, and the result is an instance"""
    sim.script(Reply(calls=[Call(tool.__name__, args, id='call_x')]))
    chat = mk(cls, sim, model)
    res = await chat.structured('Make one.', tool) if cls is AsyncChat else await asyncio.to_thread(chat.structured, 'Make one.', tool)
    assert isinstance(res, tool), res
    assert res == (tool(**args) if tool is Point else Person.model_validate(args))
    if tool is Person: assert isinstance(res.address, Address)
    assert len(sim.requests) == 1
    accepted(sim, model, 0)
    schema = tool_schema(sim.bodies[0])
    assert sorted(schema.get('properties', {})) == sorted(props), schema
    s = json.dumps(schema)
    for d in descs: assert d in s, f'{d!r} missing from the schema sent: {s}'
    for k in inner: assert f'"{k}"' in s, f'{k!r} missing from the schema sent: {s}'

# ================================================================ Messages that mislead

@CLASSES
def test_lambda_tool_says_use_a_def(cls):
    "A lambda as a tool: the error says to use a `def` with a docstring and type hints"
    with pytest.raises((ValueError, TypeError)) as ei: cls(GPT, tools=[lambda x: x], api_key='sk-test')
    msg = str(ei.value)
    assert re.search(r'\bdef\b', msg) and re.search(r'docstring', msg, re.I) and re.search(r'type hint', msg, re.I), msg

def test_local_install_hint_points_at_this_repository():
    "The local model's install hint gives this repository's install command, not PyPI's unrelated `lisette`"
    from lisette.local import check_server_installed, LocalModelError
    with pytest.raises(LocalModelError) as ei: check_server_installed(('no_such_module_for_this_test',))
    msg = str(ei.value)
    assert 'pip install' in msg, msg
    assert 'PyPI' not in msg and 'pip install "lisette[local]"' not in msg, msg

OFFLINE_IMPORT = textwrap.dedent('''
    import json, os, socket
    tried = []
    def refuse(*a, **k):
        tried.append(repr(a[:2]))
        raise OSError('no network in this test')
    socket.getaddrinfo = refuse
    socket.socket.connect = lambda self, addr: refuse(addr)
    socket.create_connection = refuse
    import lisette
    import litellm
    print(json.dumps(dict(quiet=litellm.suppress_debug_info, local=os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'), tried=tried)))
''')

def test_import_lisette_alone_makes_litellm_quiet_and_offline():
    "`import lisette; import litellm` with no network: no connection tried, the local cost map used, debug info off"
    env = {k:v for k,v in os.environ.items() if not k.startswith('LITELLM')}
    r = subprocess.run([sys.executable, '-c', OFFLINE_IMPORT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['tried'] == [], f'importing tried the network: {out["tried"]}'
    assert out['local'], out
    assert out['quiet'] is True, out

@CLASSES
@MODELS
async def test_unreadable_response_is_not_sent_again(sim, cls, model):
    """A whole (non-streamed) response nested too deep for litellm to read: the caller gets litellm's error at once,
    after one request (sending it again would get the same response), and the history is as before the call"""
    chat = mk(cls, sim, model, tools=[add])
    if deep_json_reads():   # Python 3.13 and later read it, and so does litellm: the call goes on, its tool call answered
        sim.script(Reply(calls=[Call('add', DEEP, id='call_0')]), Reply(text='Fine.'))
        assert text(await ask(chat, 'Go deep.', False)) == 'Fine.' and len(sim.requests) == 2
        return
    sim.script(*[Reply(calls=[Call('add', DEEP, id=f'call_{i}')]) for i in range(3)], Reply(text='Fine.'))
    with pytest.raises(Exception) as e: await ask(chat, 'Go deep.', False)
    assert re.search('Invalid response object|Unable to get json response', str(e.value)), str(e.value)[:300]
    assert len(sim.requests) == 1
    assert roles(chat.hist) == ['user']
