"""The fault matrix: what the user sees, and what the history holds, when the provider, the network, the caller,
the model or the event loop misbehaves; secrets under debug logging; 500 chats at once, and none left alive after them.

Everything runs against `lisette.testing.Sim` on loopback, for `Chat` and `AsyncChat`, streamed and not, in the
Anthropic and the OpenAI wire format. A test that fails here names a lisette bug: none is skipped or marked xfail."""
import asyncio, gc, json, logging, re, secrets, threading, time, traceback, types
from contextlib import contextmanager
from pathlib import Path
import pytest
import lisette
from lisette import Chat, CANCELLED, delta_text   # first: it keeps litellm's import offline and quiet
from lisette.quirks import RETRIES
import litellm, openai
from litellm import ModelResponse, ModelResponseStream
from lisette import AsyncChat, StreamAbandoned
from lisette.testing import Reply, Call, Fault, anthropic_events, openai_events

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])
STREAMS = pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
WHERE = pytest.mark.parametrize('where', ['chat', 'call'])   # a setting given to the chat, or to one call
LISETTE = str(Path(lisette.__file__).parent)

from helpers import *

def split_kw(where, **kw): return (kw, {}) if where == 'chat' else ({}, kw)

@pytest.fixture(autouse=True)
def _collect_after():
    yield
    gc.collect(1)   # as in `sync_call` (helpers): what a test left open is closed here, not inside some later request

def said(m)->str: return m['content'] if isinstance(m['content'], str) else ' '.join(p.get('text', '') for p in m['content'])

def before_next(h:list)->list:
    "The history `h` as it was before the call 'Next?' (which merged into an unanswered message, if there was one)"
    asked = h[-2]['content']
    return h[:-2] if asked == 'Next?' else h[:-2] + [u(asked.removesuffix('\n\nNext?'))]

def from_litellm(e)->bool:
    "Is `e` one of litellm's own exceptions (which all derive from `openai.APIError`)?"
    return isinstance(e, openai.APIError) and type(e).__module__.startswith('litellm')

async def next_call_works(sim, chat, model, stream=False):
    "A fresh message on `chat` gets its answer, the history ends with it, and the provider's strict check passes"
    sim.default = None
    sim.script(Reply(text='Next answer.'))
    res = await ask(chat, 'Next?', stream)
    assert text(res) == 'Next answer.'
    asked, answer = chat.hist[-2:]
    assert answer == a('Next answer.') and asked['role'] == 'user' and said(asked).endswith('Next?')
    accepted(sim, model)

# ---------------------------------------------------------------- 1. provider errors: 429, 500, 529

def fault(kind:str)->Fault:
    "A provider error; `retry-after-ms` keeps the OpenAI SDK's waits short (it reads it before `retry-after`)"
    ms = {'retry-after-ms': '10'}
    return {'429': Fault(status=429, headers={'retry-after': '1'} | ms), '500': Fault(status=500, headers=ms),
            '529': Fault(status=529, headers=ms)}[kind]

ERRORS = {'429': litellm.RateLimitError, '500': litellm.InternalServerError,
          '529': (litellm.InternalServerError, litellm.APIError)}   # 529: Anthropic's overloaded, OpenAI's generic 5xx
KINDS = pytest.mark.parametrize('kind', ['429', '500', '529'])

@CLASSES
@STREAMS
@MODELS
@KINDS
@WHERE
async def test_provider_error_then_success(sim, cls, stream, model, kind, where):
    "One 429/500/529, then a reply: retried within `num_retries` (set on the chat or on the call), the answer comes back"
    sim.script(fault(kind), Reply(text='Recovered.'))
    ckw, kw = split_kw(where, num_retries=2)
    chat = mk(cls, sim, model, **ckw)
    res = await ask(chat, 'Hello?', stream, **kw)
    assert text(res) == 'Recovered.'
    assert [r.status for r in sim.requests] == [int(kind), 200]   # the error, then one retry
    assert chat.hist == [u('Hello?'), a('Recovered.')]
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['Hello?']
    await next_call_works(sim, chat, model, stream)

@CLASSES
@STREAMS
@MODELS
@KINDS
@WHERE
async def test_provider_error_persists(sim, cls, stream, model, kind, where):
    """A 429/500/529 that doesn't go away, with `num_retries=0` (on the chat or the call): one request, a litellm
    exception of the right kind; the history holds the user's message once, and `chat()` goes on from it"""
    sim.script(*[fault(kind) for _ in range(4)])
    ckw, kw = split_kw(where, num_retries=0)
    chat = mk(cls, sim, model, **ckw)
    with pytest.raises(ERRORS[kind]) as ei: await ask(chat, 'Hello?', stream, **kw)
    assert ei.value.status_code == int(kind) or (kind == '529' and 'overloaded' in str(ei.value)), ei.value.status_code  # litellm: Anthropic's 529 -> 500
    assert len(sim.requests) == 1, [r.status for r in sim.requests]
    assert chat.hist == [u('Hello?')]
    sim.reset(); sim.script(Reply(text='Back again.'))
    assert text(await ask(chat, None, stream, **kw)) == 'Back again.'
    assert chat.hist == [u('Hello?'), a('Back again.')]
    accepted(sim, model)
    assert body_texts(sim.bodies[-1]) == ['Hello?']   # the user's message went out once
    await next_call_works(sim, chat, model, stream)

