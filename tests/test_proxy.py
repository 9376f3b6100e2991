"""lisette behind a real LiteLLM proxy (`litellm[proxy]`): `Chat` and `AsyncChat` talk to the proxy as an
OpenAI-compatible endpoint (`openai/lisette-test` + `api_base`), and the proxy load-balances, retries and
translates to two simulated upstreams (Anthropic on sim A, OpenAI on sim B). Plain, streamed, tool loops,
thinking, load balancing, the proxy's auth and failure answers, and 200 conversations at once."""
import asyncio, json, time, urllib.request
import pytest
from lisette import Chat, delta_text       # first: it keeps litellm's import offline and quiet
import litellm
from litellm import ModelResponse, ModelResponseStream
from lisette import AsyncChat
from lisette.testing import Reply, Call, Fault, check_anthropic, check_openai
from proxy_fixture import *
from helpers import text, roles

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])

# ---------------------------------------------------------------- helpers

def mk(proxy, cls=Chat, model=MODEL, key=MASTER_KEY, **kw):
    "A chat with the proxy's model group `model`, through the proxy"
    return cls(f'openai/{model}', api_base=proxy.url, api_key=key, **kw)

async def run(chat, msg=None, stream=False, **kw)->list:
    "Everything a call yields (stream) or returns (not streamed), for `Chat` and `AsyncChat` alike"
    if isinstance(chat, AsyncChat):
        if not stream: return [await chat(msg, **kw)]
        return [o async for o in await chat(msg, stream=True, **kw)]
    return list(chat(msg, stream=True, **kw)) if stream else [chat(msg, **kw)]

def valid(hist): return check_openai({'messages': hist}) == []

def user_texts(body)->list:
    "The user's texts in a request body, either wire format (tool results left out)"
    out = []
    for m in body['messages']:
        if m['role'] != 'user': continue
        c = m['content']
        out += [c] if isinstance(c, str) else [p['text'] for p in c if p.get('type') == 'text']
    return out

def tool_results(body)->list:
    "The tool results a request body carries, either wire format"
    out = []
    for m in body['messages']:
        if m['role'] == 'tool': out.append(m['content'])
        elif isinstance(m['content'], list):
            for p in m['content']:
                if p.get('type') == 'tool_result':
                    c = p['content']
                    out.append(c if isinstance(c, str) else ''.join(q.get('text', '') for q in c))
    return out

def echo(tag):
    "A simulator default answering with its tag and the last user text: who served what is visible"
    return lambda body: Reply(text=f'{tag}: {user_texts(body)[-1]}')

def add(a:int, b:int)->int:
    "Add a and b"
    return a + b

def agent(tag, thinking=None):
    "Round 1 asks for two `add` calls at once; round 2 answers from the tool results"
    def f(body):
        res = tool_results(body)
        if not res: return Reply(text='Adding.', calls=[Call('add', {'a': 1, 'b': 2}), Call('add', {'a': 30, 'b': 40})],
                                 thinking=thinking)
        return Reply(text=f"{tag}: {' and '.join(res)}", thinking=thinking)
    return f

def all_accepted(psims):
    "Every request the upstreams got passed their provider's strict checks"
    for s, check in zip(psims, (check_anthropic, check_openai)):
        for r in s.requests:
            assert not r.rejected, r.problems
            assert check(r.body) == []

def served(psims)->tuple: return tuple(len(s.requests) for s in psims)

# ---------------------------------------------------------------- the proxy itself

def test_proxy_serves_the_group(pxy):
    assert pxy.startup < 60
    req = urllib.request.Request(pxy.url + '/v1/models', headers={'Authorization': f'Bearer {MASTER_KEY}'})
    with urllib.request.urlopen(req, timeout=10) as r: ids = {m['id'] for m in json.load(r)['data']}
    assert {MODEL, f'{MODEL}-claude', f'{MODEL}-openai', f'{MODEL}-flaky'} <= ids

# ---------------------------------------------------------------- plain and streamed

