"""Per-call tools (`tools=` and `ns=` on a call) and spending caps (`budget=`, `token_budget=`, `on_budget=`).

For `Chat` and `AsyncChat` and both wire formats, against `lisette.testing.Sim`: each test asserts what the user sees
(the answer, the exception, the history) and what reached the provider (the request bodies the simulator captured).
Costs are exact: every scripted reply reports the same usage, and litellm prices both models from its bundled map."""
import asyncio, copy, gc, re, warnings
import pytest
from lisette import Chat   # first: it keeps litellm's import offline and quiet
import litellm
from litellm import ModelResponseStream
from lisette import AsyncChat, BudgetExceeded
from lisette.testing import Reply, Call

from helpers import *

CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])
STREAMS = pytest.mark.parametrize('stream', [False, True], ids=['plain', 'stream'])

@pytest.fixture(autouse=True)
def _collect_after():
    yield
    gc.collect(1)

# ---------------------------------------------------------------- tools and readers

def mul(a:int, # the first number
        b:int  # the second number
       )->int:
    "Multiply two numbers"
    return a * b

async def amul(a:int, # the first number
               b:int  # the second number
              )->int:
    "Multiply two numbers, awaited"
    await asyncio.sleep(0)
    return a * b

def other_add():
    "A tool named `add`, like the chat's, that does something else (and says so)"
    def add(a:int, # the first number
            b:int  # the second number
           )->int:
        "Add two numbers, plus a hundred"
        return a + b + 100
    return add

def no_doc(a:int)->int: return a

TIMES = {'type': 'function', 'function': {'name': 'times', 'description': 'Multiply two numbers',
         'parameters': {'type': 'object', 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'integer'}},
                        'required': ['a', 'b']}}}

def offered(body)->list:
    "The names of the tools a request body offers, sorted (either wire format)"
    return sorted(t['function']['name'] if 'function' in t else t['name'] for t in body.get('tools') or [])

def description(body, name)->str:
    "The description of tool `name` in a request body (either wire format)"
    t = [t.get('function', t) for t in body.get('tools') or [] if t.get('function', t)['name'] == name]
    assert len(t) == 1, f'{name!r} offered {len(t)} times: {offered(body)}'
    return t[0].get('description', '')



async def valid_after(sim, cls, model, hist):
    """`hist` is a valid transcript: every tool call answered, and one more call on it (a new chat of `cls`, no caps)
    gets its answer in a request the strict simulator accepts. Resets the simulator first"""
    answered(hist)
    sim.reset(); sim.script(Reply(text='Still here.'))
    chat = mk(cls, sim, model, tools=[add, mul], hist=copy.deepcopy(hist))
    assert text(await ask(chat, 'Are you there?')) == 'Still here.'
    accepted(sim, model)


# ---------------------------------------------------------------- costs

USAGE = dict(input=1000, output=1000)   # what every scripted reply reports: one "unit" of spend a request

def unit(model, kind)->float:
    "What one request reporting `USAGE` spends: US dollars (litellm's price for `model`) or tokens"
    if kind == 'tokens': return USAGE['input'] + USAGE['output']
    p = litellm.model_cost[model.split('/', 1)[1]]
    return USAGE['input']*p['input_cost_per_token'] + USAGE['output']*p['output_cost_per_token']

def cap_kw(model, kind, units:float)->dict:
    "The cap of `units` requests' spend, as `budget=` or `token_budget=`"
    c = units * unit(model, kind)
    return {'budget': c} if kind == 'dollars' else {'token_budget': int(c)}

def spend(use, kind)->float: return use.cost if kind == 'dollars' else use.prompt + use.completion

def loop_script(rounds=3)->list:
    "`rounds` rounds of one `add` call each (add(i, 1) in round i), then an answer; every reply reports `USAGE`"
    return [Reply(calls=[Call('add', {'a': i, 'b': 1})], usage=USAGE) for i in range(1, rounds+1)] + [
            Reply(text='All added.', usage=USAGE)]