# OpenAI-compatible providers of litellm's: some go through the OpenAI SDK (which retries on its own), some don't
COMPATIBLE = pytest.mark.parametrize('model', [SONNET, GPT, 'hosted_vllm/m', 'perplexity/sonar', 'lm_studio/m'],
                                     ids=['anthropic', 'openai', 'hosted_vllm', 'perplexity', 'lm_studio'])

@CLASSES
@COMPATIBLE
@pytest.mark.parametrize('n', [None, 0, 1, 2])
async def test_num_retries_caps_the_attempts(sim, cls, model, n):
    "A 500 that persists reaches the provider `num_retries + 1` times (unset: 3, two retries), whatever the provider"
    sim.script(*[fault('500') for _ in range(2*(n or 0) + 3)])
    chat = mk(cls, sim, model, **({} if n is None else {'num_retries': n}))
    with pytest.raises(litellm.InternalServerError): await ask(chat, 'Hello?')
    assert chat.hist == [u('Hello?')]
    assert len(sim.requests) == (RETRIES if n is None else n) + 1, f'num_retries={n}, yet the provider got {len(sim.requests)} requests'

# ---------------------------------------------------------------- 2. time-outs

@CLASSES
@STREAMS
@MODELS
@WHERE
async def test_stalled_provider_times_out(sim, cls, stream, model, where):
    """A provider that stalls, with `timeout=0.5` on the chat or the call: `litellm.Timeout` while the provider still
    stalls (a minute), history whole"""
    sim.script(*[Fault(delay=60, then=Reply(text='Too late.')) for _ in range(3)])
    ckw, kw = split_kw(where, timeout=0.5)
    chat = mk(cls, sim, model, **ckw)
    with pytest.raises(litellm.Timeout): await asyncio.wait_for(ask(chat, 'Hello?', stream, **kw), HANG)
    assert sim.requests and all(r.status is None for r in sim.requests), 'the caller waited for the provider'
    assert chat.hist == [u('Hello?')]
    sim.reset(); sim.script(Reply(text='Here now.'))
    assert text(await ask(chat, None, stream, **kw)) == 'Here now.'
    assert chat.hist == [u('Hello?'), a('Here now.')]
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
@WHERE
async def test_tool_that_never_returns(sim, cls, stream, model, where):
    """A tool that hangs, with `tool_timeout=0.3` (chat or call): answered 'Error: the tool timed out', the chat finishes
    while the tool still hangs"""
    release, returned = threading.Event(), threading.Event()
    def hang(x:int # anything
            )->str:
        "Never returns (until the test ends)"
        release.wait(60)
        returned.set()
        return 'late'
    sim.script(Reply(calls=[Call('hang', {'x': 1}, id='call_h'), Call('add', {'a': 1, 'b': 2}, id='call_a')]),
               Reply(text='The other one hung; 1 + 2 is 3.'))
    ckw, kw = split_kw(where, tool_timeout=0.3)
    chat = mk(cls, sim, model, tools=[hang, add], **ckw)
    try:
        res = await asyncio.wait_for(ask(chat, 'Do both.', stream, **kw), HANG)
        assert not returned.is_set(), 'the chat waited for the hung tool'
        assert text(res) == 'The other one hung; 1 + 2 is 3.'
        assert roles(chat.hist) == ['user', 'assistant', 'tool', 'tool', 'assistant']
        assert tool_texts(chat.hist) == ['Error: the tool timed out', '3']
        accepted(sim, model)
    finally: release.set()

@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['never', 'stubborn'])
async def test_async_tool_that_never_returns(sim, stream, model, kind):
    """An async tool that never returns, or one that, cancelled at its time-out, takes a minute more to stop:
    `tool_timeout=0.3` still answers it 'Error: the tool timed out' without waiting for it"""
    cleaned = []
    async def never(x:int # anything
                   )->str:
        "Never returns"
        await asyncio.Event().wait()
    async def stubborn(x:int # anything
                      )->str:
        "Cleans up for a minute when cancelled, then returns anyway"
        try: await asyncio.sleep(60)
        except asyncio.CancelledError: await asyncio.sleep(60)
        cleaned.append(x)
        return 'finished anyway'
    tool = {'never': never, 'stubborn': stubborn}[kind]
    sim.script(Reply(calls=[Call(kind, {'x': 1}, id='call_1')]), Reply(text='It hung.'))
    chat = mk(AsyncChat, sim, model, tools=[tool], tool_timeout=0.3)
    res = await asyncio.wait_for(ask(chat, 'Go.', stream), HANG)
    assert text(res) == 'It hung.' and not cleaned
    assert tool_texts(chat.hist) == ['Error: the tool timed out']
    accepted(sim, model)

# ---------------------------------------------------------------- 3. broken responses: cut streams, malformed events

def _events(model, reply):
    body = {'model': 'm', 'stream': True, 'stream_options': {'include_usage': True}, 'messages': []}
    return (anthropic_events if model == SONNET else openai_events)(reply, body)

def _is_args(model, ev)->bool:
    "Does streamed event `ev` carry a piece of a tool call's arguments?"
    if model == SONNET: return ev.get('type') == 'content_block_delta' and ev['delta'].get('type') == 'input_json_delta'
    tcs = (ev['choices'][0]['delta'].get('tool_calls') or [{}]) if ev.get('choices') else [{}]
    return bool(tcs[0].get('function', {}).get('arguments'))