@CLASSES
async def test_plain(pxy, psims, cls):
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    chat = mk(pxy, cls, sp='Be brief.')
    [res] = await run(chat, 'hello there')
    assert isinstance(res, ModelResponse) and text(res) in ('A: hello there', 'B: hello there')
    assert res.model == MODEL and res.usage.total_tokens > 0
    assert chat.hist == [{'role': 'user', 'content': 'hello there'}, {'role': 'assistant', 'content': text(res)}]
    a, b = psims
    up = (a if text(res).startswith('A') else b).requests[-1]
    assert served(psims) == ((1, 0) if up in a.requests else (0, 1))
    # the upstream gets the deployment's own model and key, never the proxy's master key
    if up in a.requests:
        assert up.body['model'] == 'claude-sonnet-4-5' and up.headers['x-api-key'] == 'sk-ant-sim'
        assert up.body['system'][0]['text'] == 'Be brief.'
    else:
        assert up.body['model'] == 'gpt-4o' and up.headers['authorization'] == 'Bearer sk-oai-sim'
        assert up.body['messages'][0] == {'role': 'system', 'content': 'Be brief.'}
    assert MASTER_KEY not in json.dumps(up.headers)
    all_accepted(psims)

@CLASSES
async def test_streamed(pxy, psims, cls):
    for s in psims: s.default = lambda body: Reply(text=f'one two three four five: {user_texts(body)[-1]}', chunks=5)
    chat = mk(pxy, cls)
    for i in range(3):    # both upstreams, most likely
        out = await run(chat, f'count {i}', stream=True)
        *chunks, res = out
        assert all(isinstance(o, ModelResponseStream) for o in chunks) and isinstance(res, ModelResponse)
        assert len(chunks) >= 5
        assert ''.join(delta_text(o) or '' for o in chunks) == text(res) == f'one two three four five: count {i}'
        assert res.usage is not None and res.usage.completion_tokens > 0
        assert all(s.bodies[-1]['stream'] for s in psims if s.requests)
    assert roles(chat.hist) == ['user', 'assistant'] * 3 and valid(chat.hist)
    all_accepted(psims)

# ---------------------------------------------------------------- tools

@CLASSES
async def test_streamed_parallel_tool_loop(pxy, psims, cls):
    "Two rounds, two calls at once, streamed; the rounds may be served by different providers"
    for s, tag in zip(psims, 'AB'): s.default = agent(tag)
    for i in range(4):
        chat = mk(pxy, cls, tools=[add])
        out = await run(chat, f'add twice {i}', stream=True)
        resps = [o for o in out if isinstance(o, ModelResponse)]
        tools = [o for o in out if isinstance(o, dict)]
        assert len(resps) == 2 and len(resps[0].choices[0].message.tool_calls) == 2
        assert [t['content'] for t in tools] == ['3', '70']
        assert text(resps[1])[3:] == '3 and 70'
        assert roles(chat.hist) == ['user', 'assistant', 'tool', 'tool', 'assistant'] and valid(chat.hist)
        ids = [tc['id'] for tc in chat.hist[1]['tool_calls']]
        assert [m['tool_call_id'] for m in chat.hist[2:4]] == ids and len(set(ids)) == 2
    assert sum(served(psims)) == 8
    all_accepted(psims)

# ---------------------------------------------------------------- thinking

@pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
async def test_thinking_passes_to_anthropic(pxy, psims, stream):
    "think='l' -> reasoning_effort -> the proxy's Anthropic deployment thinks; the thinking comes back, signed"
    a, b = psims
    a.default = lambda body: Reply(text='4', thinking='2+2 is 4')
    chat = mk(pxy, AsyncChat, model=f'{MODEL}-claude')
    res = (await run(chat, 'What is 2+2?', stream=stream, think='l'))[-1]
    assert a.bodies[-1]['thinking'] == {'type': 'enabled', 'budget_tokens': 1024} and 'temperature' not in a.bodies[-1]
    msg = res.choices[0].message
    assert text(res) == '4' and msg.reasoning_content == '2+2 is 4'
    [tb] = msg.thinking_blocks
    assert tb['type'] == 'thinking' and tb['thinking'] == '2+2 is 4' and tb['signature'].startswith('sig_sim')
    assert chat.hist[-1]['thinking_blocks'] == msg.thinking_blocks
    assert served(psims) == (1, 0)