def obedient(body):
    "A model that calls `add` until a request must be answered in words, and then answers"
    if final(body): return Reply(text='Final answer.', usage=USAGE)
    return Reply(calls=[Call('add', {'a': 1, 'b': 1})], usage=USAGE)

def numbers(s:str)->list: return [float(x.replace(',', '')) for x in re.findall(r'\d[\d,]*(?:\.\d+)?', s)]

# ================================================================ 1. Per-call tools

@CLASSES
@STREAMS
@MODELS
async def test_call_tools_are_offered_beside_the_chats_and_run(sim, cls, stream, model):
    """`tools=[mul]` on a call: that call offers `add` (the chat's) and `mul`, and runs `mul` when the model calls it.
    The next call without `tools=` offers only `add`, and a call of `mul` gets "no tool named 'mul'" back"""
    chat = mk(cls, sim, model, tools=[add])
    sim.script(Reply(calls=[Call('mul', {'a': 2, 'b': 3})]), Reply(text='It is 6.'))
    assert text(await ask(chat, 'What is 2 times 3?', stream, tools=[mul])) == 'It is 6.'
    assert [offered(b) for b in sim.bodies] == [['add', 'mul']]*2
    assert tool_texts(chat.hist) == ['6']
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant']
    accepted(sim, model)

    sim.reset(); sim.script(Reply(calls=[Call('mul', {'a': 4, 'b': 5})]), Reply(text='I cannot multiply now.'))
    assert text(await ask(chat, 'And 4 times 5?', stream)) == 'I cannot multiply now.'
    assert [offered(b) for b in sim.bodies] == [['add']]*2
    assert tool_texts(chat.hist)[-1].startswith("Error: no tool named 'mul'"), tool_texts(chat.hist)
    accepted(sim, model)

@CLASSES
@MODELS
async def test_call_tool_replaces_the_chats_tool_of_the_same_name(sim, cls, model):
    """A call tool named like a chat tool replaces it for that call: one `add` offered, the call's (its description),
    and the call's function runs; the next call offers and runs the chat's `add` again"""
    chat = mk(cls, sim, model, tools=[add, mul])
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})]), Reply(text='Done.'))
    await ask(chat, 'Add 1 and 2.', tools=[other_add()])
    assert [offered(b) for b in sim.bodies] == [['add', 'mul']]*2
    assert all('hundred' in description(b, 'add') for b in sim.bodies)
    assert tool_texts(chat.hist) == ['103']
    accepted(sim, model)

    sim.reset(); sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})]), Reply(text='Done.'))
    await ask(chat, 'Again, please.')
    assert [offered(b) for b in sim.bodies] == [['add', 'mul']]*2
    assert not any('hundred' in description(b, 'add') for b in sim.bodies)
    assert tool_texts(chat.hist)[-1] == '3'
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
async def test_call_tools_are_offered_in_every_round(sim, cls, stream, model):
    "A three-round tool loop in one call with `tools=[mul]`: every request of it offers `add` and `mul`, and both run"
    chat = mk(cls, sim, model, tools=[add])
    sim.script(Reply(calls=[Call('mul', {'a': 2, 'b': 3})]), Reply(calls=[Call('add', {'a': 6, 'b': 1})]),
               Reply(calls=[Call('mul', {'a': 7, 'b': 2}), Call('add', {'a': 1, 'b': 1})]), Reply(text='It is 14.'))
    assert text(await ask(chat, 'Work it out.', stream, tools=[mul])) == 'It is 14.'
    assert [offered(b) for b in sim.bodies] == [['add', 'mul']]*4
    assert tool_texts(chat.hist) == ['6', '7', '14', '2']
    accepted(sim, model)