def _is_text(model, ev)->bool:
    "Does streamed event `ev` carry a piece of text?"
    if model == SONNET: return ev.get('type') == 'content_block_delta' and ev['delta'].get('type') == 'text_delta'
    return bool(ev.get('choices') and ev['choices'][0]['delta'].get('content'))

def broken_reply(): return Reply(text='Let me add these up.', calls=[Call('add2', {'a': 2, 'b': 3}, id='call_1')], chunks=4)

def broken(model, kind)->Fault:
    "`broken_reply()`, broken in way `kind`"
    evs = _events(model, broken_reply())
    args = [i for i,e in enumerate(evs) if _is_args(model, e)]
    texts = [i for i,e in enumerate(evs) if _is_text(model, e)]
    assert len(args) >= 2 and len(texts) >= 3
    return {'cut_after_first_event': Fault(cut_after=1, then=broken_reply()),
            'cut_inside_tool_args': Fault(cut_after=args[0] + 1, then=broken_reply()),     # one piece of the JSON, then gone
            'malformed_text_event': Fault(malformed=texts[1], then=broken_reply()),
            'malformed_tool_args_event': Fault(malformed=args[0], then=broken_reply()),
            'overloaded_mid_stream': Fault(status=529, cut_after=args[0] + 1, then=broken_reply()),  # an error event, then the end
            'cut_json_body': Fault(cut_after=40, then=broken_reply()),
            'malformed_json_body': Fault(malformed=True, then=broken_reply())}[kind]

BROKEN = [(True, 'cut_after_first_event'), (True, 'cut_inside_tool_args'), (True, 'overloaded_mid_stream'),
          (True, 'malformed_text_event'), (True, 'malformed_tool_args_event'), (False, 'cut_json_body'),
          (False, 'malformed_json_body')]

def summary(items)->str:
    "A short account of what a call yielded"
    full = [o for o in items if isinstance(o, ModelResponse)]
    if not full: return f'{len(items)} items'
    m, ch = full[0].choices[0].message, full[0].choices[0]
    calls = [(tc.function.name, tc.function.arguments) for tc in m.tool_calls or []]
    return f'a full response with text {m.content!r}, calls {calls}, finish_reason {ch.finish_reason!r}'

@CLASSES
@MODELS
@pytest.mark.parametrize('stream,kind', BROKEN, ids=[k for _,k in BROKEN])
async def test_broken_response(sim, cls, model, stream, kind):
    """A reply (text and a tool call) that breaks on the way: the user gets a litellm error and never a full response;
    no tool runs; the history is as before the round; `chat()` then gets a whole reply"""
    add2, ran = recording_add()
    # every round-1 request (retries too) gets the broken reply; a round 2, if lisette went on, gets an answer
    sim.default = lambda body: broken(model, kind) if last_message(body)[0] == 'text' else Reply(text='Round two.')
    chat = mk(cls, sim, model, tools=[add2])
    got, err = [], None
    try: await collect(chat, 'Add 2 and 3.', stream, out=got)
    except Exception as e: err = e
    assert from_litellm(err), (f'no clear error ({err!r}): the call yielded {summary(got)}; '
                               f'tools ran with {ran}; the history became {chat.hist}')
    assert not any(isinstance(o, ModelResponse) for o in got), summary(got)
    assert ran == []
    assert chat.hist == [u('Add 2 and 3.')]
    sim.default = None; sim.reset(); sim.script(Reply(text='2 + 3 is 5.'))
    assert text(await ask(chat, None, stream)) == '2 + 3 is 5.'
    assert chat.hist == [u('Add 2 and 3.'), a('2 + 3 is 5.')]
    accepted(sim, model)
    await next_call_works(sim, chat, model, stream)

def open_http_bodies()->int:
    "Suspended generators of httpx and httpcore: response bodies begun and neither read to the end nor closed"
    return sum(isinstance(g, types.GeneratorType) and g.gi_frame is not None and
               ('/httpx/' in g.gi_code.co_filename or '/httpcore/' in g.gi_code.co_filename) for g in gc.get_objects())

@MODELS
@pytest.mark.parametrize('end', ['whole', 'provider_error', 'cut', 'abandoned'])
def test_sync_stream_leaves_no_open_response(sim, model, end):
    """A sync stream, however it ends (read whole, a provider error, cut, left after one chunk), leaves no response
    body open. One left open is closed later by the garbage collector, at whatever allocation triggers it: when that
    is inside httpcore's connection-pool lock, on a later request through litellm's shared client, the close waits
    for that same lock, and the thread hangs for good (seen here: `PoolRequest()` -> gc -> `iter_lines` closed ->
    `ConnectionPool.close` -> `_optional_thread_lock.acquire()`)"""
    sim.script({'whole': Reply(text='one two three'), 'provider_error': Fault(status=500),
                'cut': Fault(cut_after=3, then=Reply(text='a b c d e f g')), 'abandoned': Reply(text='a b c d e f g', chunks=7)}[end])
    gc.collect(); gc.disable()
    try:
        before = open_http_bodies()
        chat = mk(Chat, sim, model, num_retries=0)
        g = chat('Hi', stream=True)
        try:
            if end == 'abandoned': next(g)
            else: list(g)
        except Exception: pass
        del g, chat
        after = open_http_bodies()
    finally: gc.enable()
    assert after == before, f'{after - before} suspended httpx/httpcore generators left for the garbage collector to close'