async def test_thinking_tool_loop_keeps_signed_blocks(pxy, psims):
    "The thinking blocks of a tool round go back through the proxy, so Anthropic accepts round 2"
    a, b = psims
    a.default = agent('A', thinking='I should add')
    chat = mk(pxy, AsyncChat, model=f'{MODEL}-claude', tools=[add])
    res = (await run(chat, 'add twice', stream=True, think='l'))[-1]
    assert text(res) == 'A: 3 and 70'
    r1, r2 = a.bodies
    sig = chat.hist[1]['thinking_blocks'][0]['signature']
    assert r2['messages'][1]['content'][0] == {'type': 'thinking', 'thinking': 'I should add', 'signature': sig}
    assert r2['thinking']['type'] == 'enabled'
    assert valid(chat.hist)
    all_accepted(psims)

async def test_thinking_on_openai_deployment_is_dropped(pxy, psims):
    "gpt-4o takes no reasoning_effort: the proxy drops it (drop_params); reasoning text still comes back"
    a, b = psims
    b.default = lambda body: Reply(text='4', thinking='hmm')
    chat = mk(pxy, Chat, model=f'{MODEL}-openai')
    res = chat('What is 2+2?', think='l')
    assert 'reasoning_effort' not in b.bodies[-1] and text(res) == '4'
    assert res.choices[0].message.reasoning_content == 'hmm'
    assert not getattr(res.choices[0].message, 'thinking_blocks', None)
    assert chat.hist[-1] == {'role': 'assistant', 'content': '4'}

async def test_thinking_tool_loop_across_providers(pxy, psims):
    """Mixed group + thinking + tools: a round 1 from OpenAI has no thinking blocks, so the proxy (modify_params)
    drops `thinking` for an Anthropic round 2 instead of having it rejected"""
    for s, tag in zip(psims, 'AB'): s.default = agent(tag, thinking='let me add')
    chats = [mk(pxy, AsyncChat, tools=[add]) for _ in range(8)]
    res = await asyncio.gather(*[c('add twice', think='l') for c in chats])
    assert all(text(r)[3:] == '3 and 70' for r in res)
    assert all(valid(c.hist) for c in chats)
    all_accepted(psims)

# ---------------------------------------------------------------- the rest of lisette through the proxy

async def test_usage_and_cost_come_back(pxy, psims):
    "Usage (cached tokens too) passes through; the cost is the proxy's, from its `x-litellm-response-cost` header"
    a, b = psims
    a.default = lambda body: Reply(text='ok', usage={'cache_read': 50})
    chat = mk(pxy, AsyncChat, model=f'{MODEL}-claude')
    res = await chat('hi')
    hdr = res._hidden_params['additional_headers']
    assert hdr['llm_provider-x-litellm-model-group'] == f'{MODEL}-claude'
    assert chat.use.cached == 50 and chat.use.prompt > 50 and chat.use.completion > 0
    assert chat.use.cost == pytest.approx(float(hdr['llm_provider-x-litellm-response-cost'])) and chat.use.cost > 0

def test_structured(pxy, psims):
    a, b = psims
    def Point(x:int, y:int):
        "A point in the plane"
        return (x, y)
    a.script(Reply(calls=[Call('Point', {'x': 1, 'y': 2})]))
    chat = mk(pxy, Chat, model=f'{MODEL}-claude')
    assert chat.structured('Make a point', Point) == (1, 2)
    assert a.bodies[-1]['tool_choice'] == {'type': 'tool', 'name': 'Point'} and valid(chat.hist)

@pytest.fixture
def declared():
    "Tell litellm (client side) what the proxy's `-claude` group can do: prefill, web search"
    name = f'openai/{MODEL}-claude'
    litellm.register_model({name: dict(litellm_provider='openai', mode='chat', supports_assistant_prefill=True,
                                       supports_web_search=True)})
    yield name
    litellm.model_cost.pop(name, None)

def test_prefill_and_search_need_declaring(pxy, psims):
    "litellm's model info knows nothing of a proxy's model names: lisette warns about the prefill but sends it, and search"
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    with pytest.warns(UserWarning, match="may not take a prefill"): mk(pxy, Chat)('hi', prefill='Sure')
    mk(pxy, Chat, search='l')   # not refused