@CLASSES
@MODELS
async def test_call_tools_on_a_chat_without_tools(sim, cls, model):
    """A chat with no tools, a call with `tools=[mul]`: that call offers `mul` and runs it; the next call offers no
    `mul`, and its request (tool calls in the history) is still accepted"""
    chat = mk(cls, sim, model)
    sim.script(Reply(calls=[Call('mul', {'a': 3, 'b': 3})]), Reply(text='Nine.'))
    assert text(await ask(chat, 'Square 3.', tools=[mul])) == 'Nine.'
    assert [offered(b) for b in sim.bodies] == [['mul']]*2
    assert tool_texts(chat.hist) == ['9']
    sim.reset(); sim.script(Reply(text='Hello.'))
    assert text(await ask(chat, 'Hi.')) == 'Hello.'
    assert 'mul' not in offered(sim.bodies[0])
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
async def test_call_schema_dict_with_its_function_in_ns(sim, cls, stream, model):
    """`tools=[a schema dict]` with `ns={'times': mul}` on a call: `times` is offered beside `add` and runs `mul`;
    the next call neither offers nor runs it"""
    chat = mk(cls, sim, model, tools=[add])
    sim.script(Reply(calls=[Call('times', {'a': 4, 'b': 5})]), Reply(text='Twenty.'))
    assert text(await ask(chat, '4 times 5?', stream, tools=[TIMES], ns={'times': mul})) == 'Twenty.'
    assert [offered(b) for b in sim.bodies] == [['add', 'times']]*2
    assert tool_texts(chat.hist) == ['20']
    accepted(sim, model)

    sim.reset(); sim.script(Reply(calls=[Call('times', {'a': 1, 'b': 5})]), Reply(text='No.'))
    await ask(chat, '1 times 5?', stream)
    assert [offered(b) for b in sim.bodies] == [['add']]*2
    assert tool_texts(chat.hist)[-1].startswith("Error: no tool named 'times'"), tool_texts(chat.hist)
    accepted(sim, model)

@CLASSES
@MODELS
async def test_call_ns_adds_to_the_chats_namespace(sim, cls, model):
    """`ns={'mul': mul}` on a call: its tool calls may run `mul` as well as the chat's `add` (both, in parallel);
    the results reach the provider in the next request"""
    chat = mk(cls, sim, model, tools=[add])
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2}), Call('mul', {'a': 3, 'b': 4})]), Reply(text='3 and 12.'))
    assert text(await ask(chat, 'Both, please.', ns={'mul': mul})) == '3 and 12.'
    assert tool_texts(chat.hist) == ['3', '12']
    assert {'3', '12'} <= set(body_texts(sim.bodies[1]))
    accepted(sim, model)

@CLASSES
@MODELS
async def test_async_call_tool_runs(sim, cls, model):
    "An async function as a call tool is offered and its awaited result sent back"
    chat = mk(cls, sim, model, tools=[add])
    sim.script(Reply(calls=[Call('amul', {'a': 6, 'b': 7})]), Reply(text='42.'))
    assert text(await ask(chat, '6 times 7?', tools=[amul])) == '42.'
    assert offered(sim.bodies[0]) == ['add', 'amul']
    assert tool_texts(chat.hist) == ['42']
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('bad', [lambda a: a, no_doc], ids=['lambda', 'no_docstring'])
async def test_bad_call_tool_is_refused_before_sending(sim, cls, stream, model, bad):
    """A lambda, or a function without a docstring, in a call's `tools=`: a ValueError/TypeError at the call, nothing
    sent, the history untouched; the next call goes on with the chat's tools"""
    sim.default = Reply(text='Sent anyway.')
    chat = mk(cls, sim, model, tools=[add], hist=['Hi.', 'Hello!'])
    before = copy.deepcopy(chat.hist)
    err = await raised_at_call(chat, 'Use it.', stream=stream, tools=[mul, bad])
    assert isinstance(err, (ValueError, TypeError)), f'expected ValueError/TypeError at the call, got {err!r}'
    assert sim.requests == [], f'refused, yet {len(sim.requests)} requests were sent'
    assert chat.hist == before
    sim.default = None; sim.script(Reply(text='Fine.'))
    assert text(await ask(chat, 'Never mind.')) == 'Fine.'
    assert offered(sim.bodies[0]) == ['add']
    accepted(sim, model)