# ---------------------------------------------------------------- 4. bad input from the caller

BAD_CALLS = [
    ('empty', dict(msg=''), ValueError, 'empty'),
    ('blank', dict(msg=' \n\t'), ValueError, 'empty'),
    ('empty_list', dict(msg=[]), ValueError, 'empty'),
    ('empty_text_part', dict(msg=['']), ValueError, 'empty'),
    ('empty_message_dict', dict(msg={'role': 'user', 'content': ''}), ValueError, 'empty'),
    ('int', dict(msg=42), TypeError, r'\bint\b'),
    ('float_part', dict(msg=['Hi', 3.5]), TypeError, 'float'),
    ('dict_without_role_or_type', dict(msg={'text': 'Hi'}), (TypeError, ValueError), 'role|type'),
    ('unknown_role', dict(msg={'role': 'robot', 'content': 'Hi'}), ValueError, 'robot'),
    ('message_without_content', dict(msg={'role': 'user'}), ValueError, 'content'),
    ('max_tool_rounds_0', dict(msg='Hi', max_tool_rounds=0), ValueError, 'max_tool_rounds'),
    ('negative_temp', dict(msg='Hi', temp=-0.5), ValueError, 'temp'),
    ('negative_temperature_kwarg', dict(msg='Hi', temperature=-0.5), ValueError, 'temp'),
    ('unknown_model_kwarg', dict(msg='Hi', model='no-such-model'), ValueError, 'no-such-model'),
    ('messages_kwarg', dict(msg='Hi', messages=[u('Something else')]), (TypeError, ValueError), 'messages'),
]

def origin(e)->str:
    "file:line of the innermost frame of `e`'s traceback"
    f = traceback.extract_tb(e.__traceback__)[-1]
    return f'{f.filename}:{f.lineno}'

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kw,exc,pat', [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
async def test_bad_call(sim, cls, stream, model, kw, exc, pat):
    """A bad argument: a ValueError/TypeError raised by lisette at the call (for `AsyncChat`, at `await chat(...)`,
    streamed or not) that names the problem; the history untouched; nothing sent; the chat still works"""
    chat = mk(cls, sim, model, tools=[add], hist=['Hi.', 'Hello!'])
    before = json.dumps(chat.hist)
    kw = dict(kw); msg = kw.pop('msg')
    err, res, later = None, None, None
    try:
        if cls is AsyncChat:
            call = chat(msg, stream=stream, **kw)   # a coroutine: nothing happens until it is awaited
            res = await call
        else: res = chat(msg, stream=stream, **kw)  # at the call, not when its stream is read
    except Exception as e: err = e
    if err is None and stream:   # no error at the call: what does reading its stream do?
        try:
            if cls is AsyncChat: [o async for o in res]
            else: await asyncio.to_thread(list, res)
        except Exception as e: later = e
    await asyncio.sleep(0.05)
    assert isinstance(err, exc), (f'expected {exc} at the call, got {err!r}' + (f' from {origin(err)}' if err else '')
        + (f'; reading the stream raised {later!r} from {origin(later)}' if later else '')
        + f'; {len(sim.requests)} requests sent; the history gained {json.loads(before) != chat.hist and chat.hist[2:]}')
    assert re.search(pat, str(err), re.I), str(err)
    assert json.dumps(chat.hist) == before
    assert sim.requests == []
    await next_call_works(sim, chat, model, stream)
    assert origin(err).startswith(LISETTE), f'raised inside a dependency, at {origin(err)}'

def no_hints(x):
    "A tool without type hints"
    return x

def no_doc(x:int)->int: return x

BAD_CHATS = [
    ('unknown_model', dict(model='no-such-model'), ValueError, 'no-such-model'),
    ('tool_without_type_hints', dict(tools=[no_hints]), ValueError, 'type hints'),
    ('tool_without_docstring', dict(tools=[no_doc]), ValueError, 'docstring'),
    ('non_callable_tool', dict(tools=[add, 'add']), TypeError, 'function'),
    ('none_as_tool', dict(tools=[None]), TypeError, 'function'),
    ('negative_temp', dict(temp=-0.1), ValueError, 'temp'),
    ('negative_temperature_kwarg', dict(temperature=-0.1), ValueError, 'temp'),
]

@CLASSES
@pytest.mark.parametrize('kw,exc,pat', [c[1:] for c in BAD_CHATS], ids=[c[0] for c in BAD_CHATS])
def test_bad_chat(sim, cls, kw, exc, pat):
    "A bad chat: a ValueError/TypeError from lisette when it is made, naming the problem; nothing sent"
    err = None
    try: cls(**({'model': SONNET, 'api_base': sim.anthropic_base, 'api_key': 'sk-test'} | kw))
    except Exception as e: err = e
    assert isinstance(err, exc), f'expected {exc}, got {err!r}'
    assert re.search(pat, str(err), re.I), str(err)
    assert origin(err).startswith(LISETTE), f'raised inside a dependency, at {origin(err)}'
    assert sim.requests == []

# ---------------------------------------------------------------- 5. bad output from the model

