"""Record once, replay forever: `Sim(record=..., upstream=...)` forwards to an upstream (here another `Sim`) and
writes a cassette; `Sim(replay=...)` answers from it with the upstream gone. Tool rounds for `Chat` and `AsyncChat`,
streamed or not, in both wire formats; a changed request fails with a diff; no key reaches a file; the `cassette`
fixture in a user's own pytest run. (Recording from the local model and a LiteLLM proxy: test_cassette_live.py.)"""
import http.client, json, socket, subprocess, sys, threading
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import httpx, pytest
from lisette import Chat, AsyncChat
import litellm
from lisette.testing import Sim, Reply, Call, SECRETS, sse_event, record_requested
from helpers import SONNET, GPT, base, add, collect

pytest_plugins = ['pytester']

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])
STREAM = pytest.mark.parametrize('stream', [False, True], ids=['json', 'stream'])
FORMATS = pytest.mark.parametrize('model', [SONNET, GPT], ids=['anthropic', 'openai'])

def tool_round_provider()->Sim:
    "An upstream that calls `add` once, then answers with text"
    return Sim(Reply('Adding.', calls=[Call('add', dict(a=15, b=23))]), Reply('15 + 23 = 38.'))

async def run(cls, sim, model, stream, key='sk-test', q="What's 15 + 23?"):
    "A tool round with a new chat of class `cls` pointed at `sim`: (the chat, everything the call gave)"
    chat = cls(model, tools=[add], api_base=base(sim, model), api_key=key)
    return chat, await collect(chat, q, stream=stream)

def dumped(hist)->list: return [m if isinstance(m, dict) else m.model_dump() for m in hist]
def texts(out)->list: return [o.choices[0].message.content for o in out if isinstance(o, litellm.ModelResponse)]

# ---------------------------------------------------------------- record, then replay with the upstream gone

@CLASSES
@STREAM
@FORMATS
async def test_replay_gives_the_recorded_tool_round(cls, stream, model, tmp_path):
    tape, provider = tmp_path/'round.json', tool_round_provider()
    with Sim(record=tape, upstream=base(provider, model)) as rec:
        chat, out = await run(cls, rec, model, stream)
    provider.close()
    assert [r.status for r in provider.requests] == [200, 200] and rec.problems == []
    assert [m['role'] for m in dumped(chat.hist)] == ['user', 'assistant', 'tool', 'assistant']
    with Sim(replay=tape) as rep:
        again, out2 = await run(cls, rep, model, stream)
    assert (rep.problems, rep.pending) == ([], 0)
    assert dumped(again.hist) == dumped(chat.hist)
    assert texts(out2) == texts(out) and texts(out)[-1] == '15 + 23 = 38.'
    assert rep.bodies == rec.bodies                 # the same requests, answered the same
    if stream: assert sum(isinstance(o, litellm.ModelResponseStream) for o in out2) == sum(isinstance(o, litellm.ModelResponseStream) for o in out)

async def test_streamed_events_are_kept_as_sent(tmp_path):
    provider = Sim(Reply('One two three.'))
    with Sim(record=tmp_path/'s.json', upstream=provider.anthropic_base) as rec:
        r = httpx.post(rec.anthropic_base + '/v1/messages', headers={'x-api-key': 'sk-test'},
                       json=dict(model='m', max_tokens=10, stream=True, messages=[dict(role='user', content='Count')]))
    provider.close()
    sent = [sse_event(f) for f in r.text.split('\n\n') if f.strip()]
    kept = json.loads((tmp_path/'s.json').read_text())['interactions'][0]['response']
    assert kept['events'] == sent and kept['headers']['content-type'].startswith('text/event-stream')
    assert [e['event'] for e in sent][-1] == 'message_stop'
    with Sim(replay=tmp_path/'s.json') as rep:
        r2 = httpx.post(rep.anthropic_base + '/v1/messages', json=dict(model='m', max_tokens=10, stream=True, messages=[dict(role='user', content='Count')]))
    assert [sse_event(f) for f in r2.text.split('\n\n') if f.strip()] == sent

