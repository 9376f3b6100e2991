"""Helpers shared by the tests that talk to `lisette.testing.Sim`: a per-module simulator, chats pointed at it,
and readers of histories and request bodies."""
import asyncio, inspect, gc, time
import pytest
from lisette import Chat, AsyncChat   # first: it keeps litellm's import offline and quiet
from lisette.testing import Sim, check_anthropic, check_openai

SONNET, GPT = 'anthropic/claude-sonnet-4-5', 'openai/gpt-4o'
HANG = 10.0   # seconds: the tests' one time limit, a guard against a hang (no test measures time)
MODELS = pytest.mark.parametrize('model', [SONNET, GPT], ids=['anthropic', 'openai'])

@pytest.fixture(scope='module')
def module_sim():
    s = Sim()
    yield s
    s.close()

@pytest.fixture
def sim(module_sim):
    "The module's simulator, with an empty script, no default and no recorded requests"
    module_sim.reset(); module_sim.default = None
    yield module_sim
    module_sim.reset(); module_sim.default = None

def base(sim, model): return sim.anthropic_base if model.startswith('anthropic') else sim.openai_base
def check(model): return check_anthropic if model.startswith('anthropic') else check_openai
def mk(cls, sim, model, **kw): return cls(model, api_base=base(sim, model), api_key='sk-test', **kw)
def text(res): return res.choices[0].message.content
def u(s): return {'role': 'user', 'content': s}
def a(s): return {'role': 'assistant', 'content': s}
def roles(hist): return [m['role'] for m in hist]
def tool_texts(hist): return [m['content'] for m in hist if m['role'] == 'tool']

def add(a:int, # the first number
        b:int  # the second number
       )->int:
    "Add two numbers"
    return a + b

async def aadd(a:int, # the first number
               b:int  # the second number
              )->int:
    "Add two numbers, awaited"
    await asyncio.sleep(0)
    return a + b

def accepted(sim, model, i=-1):
    "The `i`th request was answered (not rejected) and its transcript passes the provider's strict check"
    req = sim.requests[i]
    assert not req.rejected, req.problems
    assert req.status == 200, req.status
    assert check(model)(req.body) == []

def body_texts(body)->list:
    "Every text of every message of a request body, in order (either wire format)"
    out = []
    for m in body['messages']:
        c = m.get('content')
        if isinstance(c, str): out.append(c)
        elif isinstance(c, list):
            for p in c:
                if p.get('type') == 'text': out.append(p['text'])
                elif p.get('type') == 'tool_result':
                    cc = p.get('content')
                    out += [cc] if isinstance(cc, str) else [q.get('text') for q in cc or []]
    return out

def tool_use_ids(body)->list:
    "The tool call ids a request body carries (either wire format)"
    ids = []
    for m in body['messages']:
        ids += [tc['id'] for tc in m.get('tool_calls') or []]
        if isinstance(m.get('content'), list): ids += [p['id'] for p in m['content'] if p.get('type') == 'tool_use']
    return ids

def last_message(body):
    "('tool', None) if a request ends with tool results, else ('text', the last text of its last message)"
    m = body['messages'][-1]
    c = m.get('content')
    if m.get('role') == 'tool' or (isinstance(c, list) and c[-1].get('type') == 'tool_result'): return 'tool', None
    return 'text', c if isinstance(c, str) else [p.get('text') for p in c if p.get('type') == 'text'][-1]

def sync_call(f):
    """Run sync call `f`, then collect young garbage at once. A sync stream that leaves its response body open (see
    `test_sync_stream_leaves_no_open_response`) leaves it to a later, random collection, and closing it there can
    deadlock the thread inside httpcore's pool lock. Collecting here, where no lock is held, keeps the tests from
    hanging on that bug (the test named fails on it instead)"""
    try: return f()
    finally: gc.collect(1)

async def collect(chat, msg=None, stream=False, out=None, each=None, **kw)->list:
    "Everything one call yields (a stream's items, or `return_all`'s list), appended to `out` as it comes"
    out = [] if out is None else out
    def got(o):
        out.append(o)
        if each and stream: each(o)   # called while the stream is being read
    if isinstance(chat, AsyncChat):
        async for o in await chat(msg, stream=stream, return_all=not stream, **kw): got(o)
        return out
    def run():
        for o in chat(msg, stream=stream, return_all=not stream, **kw): got(o)
    await asyncio.to_thread(sync_call, run)   # in a thread, so the sync chat can't block (or lean on) this loop
    return out

async def ask(chat, msg=None, stream=False, **kw):
    "One call on `chat`, sync (in a worker thread) or async, streamed or not: its final response, or what it raised"
    if isinstance(chat, AsyncChat) and not stream: return await chat(msg, **kw)
    if not stream: return await asyncio.to_thread(sync_call, lambda: chat(msg, **kw))
    return (await collect(chat, msg, True, **kw))[-1]

async def wait_until(cond, timeout=5.0):
    t = time.monotonic()
    while not cond():
        assert time.monotonic() - t < timeout, 'timed out waiting'
        await asyncio.sleep(0.005)


def recording_add():
    "A tool `add2` that records the arguments of each call in the list returned with it"
    ran = []
    def add2(a:int, # the first number
             b:int  # the second number
            )->int:
        "Add two numbers"
        ran.append((a, b))
        return a + b
    return add2, ran

LIVE_TYPES = {'Turn', 'Chat', 'AsyncChat', 'Stream', 'AStream', 'ModelResponse', 'ModelResponseStream'}

def live_objects()->int:
    """How many of lisette's and litellm's chats, turns, streams and responses are alive. By exact type: `isinstance`
    with pydantic's models (ABCs) over every object would fill the ABCs' caches"""
    return sum(type(o).__name__ in LIVE_TYPES and type(o).__module__.startswith(('lisette', 'litellm')) for o in gc.get_objects())

async def raised_at_call(chat, *args, **kw):
    "What calling `chat` raised at the call (for `AsyncChat`: at `await chat(...)`); None if nothing (streams unread)"
    try:
        r = chat(*args, **kw)
        if inspect.isawaitable(r): await r
    except Exception as e: return e
    return None

def final(body)->bool:
    "Must this request be answered in words (tool_choice none, in either wire format)?"
    return body.get('tool_choice') in ('none', {'type': 'none'})

def answered(hist):
    "Every assistant tool call is answered by a tool message right after it"
    for i,m in enumerate(hist):
        if m['role'] != 'assistant' or not m.get('tool_calls'): continue
        want = [tc['id'] for tc in m['tool_calls']]
        got = [r.get('tool_call_id') for r in hist[i+1:i+1+len(want)] if r['role'] == 'tool']
        assert got == want, f'message {i}: tool calls {want} answered by {got}'