def test_prefill_and_search_once_declared(pxy, psims, declared):
    a, b = psims
    a.default = lambda body: Reply(text=' world')
    chat = mk(pxy, Chat, model=f'{MODEL}-claude', search='l')
    res = chat('Say hello world', prefill='Hello')
    assert text(res) == 'Hello world'
    body = a.bodies[-1]
    assert body['messages'][-1] == {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Hello'}]}
    assert body['tools'][0]['type'].startswith('web_search')
    assert chat.hist[-1] == {'role': 'assistant', 'content': 'Hello world'}

def test_cache_breakpoints(pxy, psims):
    "lisette adds cache breakpoints only for model names with 'claude' in them; the proxy passes them on to Anthropic"
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    mk(pxy, Chat, sp='Be brief.', cache=True)('hi')                # `openai/lisette-test`: lisette sends none
    assert not any('cache_control' in json.dumps(b) for s in psims for b in s.bodies)
    a, b = psims
    mk(pxy, Chat, model=f'{MODEL}-claude', sp='Be brief.', cache=True)('hi')
    assert a.bodies[-1]['system'][0]['cache_control'] == {'type': 'ephemeral'}
    assert a.bodies[-1]['messages'][-1]['content'][-1]['cache_control'] == {'type': 'ephemeral'}

def fetch()->str:
    "Fetch the page"
    return 'x' * 5000

TOO_LONG = {'anthropic': Fault(status=400, body={'type': 'error', 'error': {'type': 'invalid_request_error',
                                'message': 'prompt is too long: 250000 tokens > 200000 maximum'}}),
            'openai': Fault(status=400, body={'error': {'type': 'invalid_request_error', 'code': 'context_length_exceeded',
                                'param': 'messages', 'message': "This model's maximum context length is 128000 tokens. "
                                                                "However, your messages resulted in 250000 tokens."}})}

@pytest.mark.parametrize('fmt', ['openai', 'claude'])
def test_context_window_recovery(pxy, psims, fmt):
    s = psims[0 if fmt == 'claude' else 1]
    s.script(Reply(calls=[Call('fetch')]), TOO_LONG['anthropic' if fmt == 'claude' else 'openai'], Reply(text='done'))
    chat = mk(pxy, Chat, model=f'{MODEL}-{fmt}', tools=[fetch])
    assert text(chat('Fetch it')) == 'done'
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant'] and len(chat.hist[2]['content']) < 5000

# ---------------------------------------------------------------- load balancing

async def test_load_balancing(pxy, psims):
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    chats = [mk(pxy, AsyncChat) for _ in range(30)]
    res = await asyncio.gather(*[c(f'conversation {i}') for i,c in enumerate(chats)])
    a, b = psims
    for i, r in enumerate(res):
        tag, said = text(r).split(': ')
        assert said == f'conversation {i}'
        assert said in [user_texts(x)[-1] for x in (a if tag == 'A' else b).bodies]
    na, nb = served(psims)
    assert na + nb == 30 and na >= 3 and nb >= 3   # simple-shuffle: both deployments take a share

# ---------------------------------------------------------------- the proxy's failure answers

@CLASSES
async def test_team_key(pxy, psims, cls):
    "Without a DB there are no virtual keys; a `custom_auth` hook's static keys work instead"
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    [res] = await run(mk(pxy, cls, key=TEAM_KEY), 'hi')
    assert text(res)[3:] == 'hi'

@CLASSES
async def test_bad_key_is_an_auth_error(pxy, psims, cls):
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    chat = mk(pxy, cls, key='sk-team-stolen')
    with pytest.raises(litellm.AuthenticationError) as e: await run(chat, 'hi')
    assert e.value.status_code == 401 and 'Invalid team key' in str(e.value)
    assert 'sk-team-stolen' not in str(e.value)
    assert chat.hist == [{'role': 'user', 'content': 'hi'}] and served(psims) == (0, 0)
    [res] = await run(chat, api_key=MASTER_KEY)   # the history is ready to go on with a good key
    assert text(res)[3:] == 'hi' and roles(chat.hist) == ['user', 'assistant']

@CLASSES
async def test_unknown_key_without_db(pxy, psims, cls):
    "A proxy with no DB answers any key but its master key with a 400 'No connected db.' (litellm's choice, not 401)"
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    chat = mk(pxy, cls, key='sk-wrong-key')
    with pytest.raises(litellm.BadRequestError) as e: await run(chat, 'hi', stream=True)
    assert 'No connected db' in str(e.value) and 'sk-wrong-key' not in str(e.value)
    assert chat.hist == [{'role': 'user', 'content': 'hi'}] and served(psims) == (0, 0)

@pytest.fixture
def after_cooldown():
    yield
    time.sleep(1.1)   # let a failed deployment's cooldown pass before the next test

@CLASSES
@pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])
async def test_deployment_down_retries_the_other(pxy, psims, after_cooldown, cls, stream):
    "Sim A answers 500 every time: the proxy retries, lands on B, and every chat gets B's answer"
    a, b = psims
    a.default, b.default = (lambda body: Fault(status=500)), agent('B')
    for i in range(4):
        chat = mk(pxy, cls, tools=[add], num_retries=3)   # the proxy's own retries may land on A again
        res = (await run(chat, f'add {i}', stream=stream))[-1]
        assert text(res) == 'B: 3 and 70'
        assert roles(chat.hist) == ['user', 'assistant', 'tool', 'tool', 'assistant'] and valid(chat.hist)
    assert all(r.status == 500 for r in a.requests) and all(r.status == 200 for r in b.requests)
    assert len(b.requests) == 8

