"""The simulator itself (`lisette.testing`): it must serve and accept whatever a model or a client may send (JSON
nested deeper than Python's `json` goes, odd shapes) without crashing, and it must not let a wrong client look right.
Raw HTTP (httpx) where the wire bytes matter; litellm where what a real client sends matters."""
import json, os
import httpx, pytest
from helpers import SONNET, GPT
import litellm
import lisette.testing as T   # names looked up at use, so each test fails on its own when something is missing
from lisette.testing import Sim, Reply, Call, check_anthropic, check_openai

DEPTH = 3000   # json.loads gives up at about 1,000

def deep_text(n=DEPTH)->str:
    "Valid JSON nested `n` objects deep, in `json.dumps`'s own spacing"
    return '{"x": ' * n + '1' + '}' * n

def deep_obj(n=DEPTH):
    o = 1
    for _ in range(n): o = {'x': o}
    return o

def depth(o)->int:
    d = 0
    while isinstance(o, dict): o, d = o.get('x'), d + 1
    return d

@pytest.fixture
def sim():
    with Sim() as s: yield s

PATHS = {'anthropic': '/v1/messages', 'openai': '/v1/chat/completions'}

def post(sim, fmt, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(sim.url + PATHS[fmt], content=data, headers={'content-type': 'application/json'}, timeout=20, **kw)

def ask(fmt, stream=False, **kw):
    b = dict(model='m', messages=[dict(role='user', content='Go deep.')], stream=stream) | kw
    return b | (dict(max_tokens=100) if fmt == 'anthropic' else {})

def sse(text)->list:
    "The JSON events of a server-sent-event stream (each shallow), without OpenAI's final `[DONE]`"
    return [json.loads(l[6:]) for l in text.splitlines() if l.startswith('data: ') and l != 'data: [DONE]']

# --- 1a. tool-call arguments nested 3,000 levels deep -------------------------------------------------------------

@pytest.mark.parametrize('fmt', ['anthropic', 'openai'])
def test_deep_arguments_served_as_json(sim, fmt):
    args = deep_text()
    sim.script(Reply(calls=[Call('f', args)]))
    r = post(sim, fmt, ask(fmt))
    assert r.status_code == 200, r.text[:300]
    if fmt == 'anthropic':   # `input` is an object: the text must be in the body verbatim, once
        assert r.text.count(args) == 1
        m = json.loads(r.text.replace(args, '"ARGS"'))
        assert [(b['type'], b['name'], b['input']) for b in m['content']] == [('tool_use', 'f', 'ARGS')]
        assert m['stop_reason'] == 'tool_use'
    else:                    # `arguments` is a string: ordinary JSON
        tc = r.json()['choices'][0]['message']['tool_calls'][0]
        assert tc['function'] == dict(name='f', arguments=args)

@pytest.mark.parametrize('fmt', ['anthropic', 'openai'])
def test_deep_arguments_served_as_sse(sim, fmt):
    args = deep_text()
    sim.script(Reply(calls=[Call('f', args)]))
    r = post(sim, fmt, ask(fmt, stream=True))
    assert r.status_code == 200, r.text[:300]
    evs = sse(r.text)
    if fmt == 'anthropic':
        got = ''.join(e['delta']['partial_json'] for e in evs if e['type'] == 'content_block_delta')
        assert evs[-1]['type'] == 'message_stop'
    else:
        got = ''.join(tc['function'].get('arguments') or '' for e in evs if e['choices']
                      for tc in e['choices'][0]['delta'].get('tool_calls') or [])
    assert got == args

def test_deep_arguments_streamed_through_litellm(sim):
    "What a client sees: litellm rebuilds the deep arguments from an Anthropic stream (it never parses them)"
    args = deep_text()
    sim.script(Reply(calls=[Call('f', args)]))
    chunks = list(litellm.completion(SONNET, [dict(role='user', content='Go deep.')], stream=True,
                                     api_base=sim.anthropic_base, api_key='sk-test'))
    assert litellm.stream_chunk_builder(chunks).choices[0].message.tool_calls[0].function.arguments == args

def test_deep_and_malformed_arguments_still_sent_as_a_string(sim):
    "Deep but broken JSON can't be spliced into a response: like any malformed arguments, it goes as a string"
    bad = deep_text()[:-1]
    sim.script(Reply(calls=[Call('f', bad)]))
    r = post(sim, 'anthropic', ask('anthropic'))
    assert r.status_code == 200 and r.json()['content'][0]['input'] == bad

def test_shallow_arguments_unchanged():
    body = ask('anthropic')
    assert T.anthropic_json(Reply(calls=[Call('f', '{"a": 1}')]), body)['content'][0]['input'] == {'a': 1}
    assert T.anthropic_json(Reply(calls=[Call('f', '{"a": 1,')]), body)['content'][0]['input'] == '{"a": 1,'

# --- 1a. request bodies nested that deep (a client sending the call back) ---------------------------------------------

TOOLS_A = [dict(name='f', description='F', input_schema=dict(type='object', properties={}))]

def anthropic_round(inp='"DEEP"'):
    "An Anthropic body whose tool_use `input` is the text `inp`, and the body with a placeholder there"
    shallow = dict(model='m', max_tokens=100, tools=TOOLS_A, messages=[
        dict(role='user', content='Go deep.'),
        dict(role='assistant', content=[dict(type='tool_use', id='toolu_1', name='f', input='DEEP')]),
        dict(role='user', content=[dict(type='tool_result', tool_use_id='toolu_1', content='done')])])
    return json.dumps(shallow).replace('"DEEP"', inp), shallow

def test_deep_anthropic_request_accepted_and_recorded(sim):
    text, shallow = anthropic_round(deep_text())
    sim.script(Reply('Done.'))
    r = post(sim, 'anthropic', text)
    assert r.status_code == 200, r.text[:300]
    assert r.json()['content'][0]['text'] == 'Done.'
    body = sim.bodies[-1]
    assert depth(body['messages'][1]['content'][0]['input']) == DEPTH
    assert check_anthropic(body) == [] and not sim.requests[-1].rejected
    # usage counts the prompt as it does for any body: a quarter of its JSON length, plus one
    prompt = len(json.dumps([None, shallow['messages'], TOOLS_A])) - len('"DEEP"') + len(deep_text())
    assert r.json()['usage']['input_tokens'] == prompt // 4 + 1

@pytest.mark.parametrize('stream', [False, True])
def test_deep_openai_request_accepted_and_recorded(sim, stream):
    tool = dict(type='function', function=dict(name='f', description='F', parameters='DEEP'))
    text = json.dumps(ask('openai', stream=stream, tools=[tool])).replace('"DEEP"', deep_text())
    sim.script(Reply('Done.'))
    r = post(sim, 'openai', text)
    assert r.status_code == 200, r.text[:300]
    assert depth(sim.bodies[-1]['tools'][0]['function']['parameters']) == DEPTH

def test_deep_request_and_deep_reply_together(sim):
    "The whole deep round trip in the Anthropic format, streamed: the call goes back deep, the next answer too"
    text, _ = anthropic_round(deep_text())
    sim.script(Reply(calls=[Call('f', deep_text())]))
    r = post(sim, 'anthropic', text.replace('"max_tokens"', '"stream": true, "max_tokens"'))
    assert r.status_code == 200
    assert ''.join(e['delta']['partial_json'] for e in sse(r.text) if e['type'] == 'content_block_delta') == deep_text()

def test_not_json_is_still_a_400(sim):
    r = post(sim, 'anthropic', '{"model": ' + '[' * DEPTH)   # deep and unfinished
    assert r.status_code == 400 and 'not a valid JSON object' in r.text

def test_deep_loads_agrees_with_json():
    "The recursion-free parser the simulator falls back on reads what `json.loads` reads, and refuses what it refuses"
    for s in ['{"a": [1, 2.5, -3e2, true, false, null, "x\\u00e9\\n"], "b": {}, "c": [], "d": {"e": [[]]}}',
              ' [ ] ', '"s"', '0', '-0.0', '{"a": 1, "a": 2}', '[NaN, Infinity, -Infinity]', '{"k\\"": "\\ud83d\\ude00"}']:
        assert json.dumps(T._deep_loads(s)) == json.dumps(json.loads(s)), s
    for s in ['', '[', '[1,]', '{"a" 1}', '{"a": 1,}', '[1] 2', '{1: 2}', '01', '[1 2]', 'nul', '"abc']:
        with pytest.raises(ValueError): json.loads(s)
        with pytest.raises(ValueError): T._deep_loads(s)
    assert depth(T._deep_loads(deep_text())) == DEPTH

# --- 1a. the checkers on deep values: problems, not RecursionError ----------------------------------------------------

def test_check_openai_with_deep_values():
    ps = check_openai(dict(messages=[dict(role=deep_obj(), content='hi')]))
    assert len(ps) == 1 and ps[0].startswith('Invalid value:')
    msgs = [dict(role='user', content='Go'),
            dict(role='assistant', content=None, tool_calls=[dict(id=deep_obj(), type='function', function=dict(name='f', arguments='{}'))]),
            dict(role='tool', tool_call_id=deep_obj(), content='done')]
    assert check_openai(dict(messages=msgs))   # problems, whatever they are

def test_check_anthropic_with_deep_ids():
    msgs = [dict(role='user', content='Go'),
            dict(role='assistant', content=[dict(type='tool_use', id=deep_obj(), name='f', input={}),
                                            dict(type='tool_use', id=deep_obj(), name='f', input={})]),
            dict(role='user', content=[dict(type='tool_result', tool_use_id=deep_obj(), content='done')])]
    ps = check_anthropic(dict(model='m', max_tokens=10, tools=TOOLS_A, messages=msgs))
    assert 'messages.1.content.0.tool_use.id: Input should be a valid string' in ps

# --- 1c. odd shapes: the API's 400, never a dropped connection ----------------------------------------------------------

ODD_OPENAI = [([dict(role='user', content='hi'), 'hi'], "Invalid type for 'messages[1]'"),
              ([dict(role='user', content='hi'), dict(role='assistant', content='', tool_calls='call_1')], "messages[1].tool_calls"),
              ([dict(role='user', content='hi'), dict(role='assistant', content=None, tool_calls=[dict(id=1, type='function',
                 function=dict(name='f', arguments='{}'))]), dict(role='tool', tool_call_id=1, content='x')], "messages[1].tool_calls[0].id")]

@pytest.mark.parametrize('msgs,says', ODD_OPENAI, ids=['not-a-dict', 'tool_calls-a-string', 'id-not-a-string'])
def test_odd_openai_shapes(sim, msgs, says):
    assert any(says in p for p in check_openai(dict(messages=msgs)))
    r = post(sim, 'openai', dict(model='m', messages=msgs))
    assert r.status_code == 400 and says in r.json()['error']['message']

ODD_ANTHROPIC = [(dict(messages=[dict(role='user', content=5)]), 'messages.0.content: Input should be a valid list'),
                 (dict(messages=[dict(role='user', content=[dict(type='text', text=5)])]), 'messages.0.content.0.text: Input should be a valid string'),
                 (dict(system=[dict(type='text', text=['x'])], messages=[dict(role='user', content='hi')]), 'system.0.text: Input should be a valid string'),
                 (dict(thinking=True, messages=[dict(role='user', content='hi')]), 'thinking: Input should be a valid dictionary')]

@pytest.mark.parametrize('body,says', ODD_ANTHROPIC, ids=['content-int', 'text-int', 'system-text-list', 'thinking-bool'])
def test_odd_anthropic_shapes(sim, body, says):
    body = dict(model='m', max_tokens=10) | body
    assert says in check_anthropic(body)
    r = post(sim, 'anthropic', body)
    assert r.status_code == 400 and r.json()['error']['message'] == says

def test_a_reply_that_cannot_be_rendered_is_a_clear_500(sim):
    "A test's own mistake in a `Reply` is named, not a dropped connection that clients retry as a network fault"
    sim.script(Reply(text=123))
    r = post(sim, 'openai', ask('openai'))
    assert r.status_code == 500 and 'Sim: could not render the reply' in r.text
    assert r.headers['x-should-retry'] == 'false'

# --- 1b. servers whose chat template wants alternating roles ------------------------------------------------------------

def u(s='hi'): return dict(role='user', content=s)
def a(s='ok'): return dict(role='assistant', content=s)
def sy(s='Be brief.'): return dict(role='system', content=s)
def call(*ids): return dict(role='assistant', content=None, tool_calls=[dict(id=i, type='function', function=dict(name='f', arguments='{}')) for i in ids])
def tool(i): return dict(role='tool', tool_call_id=i, content='done')

ALTERNATING = dict(one=[u()], system=[sy(), u(), a(), u()], tools=[u(), call('c1', 'c2'), tool('c1'), tool('c2'), a()],
                   tools_then_user=[u(), call('c1'), tool('c1'), u()], developer=[dict(role='developer', content='Be brief.'), u()])
NOT_ALTERNATING = dict(two_users=([u(), u()], 1), after_system=([sy(), u(), u()], 2), two_assistants=([u(), a(), a()], 2),
                       assistant_after_tools=([u(), call('c1'), tool('c1'), a(), a()], 4), assistant_first=([sy(), a(), u()], 1))

@pytest.mark.parametrize('name', ALTERNATING)
def test_check_alternation_accepts(name):
    assert T.check_alternation(dict(messages=ALTERNATING[name])) == []

@pytest.mark.parametrize('name', NOT_ALTERNATING)
def test_check_alternation_rejects(name):
    msgs, i = NOT_ALTERNATING[name]
    ps = T.check_alternation(dict(messages=msgs))
    assert len(ps) == 1 and ps[0].startswith('Conversation roles must alternate user/assistant/user/assistant/...'), ps
    assert f'messages[{i}]' in ps[0]

async def test_sim_alternate_rejects_in_openai_format():
    with Sim(alternate=True) as s:
        s.script(Reply('Never sent.'))
        kw = dict(model=GPT, api_base=s.openai_base, api_key='sk-test')
        with pytest.raises(litellm.BadRequestError, match='Conversation roles must alternate'):
            await litellm.acompletion(messages=[u('one'), u('two')], **kw)
        assert [(r.status, r.rejected) for r in s.requests] == [(400, True)] and s.pending == 1
        res = await litellm.acompletion(messages=[sy(), u(), call('c1'), tool('c1'), a(), u()], **kw)
        assert res.choices[0].message.content == 'Never sent.' and s.requests[-1].status == 200

def test_sync_litellm_rewrites_the_conversation_on_that_error():
    "What the mode shows about litellm 1.106: its sync OpenAI path answers that 400 by inventing a blank turn and retrying"
    with Sim(Reply('Hm.'), alternate=True) as s:
        res = litellm.completion(GPT, [u('one'), u('two')], api_base=s.openai_base, api_key='sk-test')
        assert res.choices[0].message.content == 'Hm.'
        assert [r.status for r in s.requests] == [400, 200]
        assert s.bodies[1]['messages'] == [u('one'), dict(role='assistant', content=''), u('two')]

def test_sim_default_is_as_lenient_as_openai(sim):
    "OpenAI itself accepts two user messages in a row; only `alternate=True` refuses them"
    sim.script(Reply('Fine.'))
    assert litellm.completion(GPT, [u('one'), u('two')], api_base=sim.openai_base, api_key='sk-test').choices[0].message.content == 'Fine.'

# --- 1c. rules the providers enforce that the simulator let through -----------------------------------------------------

def tu(i): return dict(type='tool_use', id=i, name='f', input={})
def tr(i): return dict(type='tool_result', tool_use_id=i, content='done')
def body_a(*msgs, **kw): return dict(model='m', max_tokens=2048, tools=TOOLS_A, messages=list(msgs)) | kw
ROUND_A = [dict(role='user', content='Go'), dict(role='assistant', content=[tu('t1')])]

def test_anthropic_tool_results_come_first():
    assert check_anthropic(body_a(*ROUND_A, dict(role='user', content=[tr('t1'), dict(type='text', text='Now?')]))) == []
    ps = check_anthropic(body_a(*ROUND_A, dict(role='user', content=[dict(type='text', text='Here:'), tr('t1')])))
    assert ps and ps[0].startswith('messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: t1.')

THINK = dict(type='enabled', budget_tokens=1024)
def test_anthropic_thinking_rules():
    ok = body_a(dict(role='user', content='Hi'), thinking=THINK)
    assert check_anthropic(ok) == [] and check_anthropic(ok | dict(temperature=1)) == [] == check_anthropic(ok | dict(temperature=None))
    assert check_anthropic(ok | dict(temperature=0)) == ['`temperature` may only be set to 1 when thinking is enabled.']
    assert check_anthropic(ok | dict(max_tokens=1024)) == ['`max_tokens` must be greater than `thinking.budget_tokens`.']
    assert check_anthropic(ok | dict(thinking=dict(type='enabled', budget_tokens=500))) == [
        'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024']

def test_anthropic_tool_names_unique():
    assert check_anthropic(body_a(dict(role='user', content='Hi'), tools=TOOLS_A * 2)) == ['tools: Tool names must be unique.']

def test_openai_empty_tool_calls_and_tool_choice_without_tools():
    ps = check_openai(dict(messages=[u(), dict(role='assistant', content='', tool_calls=[]), u()]))
    assert ps == ["Invalid 'messages[1].tool_calls': empty array. Expected an array with minimum length 1, but got an empty array instead."]
    assert check_openai(dict(messages=[u()], tool_choice='none')) == [
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."]
    assert check_openai(dict(messages=[u()], tool_choice='none', tools=[dict(type='function', function=dict(name='f'))])) == []

@pytest.mark.parametrize('effort', ['low', 'medium', 'high'])
def test_litellm_thinking_requests_still_accepted(sim, effort):
    "The new thinking rules don't refuse what litellm itself sends for `reasoning_effort`"
    sim.script(Reply('4', thinking='2+2.'))
    res = litellm.completion(SONNET, [u('2+2?')], reasoning_effort=effort, api_base=sim.anthropic_base, api_key='sk-test')
    assert res.choices[0].message.content == '4'
    assert sim.requests[-1].status == 200 and check_anthropic(sim.bodies[-1]) == []