# ================================================================ 2. Spending caps

def test_budget_exceeded_is_a_runtime_error():
    assert issubclass(BudgetExceeded, RuntimeError)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
async def test_chat_cap_spans_calls(sim, cls, stream, model, kind):
    """A chat's cap of 1.5 requests' spend: the first two calls (spent 0, then 1 request) are sent and answered; the
    third (spent 2 requests) raises `BudgetExceeded` without sending anything; the history stays valid"""
    chat = mk(cls, sim, model, **cap_kw(model, kind, 1.5))
    sim.script(Reply(text='One.', usage=USAGE), Reply(text='Two.', usage=USAGE), Reply(text='Three.', usage=USAGE))
    assert text(await ask(chat, 'First.', stream)) == 'One.'
    assert text(await ask(chat, 'Second.', stream)) == 'Two.'
    assert spend(chat.total_use, kind) == pytest.approx(2*unit(model, kind))
    with pytest.raises(BudgetExceeded): await ask(chat, 'Third.', stream)
    assert len(sim.requests) == 2, 'the third call was sent past the cap'
    assert spend(chat.total_use, kind) == pytest.approx(2*unit(model, kind))
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
async def test_budget_exceeded_says_spend_and_cap(sim, cls, model, kind):
    "The message of `BudgetExceeded` names what was spent and the cap"
    cap, usage = (0.01, dict(input=1000, output=2000)) if kind == 'dollars' else (3000, dict(input=3000, output=1000))
    chat = mk(cls, sim, model, **({'budget': cap} if kind == 'dollars' else {'token_budget': cap}))
    sim.script(Reply(text='Pricey.', usage=usage))
    await ask(chat, 'Spend.')
    spent = spend(chat.total_use, kind)
    assert spent > cap + (0.01 if kind == 'dollars' else 0)
    with pytest.raises(BudgetExceeded) as ei: await ask(chat, 'More.')
    ns, tol = numbers(str(ei.value)), (0.005 if kind == 'dollars' else 0)   # dollars may be shown to the cent
    assert any(abs(n - cap) <= tol for n in ns), f'the cap {cap} is not in {str(ei.value)!r}'
    assert any(abs(n - spent) <= tol for n in ns), f'the spend {spent} is not in {str(ei.value)!r}'

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
@pytest.mark.parametrize('units', [0.5, 1.5, 2.5, 3.5])
async def test_tool_loop_spends_at_most_one_request_past_the_cap(sim, cls, stream, model, kind, units):
    """(The issue's required test.) A three-round tool loop (4 requests) under a chat cap of `units` requests' spend:
    the call either answers (all 4 requests sent) or raises `BudgetExceeded`; the spend never exceeds the cap by more
    than one request's; every tool call that came back was run and answered; the history is valid"""
    kw = cap_kw(model, kind, units)
    cap, one = next(iter(kw.values())), unit(model, kind)
    chat = mk(cls, sim, model, tools=[add], **kw)
    sim.script(*loop_script(3))
    try: res = await ask(chat, 'Add them up.', stream)
    except BudgetExceeded: res = None
    n = len(sim.requests)
    if res is not None: assert (text(res), n) == ('All added.', 4)
    assert 1 <= n <= 4
    assert spend(chat.total_use, kind) == pytest.approx(n*one)
    assert spend(chat.total_use, kind) <= cap + one + 1e-12, f'{n} requests sent under a cap of {units}'
    assert tool_texts(chat.hist) == [str(i+1) for i in range(1, min(n, 3)+1)]
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
@pytest.mark.parametrize('units', [0.5, 1.5, 2.5, 3.5])
async def test_requests_sent_until_the_next_would_reach_the_cap(sim, cls, stream, model, kind, units):
    """Before a call's first request, what was spent is checked against the cap; before each later one, what was spent
    plus what the last request cost (the next is likely no cheaper). Each request here costs one unit, so under a cap
    of `units` the loop sends the first request and then round k while k+1 < units: max(1, units-0.5) of the 4 it
    wants; `BudgetExceeded` if that is fewer"""
    chat = mk(cls, sim, model, tools=[add], **cap_kw(model, kind, units))
    sim.script(*loop_script(3))
    want = min(4, max(1, int(units - 0.5)))
    if want < 4:
        with pytest.raises(BudgetExceeded): await ask(chat, 'Add them up.', stream)
    else: assert text(await ask(chat, 'Add them up.', stream)) == 'All added.'
    assert len(sim.requests) == want, f'{len(sim.requests)} requests sent, not {want}'
    assert spend(chat.total_use, kind) == pytest.approx(want*unit(model, kind))