@CLASSES
async def test_deployment_unreachable_retries_the_other(pxy, psims, after_cooldown, cls):
    "`lisette-test-flaky`'s Anthropic deployment has nothing listening: connection refused, retried on B"
    a, b = psims
    b.default = echo('B')
    for i in range(6):
        chat = mk(pxy, cls, model=f'{MODEL}-flaky', num_retries=3)
        [res] = await run(chat, f'hi {i}')
        assert text(res) == f'B: hi {i}' and roles(chat.hist) == ['user', 'assistant']
    assert served(psims) == (0, 6)

@CLASSES
async def test_all_deployments_down(pxy, psims, after_cooldown, cls):
    "Nothing answers: the error reaches the user, the history keeps just the message, and `chat()` goes on later"
    for s in psims: s.default = lambda body: Fault(status=500)
    chat = mk(pxy, cls, num_retries=0)   # the proxy's retries alone
    with pytest.raises(litellm.InternalServerError): await run(chat, 'hi')
    assert chat.hist == [{'role': 'user', 'content': 'hi'}]
    assert all(r.status == 500 for s in psims for r in s.requests) and sum(served(psims)) == 3   # 1 + num_retries
    time.sleep(1.1)
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    [res] = await run(chat)
    assert text(res)[3:] == 'hi' and roles(chat.hist) == ['user', 'assistant']

def test_client_and_proxy_retries_dont_multiply(pxy, psims, after_cooldown):
    "lisette turns off the OpenAI client's own retries: with num_retries=0, one request to the proxy, 1 + the proxy's num_retries upstream"
    for s in psims: s.default = lambda body: Fault(status=500)
    chat = mk(pxy, Chat, num_retries=0)
    with pytest.raises(litellm.InternalServerError): chat('hi')
    assert sum(served(psims)) == 3 and chat.hist == [{'role': 'user', 'content': 'hi'}]

# ---------------------------------------------------------------- scale

async def test_200_conversations(pxy, psims):
    "200 `AsyncChat`s at once, two turns each, through the proxy: every answer is its own"
    for s, tag in zip(psims, 'AB'): s.default = echo(tag)
    chats = [mk(pxy, AsyncChat) for _ in range(200)]
    async def talk(i, c):
        r1 = await c(f'conv {i} turn 1')
        r2 = await c(f'conv {i} turn 2')
        return r1, r2
    t = time.monotonic()
    res = await asyncio.gather(*[talk(i, c) for i,c in enumerate(chats)])
    took = time.monotonic() - t
    for i, ((r1, r2), c) in enumerate(zip(res, chats)):
        assert text(r1)[3:] == f'conv {i} turn 1' and text(r2)[3:] == f'conv {i} turn 2'
        assert [m['content'] for m in c.hist] == [f'conv {i} turn 1', text(r1), f'conv {i} turn 2', text(r2)]
    assert sum(served(psims)) == 400 and min(served(psims)) > 100
    all_accepted(psims)
    print(f'\n200 conversations x 2 turns through the proxy: {took:.1f}s (proxy startup {pxy.startup:.1f}s)')