@CLASSES
@STREAMS
@MODELS
async def test_calls_outside_the_tools_never_run(sim, cls, stream, model):
    "Tool calls naming builtins, module globals or dotted paths: each answered 'no tool named ...', none looked up"
    names = ['os', 'eval', 'exec', '__import__', 'print', 'mk_msg', 'Chat', 'AsyncChat', 'os.system', 'add.__globals__']
    sim.script(Reply(calls=[Call(n, {'x': 'print(1)'}, id=f'call_{i}') for i,n in enumerate(names)]),
               Reply(text='None of those exist.'))
    chat = mk(cls, sim, model, tools=[add])
    assert text(await ask(chat, 'Break out.', stream)) == 'None of those exist.'
    assert tool_texts(chat.hist) == [f"Error: no tool named {n!r}; the tools are: add" for n in names]
    assert roles(chat.hist) == ['user', 'assistant'] + ['tool']*len(names) + ['assistant']
    accepted(sim, model)
    await next_call_works(sim, chat, model, stream)

BAD_ARGS = {'truncated_json': '{"a": 1, "b":', 'not_json': 'a=1, b=2', 'json_array': '[1, 2]', 'json_null': 'null',
            'json_string': '"1 and 2"', 'no_arguments': '', 'extra_argument': {'a': 1, 'b': 2, 'c': 3},
            'missing_argument': {'a': 1}}

@CLASSES
@STREAMS
@MODELS
async def test_bad_arguments(sim, cls, stream, model):
    "Arguments that are not JSON, not an object, or don't fit the signature: each an error result, the tool never runs"
    add2, ran = recording_add()
    sim.script(Reply(calls=[Call('add2', v, id=f'call_{k}') for k,v in BAD_ARGS.items()]), Reply(text='All broken.'))
    chat = mk(cls, sim, model, tools=[add2])
    assert text(await ask(chat, 'Add.', stream)) == 'All broken.'
    assert ran == []
    res = dict(zip(BAD_ARGS, tool_texts(chat.hist)))
    for k in ('truncated_json', 'not_json', 'json_array', 'json_null', 'json_string'):
        assert res[k].startswith('Error: arguments'), (k, res[k])
    assert res['no_arguments'].startswith('Error:'), res['no_arguments']   # '' read as {} (missing a, b) or not an object
    assert res['extra_argument'].startswith('Error: TypeError') and "'c'" in res['extra_argument']
    assert res['missing_argument'].startswith('Error: TypeError') and "'b'" in res['missing_argument']
    for tc in chat.hist[1]['tool_calls']:   # kept as sent when it is an object (or empty), else as {}
        assert tc['function']['arguments'] == '' or isinstance(json.loads(tc['function']['arguments']), dict), tc
    accepted(sim, model)
    await next_call_works(sim, chat, model, stream)

@CLASSES
@STREAMS
@MODELS
async def test_arguments_of_the_wrong_type(sim, cls, stream, model):
    """JSON of the wrong types (strings for ints): the tool never runs with them; the model gets the right answer
    (the string coerced) or an error naming the argument"""
    add2, got = recording_add()
    sim.script(Reply(calls=[Call('add2', {'a': '2', 'b': '3'}, id='call_s'), Call('add2', {'a': 'two', 'b': [3]}, id='call_t')]),
               Reply(text='Done.'))
    chat = mk(cls, sim, model, tools=[add2])
    assert text(await ask(chat, 'Add.', stream)) == 'Done.'
    accepted(sim, model)
    r1, r2 = tool_texts(chat.hist)
    assert all(isinstance(x, int) for pair in got for x in pair), f'the tool ran with {got}; the model was told {[r1, r2]}'
    assert r1 == '5' or (r1.startswith('Error:') and "'a'" in r1), r1
    assert r2.startswith('Error:') and "'a'" in r2, r2

@CLASSES
@STREAMS
@MODELS
async def test_enormous_tool_result(sim, cls, stream, model):
    "A 1 MB tool result: the model sees it cut to `max_result` characters, saying so; the caller gets it whole"
    big = ''.join(f'{i:07d}\n' for i in range(125_000))
    assert len(big) == 1_000_000
    def dump(n:int # how many
            )->str:
        "A big dump"
        return big
    sim.script(Reply(calls=[Call('dump', {'n': 1}, id='call_big')]), Reply(text='That was long.'))
    chat = mk(cls, sim, model, tools=[dump])
    out = await collect(chat, 'Dump it.', stream)
    assert text(out[-1]) == 'That was long.'
    results = [o for o in out if isinstance(o, dict)]
    assert len(results) == 1 and results[0]['content'] == big
    seen = big[:100_000] + '\n[… cut from 1,000,000 characters: too long]'
    assert chat.hist[2]['content'] == seen
    assert [t for t in body_texts(sim.bodies[-1]) if t.startswith('0000000')] == [seen]
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
async def test_reply_goes_back_as_the_model_sent_it(sim, cls, stream, model):
    "A reply that is only a tool call goes back to the provider as just that call: no text the model never wrote"
    sim.script(Reply(calls=[Call('add', {'a': 2, 'b': 3}, id='call_1')]), Reply(text='It is 5.'))
    chat = mk(cls, sim, model, tools=[add])
    assert text(await ask(chat, 'Add 2 and 3.', stream)) == 'It is 5.'
    accepted(sim, model)
    assert [t for t in body_texts(sim.bodies[-1]) if t] == ['Add 2 and 3.', '5']

class Thing:
    def __repr__(self): return 'Thing<42>'

class NoRepr:
    def __repr__(self): raise RuntimeError('no repr for you')