class _Gate(BaseHTTPRequestHandler):
    "An upstream that streams one event, waits for the test to have read it through the recording Sim, then ends"
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        self.rfile.read(int(self.headers['content-length']))
        self.wfile.write(b'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n')
        for i, ev in enumerate([b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n']):
            if i: assert self.server.seen.wait(30), 'the first event never reached the client'
            self.wfile.write(b'%x\r\n%s\r\n' % (len(ev), ev))
        self.wfile.write(b'0\r\n\r\n')
    def log_message(self, *a): pass

def test_a_stream_is_relayed_as_it_arrives(tmp_path):
    "The second event is sent only once the client has the first: a relay that waited for the whole stream would hang"
    up = ThreadingHTTPServer(('127.0.0.1', 0), _Gate)
    up.seen = threading.Event()
    threading.Thread(target=up.serve_forever, daemon=True).start()
    with Sim(record=tmp_path/'g.json', upstream=f'http://127.0.0.1:{up.server_address[1]}/v1') as rec:
        c = http.client.HTTPConnection(rec.host, rec.port, timeout=60)
        c.request('POST', '/v1/chat/completions', json.dumps(dict(model='m', stream=True, messages=[dict(role='user', content='Hi')])),
                  {'content-type': 'application/json'})
        r = c.getresponse()
        assert r.readline() == b'data: {"n": 1}\n'
        up.seen.set()
        assert r.read() == b'\ndata: {"n": 2}\n\n'
        c.close()
    up.shutdown(); up.server_close()
    assert [e['data'] for e in json.loads((tmp_path/'g.json').read_text())['interactions'][0]['response']['events']] == [{'n': 1}, {'n': 2}]
    assert rec.requests[0].status == 200

# ---------------------------------------------------------------- strict replay

@pytest.fixture
def recorded(tmp_path):
    "A cassette of one tool round of a sync `Chat` (OpenAI format), the upstream already gone; and that chat"
    tape, provider = tmp_path/'round.json', tool_round_provider()
    with Sim(record=tape, upstream=provider.openai_base) as rec:
        chat = Chat(GPT, tools=[add], api_base=rec.openai_base, api_key='sk-test')
        chat("What's 15 + 23?")
    provider.close()
    return tape, chat

def test_a_changed_request_fails_with_a_diff(recorded):
    tape, _ = recorded
    with Sim(replay=tape) as rep:
        chat = Chat(GPT, tools=[add], api_base=rep.openai_base, api_key='sk-test')
        with pytest.raises(litellm.BadRequestError) as e: chat("What's 15 + 24?")
    lines = rep.problems[0].splitlines()
    assert len(rep.problems) == 1 and rep.requests[0].status == 400
    assert '-    "content": "What\'s 15 + 23?",' in lines and '+    "content": "What\'s 15 + 24?",' in lines
    assert '+    "content": "What\'s 15 + 24?",' in str(e.value)   # the caller sees the diff too
    assert rep.pending == 2                                          # nothing was used up

def test_a_request_beyond_the_cassette_fails(recorded):
    tape, _ = recorded
    with Sim(replay=tape) as rep:
        chat = Chat(GPT, tools=[add], api_base=rep.openai_base, api_key='sk-test')
        chat("What's 15 + 23?")
        with pytest.raises(litellm.BadRequestError, match='one more than the 2'): chat('And now?')
    assert rep.pending == 0 and len(rep.problems) == 1

def test_ignored_keys_may_differ_others_may_not(tmp_path):
    provider = Sim(default=Reply('Hi.'))
    body = lambda **kw: dict(model='m', messages=[dict(role='user', content='Hi')], **kw)
    with Sim(record=tmp_path/'c.json', upstream=provider.openai_base) as rec:
        httpx.post(rec.openai_base + '/chat/completions', json=body(metadata={'run': 1}, user='ann'))
    provider.close()
    post = lambda sim, b: httpx.post(sim.openai_base + '/chat/completions', json=b).status_code
    with Sim(replay=tmp_path/'c.json') as rep: assert post(rep, body(metadata={'run': 2}, user='ann')) == 200
    with Sim(replay=tmp_path/'c.json') as rep: assert post(rep, body(metadata={'run': 1}, user='bob')) == 400
    assert '-  "user": "ann"' in rep.problems[0] and '+  "user": "bob"' in rep.problems[0]
    with Sim(replay=tmp_path/'c.json', ignore=()) as rep: assert post(rep, body(metadata={'run': 2}, user='ann')) == 400
    with Sim(replay=tmp_path/'c.json', ignore=('metadata', 'user')) as rep: assert post(rep, body(user='bob')) == 200

def test_transcript_checks_apply_recording_and_replaying(recorded):
    tape, chat = recorded
    broken = dict(model='gpt-4o', messages=[dict(role='tool', tool_call_id='call_1', content='38')])
    provider = Sim(default=Reply('Never.'))
    with Sim(record=tape.with_name('x.json'), upstream=provider.openai_base) as rec:
        assert httpx.post(rec.openai_base + '/chat/completions', json=broken).status_code == 400
    provider.close()
    assert provider.requests == []                 # a refused transcript never goes upstream
    with Sim(replay=tape) as rep:
        r = httpx.post(rep.openai_base + '/chat/completions', json=broken)
    assert r.status_code == 400 and "must be a response to a preceeding message with 'tool_calls'" in r.text
    assert rep.problems == [] and rep.requests[0].rejected

def test_no_cassette_no_replay(tmp_path):
    with pytest.raises(FileNotFoundError, match='record it first'): Sim(replay=tmp_path/'none.json')
    with pytest.raises(ValueError, match='upstream'): Sim(record=tmp_path/'x.json')
    with pytest.raises(ValueError, match='not from a script'): Sim(Reply('Hi'), replay=tmp_path/'x.json')

def test_an_upstream_that_is_down_is_a_502_and_a_problem(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]   # closed again: nothing listens there
    with Sim(record=tmp_path/'d.json', upstream=f'http://127.0.0.1:{port}/v1') as rec:
        r = httpx.post(rec.openai_base + '/chat/completions', json=dict(model='m', messages=[dict(role='user', content='Hi')]))
    assert r.status_code == 502 and 'the upstream' in r.text and len(rec.problems) == 1
    assert json.loads((tmp_path/'d.json').read_text())['interactions'] == []

# ---------------------------------------------------------------- secrets

@FORMATS
@STREAM
def test_no_key_is_written(model, stream, tmp_path):
    "Keys go upstream in their headers but never into the file, not even where the upstream echoes one back"
    key, token = 'sk-live-0123456789abcdef', 'tok-custom-0123456789'
    provider = Sim(Reply(f'Your key is {key}.'))
    with Sim(record=tmp_path/'k.json', upstream=base(provider, model), secrets=SECRETS + ('x-my-token',)) as rec:
        r = litellm.completion(model, [dict(role='user', content='Hi')], api_base=base(rec, model), api_key=key, stream=stream,
                               extra_headers={'x-my-token': token})
        if stream: r = litellm.stream_chunk_builder(list(r))
    provider.close()
    got = provider.requests[0].headers
    assert (got.get('x-api-key') or got['authorization'].removeprefix('Bearer ')) == key and got['x-my-token'] == token
    assert r.choices[0].message.content == f'Your key is {key}.'      # the caller gets the answer as it was
    text = (tmp_path/'k.json').read_text()
    assert key not in text and token not in text and '0123456789' not in text
    assert ('[REDACTED].' if stream else 'Your key is [REDACTED].') in text   # streamed, the key is one word's delta
    kept = json.loads(text)['interactions'][0]['request']['headers']
    assert not {'x-api-key', 'authorization', 'x-my-token'} & set(kept) and kept['content-type'] == 'application/json'

def test_keys_in_the_query_and_the_upstream_url_are_not_written(tmp_path):
    provider = Sim(Reply('Hi.'))
    up = provider.openai_base.replace('http://', 'http://user:pw-0123456789@')
    with Sim(record=tmp_path/'q.json', upstream=up) as rec:
        r = httpx.post(rec.openai_base + '/chat/completions?key=AIza-0123456789&alt=sse', json=dict(model='m', messages=[dict(role='user', content='Hi')]))
    provider.close()
    text = (tmp_path/'q.json').read_text()
    assert r.status_code == 200 and provider.requests[0].path.endswith('key=AIza-0123456789&alt=sse')
    assert '0123456789' not in text and json.loads(text)['interactions'][0]['request']['path'] == '/v1/chat/completions?alt=sse'
    with Sim(replay=tmp_path/'q.json') as rep:   # a replay is matched without the secret parameter too
        assert httpx.post(rep.openai_base + '/chat/completions?key=other&alt=sse', json=dict(model='m', messages=[dict(role='user', content='Hi')])).status_code == 200

# ---------------------------------------------------------------- the pytest plugin

def test_the_module_imports_without_pytest():
    code = 'import sys; sys.modules["pytest"] = None; import lisette.testing as t; t.Sim(); assert "pytest" not in dir(t)'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]

USER_TESTS = '''
import os
from lisette import Chat

def chat(sim): return Chat('anthropic/claude-sonnet-4-5', api_base=sim.anthropic_base, api_key=os.environ.get('KEY', 'sk-replay'))
def q(): return os.environ.get('Q', 'Capital of France? One word.')

def test_capital(cassette):
    sim = cassette(os.environ.get('UPSTREAM'))
    assert chat(sim)(q()).choices[0].message.content == os.environ.get('WANT', 'Paris')

def test_capital_swallowed(cassette):
    "Code under test that swallows errors: the fixture still fails the test"
    try: chat(cassette(os.environ.get('UPSTREAM')))(q())
    except Exception: pass

def test_asks(cassette):
    c = chat(cassette(os.environ.get('UPSTREAM')))
    for i in range(int(os.environ.get('N', '2'))): c(f'Question {i}?')
'''

def test_the_fixture_in_a_users_own_pytest_run(pytester, monkeypatch):
    "A user's conftest.py loads the plugin; their tests record with --lisette-record, replay without, and fail on a change"
    pytester.makeconftest("pytest_plugins = ['lisette.testing']")
    pytester.makepyfile(test_user=USER_TESTS)
    tapes = pytester.path/'cassettes'/'test_user'
    key = 'sk-ant-users-own-key-0123456789'

    provider = Sim(default=Reply('Paris'))                        # 1. record
    monkeypatch.setenv('UPSTREAM', provider.anthropic_base); monkeypatch.setenv('KEY', key)
    pytester.runpytest('--lisette-record').assert_outcomes(passed=3)
    provider.close()
    assert sorted(p.name for p in tapes.iterdir()) == ['test_asks.json', 'test_capital.json', 'test_capital_swallowed.json']
    assert not any(key in p.read_text() for p in tapes.iterdir()) and len(provider.requests) == 4

    monkeypatch.delenv('UPSTREAM'); monkeypatch.delenv('KEY')       # 2. replay: no upstream, no key
    pytester.runpytest().assert_outcomes(passed=3)

    monkeypatch.setenv('Q', 'Capital of Spain? One word.'); monkeypatch.setenv('N', '1')   # 3. the code changed
    pytester.makepyfile(test_new='def test_new(cassette): cassette()')                   # and a test never recorded
    res = pytester.runpytest()
    out = res.stdout.str()
    assert res.ret != 0 and '-      "text": "Capital of France? One word.",' in out and '+      "text": "Capital of Spain? One word.",' in out
    # test_capital fails in its call and at teardown; the other two (errors swallowed, a question fewer) at teardown
    res.assert_outcomes(failed=2, passed=2, errors=3)
    assert 'ERROR at teardown of test_capital_swallowed' in out and 'ERROR at teardown of test_asks' in out
    assert 'were never requested' in out and 'LISETTE_RECORD=1 or --lisette-record' in out

@pytest.mark.parametrize('env,option,want', [('', False, False), ('1', False, True), ('0', False, False), ('no', True, True), ('yes', False, True)])
def test_record_is_asked_by_option_or_environment(env, option, want, monkeypatch):
    monkeypatch.setenv('LISETTE_RECORD', env)
    assert record_requested(SimpleNamespace(getoption=lambda name, default=None: option)) == want
