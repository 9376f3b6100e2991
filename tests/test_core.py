"Failure cases of the sync `Chat` against the simulator: what the user sees, what reached the provider, what the history holds"
import json, logging, warnings
import pytest, litellm
from lisette import Chat, NOT_RUN, mk_msg
from lisette.testing import Reply, Call, Fault

from helpers import *

def boom(x:str # anything
        )->str:
    "Always fails"
    raise RuntimeError(f'boom: {x}')

@MODELS
@pytest.mark.parametrize('stream', [False, True])
def test_tool_failures_become_results(sim, model, stream):
    "A raising tool, an unregistered name (even a lisette.core global), bad JSON, wrong argument types: all answered, chat finishes"
    sim.script(Reply(calls=[Call('boom', {'x': 'hi'}), Call('mk_msg', {'content': 'x'}), Call('__import__', {'name': 'os'}),
                            Call('add', '{"a": 1, "b":'), Call('add', {'a': 1, 'c': 2})]),
               Reply(text='All failed.'))
    chat = mk(Chat, sim, model, tools=[add, boom])
    res = chat('go', stream=stream)
    if stream: res = list(res)[-1]
    assert text(res) == 'All failed.'
    t = tool_texts(chat.hist)
    assert t[0] == 'Error: RuntimeError: boom: hi'
    assert t[1] == "Error: no tool named 'mk_msg'; the tools are: add, boom"
    assert t[2] == "Error: no tool named '__import__'; the tools are: add, boom"
    assert t[3].startswith('Error: arguments')
    assert t[4].startswith('Error: TypeError:')
    assert check(model)(sim.bodies[-1]) == [] and not sim.requests[-1].rejected
    assert [m['role'] for m in chat.hist] == ['user', 'assistant'] + ['tool']*5 + ['assistant']

def test_explicit_ns_limits_what_runs(sim):
    "With `ns`, only the functions in it run, even if `tools` lists more"
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})]), Reply(text='no'))
    chat = mk(Chat, sim, SONNET, tools=[add], ns={})
    chat('add')
    assert tool_texts(chat.hist) == ["Error: no tool named 'add'; the tools are: none"]

@MODELS
@pytest.mark.parametrize('stream', [False, True])
def test_provider_error_keeps_user_message(sim, model, stream):
    sim.script(Fault(status=500))
    chat = mk(Chat, sim, model)
    with pytest.raises(litellm.InternalServerError):
        r = chat('hello', stream=stream)
        if stream: list(r)
    assert chat.hist == [{'role': 'user', 'content': 'hello'}]
    sim.script(Reply(text='hi'))
    assert text(chat()) == 'hi'
    assert [m['role'] for m in chat.hist] == ['user', 'assistant']
    assert check(model)(sim.bodies[-1]) == []

@MODELS
def test_error_in_second_round_keeps_whole_first_round(sim, model):
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})]), Fault(status=500))
    chat = mk(Chat, sim, model, tools=[add])
    with pytest.raises(litellm.InternalServerError): chat('add')
    assert [m['role'] for m in chat.hist] == ['user', 'assistant', 'tool']
    sim.script(Reply(text='3'))
    assert text(chat()) == '3'
    assert check(model)(sim.bodies[-1]) == [] and not sim.requests[-1].rejected

@MODELS
def test_cut_stream_drops_half_reply(sim, model):
    sim.script(Fault(cut_after=2, then=Reply(text='a b c d e f g h', chunks=8)))
    chat = mk(Chat, sim, model)
    with pytest.raises(Exception): list(chat('story', stream=True))
    assert chat.hist == [{'role': 'user', 'content': 'story'}]
    sim.script(Reply(text='ok'))
    assert text(chat('again')) == 'ok'
    assert check(model)(sim.bodies[-1]) == [] and not sim.requests[-1].rejected

@MODELS
def test_abandoned_stream_after_tool_call_response(sim, model):
    "Stop reading right after the reply that asks for a tool: that round is dropped, the next call works"
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})], chunks=2))
    chat = mk(Chat, sim, model, tools=[add])
    for o in chat('add', stream=True):
        if type(o).__name__ == 'ModelResponse': break
    sim.script(Reply(text='fresh'))
    assert text(chat('something else')) == 'fresh'
    assert chat.hist == [{'role': 'user', 'content': 'add\n\nsomething else'}, {'role': 'assistant', 'content': 'fresh'}]
    assert check(model)(sim.bodies[-1]) == [] and not sim.requests[-1].rejected

bad_calls = [
    (dict(msg=''), ValueError, 'empty'),
    (dict(msg='   '), ValueError, 'empty'),
    (dict(msg=42), TypeError, 'not int'),
    (dict(msg=b'not an image'), ValueError, 'image or a PDF'),
    (dict(msg='hi', max_tool_rounds=0), ValueError, 'max_tool_rounds'),
    (dict(msg='hi', temp=-0.5), ValueError, 'temp must be'),
    (dict(msg='hi', think='x'), ValueError, 'think must be'),
    (dict(msg=None), ValueError, 'nothing for the model to answer'),
]

@MODELS
@pytest.mark.parametrize('kw,exc,msg', bad_calls)
def test_bad_call_is_clear_and_leaves_history(sim, model, kw, exc, msg):
    chat = mk(Chat, sim, model, hist=['hi', 'hello'])
    before = [dict(m) for m in chat.hist]
    with pytest.raises(exc, match=msg):
        kw = dict(kw); chat(kw.pop('msg'), **kw)
    assert chat.hist == before and sim.requests == []

@pytest.mark.parametrize('kw,exc,msg', [
    (dict(model='no-such-model'), ValueError, "doesn't know which provider"),
    (dict(model=''), ValueError, 'model must be'),
    (dict(tools=[lambda x: x]), ValueError, 'docstring'),
    (dict(tools=['add']), TypeError, 'must be a function'),
    (dict(temp=3), ValueError, 'temp must be'),
])
def test_bad_chat_is_clear(kw, exc, msg):
    with pytest.raises(exc, match=msg): Chat(**({'model': SONNET} | kw))

def test_unknown_model_makes_no_banner(capsys):
    with pytest.raises(ValueError): Chat('mystery-model')
    out = capsys.readouterr()
    assert 'Provider List' not in out.out + out.err

def test_api_key_never_shows(sim, caplog):
    key = 'sk-ant-api03-SECRETSECRET'
    sim.script(Fault(status=401), Reply(text='ok'))
    chat = Chat(SONNET, api_base=sim.anthropic_base, api_key=key)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as ei: chat('hi')
    assert key not in str(ei.value) and key not in repr(ei.value)
    chat()
    assert key not in repr(chat) and key not in json.dumps(chat.hist)
    assert key not in caplog.text
    assert sim.requests[-1].headers.get('x-api-key') == key   # it did reach the provider
