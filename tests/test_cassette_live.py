"""Cassettes recorded from real upstreams: the embedded local model (llama.cpp's server) and a LiteLLM proxy in front
of a simulator. Each records tool rounds of `Chat` and `AsyncChat`, streamed and not, stops the upstream, and replays:
the replayed chats end with the recorded histories and get the recorded responses. Needs the local model and the
proxy's environment, like test_local.py and test_proxy.py (so .ci/core leaves it out too)."""
import asyncio, json
import pytest
from lisette import Chat, AsyncChat
import litellm
from lisette.local import local_model, check_server_installed, smollm2_path
from lisette.testing import Sim, Reply, Call, check_openai
from proxy_fixture import Proxy, proxy_config, auth_hook, MASTER_KEY, TEAM_KEY, MODEL
from helpers import collect

check_server_installed(); smollm2_path()   # no skip: a missing install is a failure, as in test_local.py

SCENARIOS = [(Chat, False), (Chat, True), (AsyncChat, False), (AsyncChat, True)]
IDS = ['sync-json', 'sync-stream', 'async-json', 'async-stream']
Q = "What's 15 + 23?"

def add(a:int, # the first number
        b:int  # the second number
       )->int:
    "Add two integers"
    return a + b

def dumped(hist)->list: return [m if isinstance(m, dict) else m.model_dump() for m in hist]

def answers(out)->list:
    "The final responses a call gave (streamed chunks and tool results left out), as dicts without litellm's own ids"
    return [dict(o.model_dump(), id=None, created=None) for o in out if isinstance(o, litellm.ModelResponse)]

async def round_trip(cls, stream, model, api_base, key, **kw):
    "A tool round of a new chat: (its history, everything the call gave, the chat's model and kwargs)"
    chat = cls(model, tools=[add], api_base=api_base, api_key=key, **kw)
    out = await collect(chat, Q, stream=stream)
    return dumped(chat.hist), out

async def record_all(tmp, model, upstream, key, **kw)->dict:
    "Record each scenario's tool round through a recording Sim in front of `upstream`: scenario -> (cassette, history, output)"
    res = {}
    for (cls, stream), name in zip(SCENARIOS, IDS):
        tape = tmp/f'{name}.json'
        with Sim(record=tape, upstream=upstream) as rec:
            hist, out = await round_trip(cls, stream, model, rec.openai_base, key, **kw)
            assert rec.problems == [] and all(r.status == 200 for r in rec.requests), rec.problems
        res[name] = tape, hist, out
    return res

async def check_replay(recorded, name, model, key, **kw):
    "Replay scenario `name` with the upstream stopped: the same history and answers, every interaction used"
    (cls, stream), (tape, hist, out) = SCENARIOS[IDS.index(name)], recorded[name]
    assert [m['role'] for m in hist] == ['user', 'assistant', 'tool', 'assistant'], hist   # a real tool round was recorded
    assert check_openai(dict(messages=hist)) == []
    with Sim(replay=tape) as rep:
        hist2, out2 = await round_trip(cls, stream, model, rep.openai_base, 'sk-replay-no-key', **kw)
        assert (rep.problems, rep.pending) == ([], 0)
    assert hist2 == hist
    assert answers(out2) == answers(out)
    if stream:
        deltas = lambda o: [c.choices[0].delta.content for c in o if isinstance(c, litellm.ModelResponseStream) and c.choices]
        assert deltas(out2) == deltas(out) and len(deltas(out)) > 1
    text = tape.read_text()
    assert key not in text
    return json.loads(text)

# ---------------------------------------------------------------- the local model

@pytest.fixture(scope='module')
def local_tapes(tmp_path_factory):
    "Each scenario recorded from the local model; then the model is stopped"
    tmp = tmp_path_factory.mktemp('local')
    with local_model() as lm:
        recorded = asyncio.run(record_all(tmp, lm.model, lm.api_base, lm.api_key, max_tokens=100))
        key = lm.api_key
    assert not lm.running
    return recorded, lm.model, key

@pytest.mark.parametrize('name', IDS)
async def test_local_model_replays_identically(local_tapes, name):
    recorded, model, key = local_tapes
    c = await check_replay(recorded, name, model, key, max_tokens=100)
    assert c['upstream'].endswith('/v1') and all(i['request']['path'] == '/v1/chat/completions' for i in c['interactions'])
    assert ('events' in c['interactions'][0]['response']) == name.endswith('stream')

# ---------------------------------------------------------------- a LiteLLM proxy in front of a simulator

@pytest.fixture(scope='module')
def proxy_tapes(tmp_path_factory):
    "Each scenario recorded through a LiteLLM proxy whose Anthropic deployment is a Sim; then proxy and Sim are stopped"
    tmp = tmp_path_factory.mktemp('proxy')
    provider = Sim(default=lambda body: Reply('15 + 23 = 38.') if body['messages'][-1]['role'] == 'user' and
                   isinstance(body['messages'][-1]['content'], list) and body['messages'][-1]['content'][0].get('type') == 'tool_result'
                   else Reply('Adding.', calls=[Call('add', dict(a=15, b=23))]))
    with Proxy(proxy_config(provider.anthropic_base, provider.openai_base), files={'pxauth.py': auth_hook({TEAM_KEY: 'team'})}) as px:
        recorded = asyncio.run(record_all(tmp, f'openai/{MODEL}-claude', px.url, MASTER_KEY))
    provider.close()
    assert not px.left()
    return recorded, provider

@pytest.mark.parametrize('name', IDS)
async def test_proxy_replays_identically(proxy_tapes, name):
    recorded, provider = proxy_tapes
    c = await check_replay(recorded, name, f'openai/{MODEL}-claude', MASTER_KEY)
    assert [i['request']['path'] for i in c['interactions']] == ['/v1/chat/completions'] * 2
    chats = [r for r in provider.requests if r.fmt]   # the proxy also asks for /v1/models, starting
    assert [r.fmt for r in chats] == ['anthropic'] * 8   # it did translate, while recording: two requests a round