RETURNS = {'dict': {'n': 1, 'items': [1, 2]}, 'dict_of_objects': {'n': 2, 'obj': object}, 'list': [1, 'two', None],
           'none': None, 'object': Thing(), 'bytes': b'\x00\xffraw bytes', 'set': {3}, 'broken_repr': NoRepr(), 'nan': float('nan')}

@CLASSES
@STREAMS
@MODELS
async def test_non_string_tool_results(sim, cls, stream, model):
    "Tools returning dicts, lists, None, objects, bytes, sets, an object whose repr fails: each result is readable text"
    def get(key:str # which thing
           )->object:
        "Return a thing"
        return RETURNS[key]
    sim.script(Reply(calls=[Call('get', {'key': k}, id=f'call_{k}') for k in RETURNS]), Reply(text='Got them all.'))
    chat = mk(cls, sim, model, tools=[get])
    assert text(await ask(chat, 'Get them.', stream)) == 'Got them all.'
    res = dict(zip(RETURNS, tool_texts(chat.hist)))
    assert all(isinstance(t, str) and t for t in res.values()), res
    assert json.loads(res['dict']) == {'n': 1, 'items': [1, 2]}
    assert json.loads(res['dict_of_objects']) == {'n': 2, 'obj': repr(object)}   # JSON, what isn't JSON as its repr
    assert json.loads(res['list']) == [1, 'two', None]
    assert res['none'] in ('null', 'None')
    assert 'Thing<42>' in res['object']
    assert 'raw bytes' in res['bytes']
    assert '3' in res['set']
    assert res['broken_repr'].startswith('Error:') and 'no repr for you' in res['broken_repr']
    accepted(sim, model)

# ---------------------------------------------------------------- 6. cancellation and abandonment, point by point

Q = 'What is 2 + 3?'

def walk_provider(cfg):
    "Answers by what a request ends with, so it doesn't matter which requests a cancelled call got out"
    def reply(body):
        kind, last = last_message(body)
        if kind == 'tool': return Reply(text='It is 5.', delay=cfg['d2'])
        if last == Q: return Reply(text='Let me add.', calls=[Call('add', {'a': 2, 'b': 3}, id='call_add'),
                                   Call('wait', {'s': 1}, id='call_wait')], chunks=4, delay=cfg['d1'], pace=cfg['pace'])
        if last == 'A?': return Reply(text='A done.', delay=0.5)
        return Reply(text='Next answer.')
    return reply

def n_text_chunks(seen): return sum(isinstance(o, ModelResponseStream) and bool(delta_text(o)) for o in seen)

STOPS = {   # where a reader stops (or, cancelled, sits busy with the item it just got)
    'first_chunk': lambda seen: len(seen) == 1,
    'between_chunks': lambda seen: n_text_chunks(seen) == 2,
    'full_response': lambda seen: isinstance(seen[-1], ModelResponse),
    'after_results': lambda seen: sum(isinstance(o, dict) for o in seen) == 2}

ROUND_DROPPED = dict(hist=[u(Q)], ids=[])
ROUND_KEPT = dict(roles=['user', 'assistant', 'tool', 'tool'], ids=['call_add', 'call_wait'])
EXPECT = {'queued': dict(hist=[u('A?'), a('A done.')], ids=[]), 'sending': ROUND_DROPPED, 'in_flight': ROUND_DROPPED,
          'first_chunk': ROUND_DROPPED, 'between_chunks': ROUND_DROPPED,
          'full_response': [ROUND_DROPPED, ROUND_KEPT | dict(tools=None)],   # dropped, or kept with every call answered unrun
          'tools_running': ROUND_KEPT | dict(tools=['5', CANCELLED]),
          'after_results': ROUND_KEPT | dict(tools=['5', 'waited']), 'round2': ROUND_KEPT | dict(tools=['5', 'waited'])}

# (plain or stream, the point, what happens there): 'cancel' cancels the task while it awaits inside the call;
# 'cancel_reader' cancels it while the reader is busy with the item it just got (the stream goes with the task);
# 'drop' stops reading and drops the stream; 'keep' stops reading and keeps the stream
WALK = ([('plain', p, 'cancel') for p in ('queued', 'sending', 'in_flight', 'tools_running', 'round2')] +
        [('stream', p, 'cancel') for p in ('queued', 'sending', 'in_flight', 'first_chunk', 'between_chunks',
                                           'tools_running', 'round2')] +
        [('stream', p, act) for p in STOPS for act in ('cancel_reader', 'drop', 'keep')])