@CLASSES
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
async def test_budget_exceeded_in_a_loop_says_what_was_spent(sim, cls, model, kind):
    "`BudgetExceeded` raised between the rounds of a tool loop names the spend so far (`chat.total_use`) and the cap"
    kw = cap_kw(model, kind, 1.5)
    cap = next(iter(kw.values()))
    chat = mk(cls, sim, model, tools=[add], **kw)
    sim.script(*loop_script(3))
    with pytest.raises(BudgetExceeded) as ei: await ask(chat, 'Add them up.')
    spent, ns = spend(chat.total_use, kind), numbers(str(ei.value))
    near = lambda n, x: abs(n - x) <= (0.1*x if kind == 'dollars' else 0)   # dollars: to 2 significant digits
    assert any(near(n, cap) for n in ns), f'the cap {cap} is not in {str(ei.value)!r}'
    assert any(near(n, spent) for n in ns), f'the spend {spent} is not in {str(ei.value)!r}'

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
async def test_call_cap_counts_only_that_call(sim, cls, stream, model, kind):
    """A call's cap counts that call's spend (`chat.use`), not what the chat spent before: after a call that spent 2
    requests, a call capped at 2.5 still sends requests, then raises within one request of its cap; the same chat
    goes on afterwards"""
    one = unit(model, kind)
    chat = mk(cls, sim, model, tools=[add])
    sim.script(*loop_script(1))
    await ask(chat, 'Warm up.', stream)
    assert spend(chat.total_use, kind) == pytest.approx(2*one)
    sim.reset(); sim.script(*loop_script(3))
    kw = cap_kw(model, kind, 2.5)
    with pytest.raises(BudgetExceeded): await ask(chat, 'Add them up.', stream, **kw)
    n = len(sim.requests)
    assert 1 <= n < 4, f'{n} requests sent'
    assert spend(chat.use, kind) == pytest.approx(n*one)
    assert spend(chat.use, kind) <= next(iter(kw.values())) + one + 1e-12
    assert spend(chat.total_use, kind) == pytest.approx((n+2)*one)
    answered(chat.hist)
    sim.reset(); sim.script(Reply(text='Still here.'))
    assert text(await ask(chat, 'Go on.', stream)) == 'Still here.'   # the chat itself has no cap
    accepted(sim, model)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('where', ['chat', 'call', 'call_overrides_chat'])