@MODELS
@pytest.mark.parametrize('mode,point,action', WALK, ids=['-'.join(w) for w in WALK])
async def test_cancel_or_abandon_at_every_point(sim, model, mode, point, action):
    """An `AsyncChat` call (a tool round: `add` and an async `wait`) cancelled or abandoned at each await point:
    the history holds only whole rounds, and the next call is accepted by the provider's strict check"""
    cfg = dict(d1=3 if point == 'in_flight' else 0, d2=3 if point == 'round2' else 0,
               pace=0.15 if point in ('first_chunk', 'between_chunks') else 0)
    sim.default = walk_provider(cfg)
    started, gate = asyncio.Event(), asyncio.Event()
    if point != 'tools_running': gate.set()
    async def wait(s:float # seconds
                  )->str:
        "Wait for the gate"
        started.set()
        await gate.wait()
        return 'waited'
    chat = mk(AsyncChat, sim, model, tools=[add, wait])
    chat.abandon_after = 0.2
    first = asyncio.create_task(chat('A?')) if point == 'queued' else None
    if first: await wait_until(lambda: len(sim.requests) == 1)

    seen, reached, stop = [], asyncio.Event(), STOPS.get(point)
    async def reader():
        if mode == 'plain': return await chat(Q)
        g = await chat(Q, stream=True)
        async for o in g:
            seen.append(o)
            if stop is not None and stop(seen):
                reached.set()
                if action == 'cancel_reader': await asyncio.sleep(30)
                if action == 'keep': return g
                if action == 'drop': return None
    task = asyncio.create_task(reader())
    if point == 'queued': await asyncio.sleep(0.1)
    elif point == 'sending': await asyncio.sleep(0)
    elif point == 'in_flight': await wait_until(lambda: len(sim.requests) == 1)
    elif point == 'tools_running': await wait_until(started.is_set)
    elif point == 'round2': await wait_until(lambda: len(sim.requests) == 2)
    else: await asyncio.wait_for(reached.wait(), 5)
    if point not in ('sending', 'queued'): await asyncio.sleep(0.03)
    if point == 'queued': assert len(sim.requests) == 1   # still waiting for 'A?'
    kept = None
    if action.startswith('cancel'):
        task.cancel()
        with pytest.raises(asyncio.CancelledError): await asyncio.wait_for(task, 5)
    else: kept = await asyncio.wait_for(task, 5)
    if first: assert text(await asyncio.wait_for(first, 5)) == 'A done.'

    res = await asyncio.wait_for(chat('Next?'), 5)
    assert text(res) == 'Next answer.'
    h = before_next(chat.hist)
    def fits(e):
        if 'hist' in e: return h == e['hist']
        ts = tool_texts(h)
        return (h[0] == u(Q) and roles(h) == e['roles'] and
                (ts == e['tools'] if e['tools'] is not None else all(t.startswith('Error:') for t in ts)))
    exps = EXPECT[point] if isinstance(EXPECT[point], list) else [EXPECT[point]]
    assert any(fits(e) for e in exps), f'after {action} at {point}, the history is {h}'
    exp = next(e for e in exps if fits(e))
    if point not in ('tools_running', 'after_results', 'round2'): assert not started.is_set()   # no tool ran
    accepted(sim, model)
    assert tool_use_ids(sim.bodies[-1]) == exp['ids']
    if kept is not None:
        with pytest.raises(StreamAbandoned): await kept.__anext__()
        assert before_next(chat.hist) == h

def adder(body):
    "A provider that adds: 'add 2 3' -> a call of add(2, 3); a tool result -> 'It is 5.'"
    kind, last = last_message(body)
    if kind == 'tool':
        return Reply(text=f'It is {body_texts(body)[-1]}.', delay=0.05)
    a_, b_ = map(int, last.split('\n\n')[-1].split()[1:])   # the last of merged messages
    return Reply(text=f'Adding {a_} and {b_}.', calls=[Call('add', {'a': a_, 'b': b_}, id=f'call_{a_}_{b_}')], chunks=3, delay=0.05)

@MODELS
async def test_two_tool_rounds_at_once_on_one_chat(sim, model):
    "Two calls at once on one `AsyncChat`, each a tool round, one streamed: one after the other, each whole"
    sim.default = adder
    chat = mk(AsyncChat, sim, model, tools=[add])
    chat.abandon_after = 0.1
    async def streamed(msg): return [o async for o in await chat(msg, stream=True)][-1]
    r1, r2 = await asyncio.wait_for(asyncio.gather(streamed('add 2 3'), chat('add 4 5')), 10)
    assert (text(r1), text(r2)) == ('It is 5.', 'It is 9.')
    h = chat.hist
    assert roles(h) == ['user', 'assistant', 'tool', 'assistant']*2
    assert (h[0], h[4]) == (u('add 2 3'), u('add 4 5')) and tool_texts(h) == ['5', '9']
    for i in range(len(sim.requests)): accepted(sim, model, i)
    assert tool_use_ids(sim.bodies[-1]) == ['call_2_3', 'call_4_5']

@MODELS
async def test_two_calls_at_once_the_first_fails(sim, model):
    "Two calls at once on one `AsyncChat`; the first meets a 500: its error to its caller, the second runs whole"
    sim.script(Fault(status=500))
    sim.default = adder
    chat = mk(AsyncChat, sim, model, tools=[add], num_retries=0)
    r1, r2 = await asyncio.wait_for(asyncio.gather(chat('add 2 3'), chat('add 4 5'), return_exceptions=True), 10)
    assert isinstance(r1, litellm.InternalServerError), r1
    assert text(r2) == 'It is 9.'
    assert chat.hist[0] == u('add 2 3\n\nadd 4 5') and roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant']   # merged
    accepted(sim, model)
    await next_call_works(sim, chat, model)

# ---------------------------------------------------------------- 7. secrets

class _Records(logging.Handler):
    def __init__(self): super().__init__(logging.DEBUG); self.records = []
    def emit(self, record): self.records.append(record)

LITELLM_LOGGERS = ('LiteLLM', 'LiteLLM Router', 'LiteLLM Proxy')

@contextmanager
def debug_logging():
    """litellm's debug logging on, and every record captured: on the root logger, and first thing on litellm's own
    loggers (before the redacting filter on litellm's handler can touch it); all levels restored afterwards"""
    root, h = logging.getLogger(), _Records()
    names = LITELLM_LOGGERS + ('httpx', 'httpcore', 'openai', 'anthropic', 'aiohttp', 'asyncio')
    saved = [(lg, lg.level, list(lg.handlers)) for lg in [root] + [logging.getLogger(n) for n in names]]
    root.addHandler(h); root.setLevel(logging.DEBUG)
    for n in LITELLM_LOGGERS: logging.getLogger(n).handlers.insert(0, h)
    litellm._turn_on_debug()
    for n in names: logging.getLogger(n).setLevel(logging.DEBUG)
    try: yield h.records
    finally:
        for lg, level, handlers in saved: lg.setLevel(level); lg.handlers[:] = handlers

_fmt = logging.Formatter('%(name)s %(levelname)s %(pathname)s:%(lineno)d %(message)s')

def record_text(r)->str:
    try: s = _fmt.format(r)
    except Exception: s = f'{r.name} {r.msg!r} {r.args!r}'
    return s + ' ' + repr(r.args)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('outcome', ['ok', '401'])
async def test_api_key_stays_secret(sim, cls, stream, model, outcome, capfd):
    """With a unique `api_key` and litellm's debug logging on: the key reaches the provider, and no repr (chat, turn,
    responses, tool results), log record, printed line, exception text or saved history holds it"""
    key = ('sk-ant-api03-' if model == SONNET else 'sk-proj-') + secrets.token_hex(24)
    turn_reprs, holder = [], {}
    def peek(x:int # anything
            )->str:
        "Look at the chat while its call runs"
        c = holder['chat']
        turn_reprs.extend([repr(c), repr(c._active), str(c._active)])
        return 'peeked'
    sim.script(*([Reply(calls=[Call('peek', {'x': 1})]), Reply(text='Done.')] if outcome == 'ok' else [Fault(status=401)]))
    chat = holder['chat'] = cls(model, api_base=base(sim, model), api_key=key, tools=[peek], num_retries=0)
    out, err = [], None
    with debug_logging() as records:
        try: await collect(chat, 'Hi', stream, out=out, each=lambda o: turn_reprs.append(repr(chat._active)))
        except Exception as e: err = e
    h = sim.requests[0].headers
    assert key in (h.get('x-api-key'), (h.get('authorization') or '').removeprefix('Bearer ')), 'the key never reached the provider'
    if outcome == 'ok': assert err is None and text(out[-1]) == 'Done.' and turn_reprs
    else: assert isinstance(err, litellm.AuthenticationError), err
    printed = capfd.readouterr()
    places = {'repr(chat)': repr(chat) + str(chat), 'turn repr during the call': '\n'.join(turn_reprs),
              'responses and results': '\n'.join(repr(o) + str(o) + (o.model_dump_json() if hasattr(o, 'model_dump_json') else json.dumps(o))
                                                 for o in out),
              'exception': '' if err is None else str(err) + repr(err) + ''.join(traceback.format_exception(err)),
              'saved history': json.dumps(chat.hist),
              'printed': printed.out + printed.err}
    leaks = [p for p,s in places.items() if key in s]
    logged = [(r.name, r.levelname, f'{r.pathname}:{r.lineno}', r.getMessage()[:200]) for r in records if key in record_text(r)]
    assert records, 'debug logging captured nothing'
    assert logged == [], f'litellm logged the key: {logged}'
    assert leaks == [], f'the key shows in: {leaks}'

# ---------------------------------------------------------------- 8. load: many chats at once, and none outlives them

N_CHATS = 500

async def test_chats_do_not_outlive_their_batch(sim):
    """500 `AsyncChat`s at once (half Anthropic, half OpenAI), each a streamed tool round: all end with their own
    right answer and a whole history, and afterwards no chat, turn, stream or response is left alive (but a few, fewer
    than one for every ten conversations: litellm's background work may hold the last ones a while).
    What they cost in memory, next to raw litellm, is measured by `python -m bench.memory`."""
    sim.default = adder
    gc.collect()
    before = live_objects()
    chats = [mk(AsyncChat, sim, m, tools=[add]) for m in [SONNET, GPT]*(N_CHATS//2)]
    async def one(i, c): return [o async for o in await c(f'add {i} 1', stream=True)]
    outs = await asyncio.wait_for(asyncio.gather(*[one(i, c) for i,c in enumerate(chats)]), 600)   # a hang guard only
    for i,(c,out) in enumerate(zip(chats, outs)):
        assert text(out[-1]) == f'It is {i+1}.', (c.model, i, text(out[-1]))
        assert roles(c.hist) == ['user', 'assistant', 'tool', 'assistant'] and tool_texts(c.hist) == [str(i+1)]
        assert sum(isinstance(o, dict) for o in out) == 1 and sum(isinstance(o, ModelResponse) for o in out) == 2
    assert len(sim.requests) == 2*N_CHATS and all(not r.rejected and r.status == 200 for r in sim.requests)
    del chats, outs, c, out
    bound = before + N_CHATS//10   # a leak of one object a conversation can't hide under it
    for _ in range(50):   # litellm's background work for the batch (logging, connection release) may take a while
        gc.collect()
        if (left := live_objects()) <= bound: break
        await asyncio.sleep(0.2)
    assert left <= bound, f'{left - before} chats, turns, streams and responses outlived their {N_CHATS} conversations'