async def test_on_budget_answer_makes_the_last_request_final(sim, cls, stream, model, where):
    """`on_budget='answer'` (on the chat, on the call, or on the call over the chat's 'raise'): when the cap stops the
    tool loop, no exception; the last request sent must be answered in words (tool_choice none), the ones before may
    call tools; the call returns that answer, the history ends with it and is valid"""
    cap = cap_kw(model, 'dollars', 1.5)
    if where == 'chat': chat, kw = mk(cls, sim, model, tools=[add], on_budget='answer', **cap), {}
    elif where == 'call': chat, kw = mk(cls, sim, model, tools=[add]), dict(on_budget='answer', **cap)
    else: chat, kw = mk(cls, sim, model, tools=[add], on_budget='raise', **cap), dict(on_budget='answer')
    sim.default = obedient
    res = await ask(chat, 'Keep adding.', stream, **kw)
    assert text(res) == 'Final answer.'
    assert final(sim.bodies[-1]), {k: sim.bodies[-1].get(k) for k in ('tool_choice', 'tools')}
    assert not any(final(b) for b in sim.bodies[:-1])
    assert 2 <= len(sim.requests) <= 3, len(sim.requests)
    assert chat.hist[-1] == {'role': 'assistant', 'content': 'Final answer.'}
    assert tool_texts(chat.hist) == ['2']*(len(sim.requests)-1)
    sim.default = None
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@STREAMS
@MODELS
@pytest.mark.parametrize('kind', ['dollars', 'tokens'])
@pytest.mark.parametrize('units', [1.5, 2.5])
async def test_on_budget_answer_spends_at_most_one_request_past_the_cap(sim, cls, stream, model, kind, units):
    """"Either way ... the spend never exceeds the cap by more than one request's cost": with `on_budget='answer'`
    too, the final answer included (caps of at least one request's spend, so one request can be made the final one)"""
    kw = cap_kw(model, kind, units)
    cap, one = next(iter(kw.values())), unit(model, kind)
    chat = mk(cls, sim, model, tools=[add], on_budget='answer', **kw)
    sim.default = obedient
    assert text(await ask(chat, 'Keep adding.', stream)) == 'Final answer.'
    assert spend(chat.total_use, kind) <= cap + one + 1e-12, \
        f'spent {len(sim.requests)} requests ({spend(chat.total_use, kind)}) under a cap of {units} ({cap})'
    sim.default = None
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
@pytest.mark.parametrize('where', ['chat', 'call'])
async def test_stream_stopped_when_its_estimate_passes_the_cap(sim, cls, model, where):
    """A long streamed reply whose text alone costs far more than the cap: iterating the stream raises
    `BudgetExceeded` before it ends (fewer text chunks than were sent); the partial reply is not in the history, nor
    in what the provider sees next"""
    long = ' '.join(f'word{i}' for i in range(1000))   # ~1,700 tokens of output: cents, against a cap of 0.1 cent
    chat = mk(cls, sim, model, **({'budget': 0.001} if where == 'chat' else {}))
    kw = {'budget': 0.001} if where == 'call' else {}
    sim.script(Reply(text=long, chunks=50, usage=dict(input=20, output=1700)))
    out = []
    with pytest.raises(BudgetExceeded): await collect(chat, 'Tell me everything.', stream=True, out=out, **kw)
    chunks = [o for o in out if isinstance(o, ModelResponseStream)]
    assert len(chunks) < 50, f'the stream ran to its end ({len(chunks)} chunks)'
    assert 'assistant' not in roles(chat.hist), chat.hist
    assert not any('word1 ' in str(m.get('content')) for m in chat.hist)
    await valid_after(sim, cls, model, chat.hist)
    assert not any('word1 ' in t for t in body_texts(sim.bodies[-1]))

@CLASSES
async def test_dollar_cap_on_an_unpriced_model_warns_and_token_cap_works(sim, cls):
    """`budget=` on a model litellm has no price for: a warning when the chat is made; its `token_budget=` still
    stops a tool loop of 2,000-token requests under a 3,000-token cap (`BudgetExceeded`, at most one request past)"""
    model = 'openai/my-local-model'
    with pytest.warns(Warning, match=r'(?i)price|cost|budget'):
        chat = cls(model, api_base=sim.openai_base, api_key='sk-test', tools=[add], budget=0.01, token_budget=3000)
    sim.script(*loop_script(3))
    with pytest.raises(BudgetExceeded): await ask(chat, 'Add them up.')
    n = len(sim.requests)
    assert 1 <= n <= 2, f'{n} requests sent'
    assert chat.total_use.prompt + chat.total_use.completion == 2000*n
    assert tool_texts(chat.hist) == ['2', '3'][:n]
    await valid_after(sim, cls, model, chat.hist)

@CLASSES
@MODELS
def test_dollar_cap_on_a_priced_model_does_not_warn(sim, cls, model):
    "`budget=` on a model litellm prices: no warning"
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mk(cls, sim, model, budget=0.01)
