"""`ReplyBuilder` against `litellm.stream_chunk_builder`: on streams recorded from `lisette.testing.Sim` in both wire
formats, sync and async, the response built as the chunks arrive is the one litellm rebuilds from the whole stream,
field for field (`model_dump()`), hidden params (the cost among them) included. Nothing is left out of the comparison:
the id, `created` and the hidden params' timestamps come from the chunks, so both sides have the same ones."""
import pytest
from lisette import Chat   # first: it keeps litellm's import offline and quiet
import litellm
from litellm import ModelResponse
from lisette.replies import ReplyBuilder, build_response, stream_with_complete, astream_result, _piece
from lisette.testing import Reply, Call

from helpers import *

CITES = [dict(url='https://en.wikipedia.org/wiki/Paris', title='Paris - Wikipedia', cited_text='Paris is the capital of France')]
USAGE = dict(input=1200, output=80, cache_read=1000, cache_creation=150, reasoning=30)
WORDS = ''.join(f'w{i:04d} ' for i in range(1200))   # no two pieces alike: litellm refuses a stream that repeats a chunk
CASES = {
    'text': Reply(text='Hello there, friend. How are you today?'),
    'tools': Reply(text='Let me add these.', calls=[Call('add', {'a': i, 'b': 10*i}) for i in range(3)], chunks=4),
    'only tools': Reply(calls=[Call('add', {'a': 1, 'b': 'x'*300}), Call('add', {'a': 2, 'b': 3})], chunks=40),
    'thinking': Reply(thinking='Quicksort, or just sorted()? sorted() is Timsort. '*6, text='Use sorted().', chunks=12),
    'citations': Reply(text='Paris is the capital of France.', citations=CITES),
    'usage': Reply(text='Hi there, all cached.', usage=USAGE),
    'length': Reply(text='One, two, three, four', finish='length'),
    'many chunks': Reply(text=WORDS, chunks=1200),
    'empty text': Reply(text=''),
    'everything': Reply(thinking='First the capital, then the sum. '*3, text='Paris. And 1 + 2:', citations=CITES,
                        calls=[Call('add', {'a': 1, 'b': 2}), Call('add', {'a': 3, 'b': 4})], usage=USAGE, chunks=6),
}
case = pytest.mark.parametrize('name', list(CASES))

def kw(sim, model):
    "What lisette sends: an OpenAI stream asks for its usage, an Anthropic one always has it"
    extra = {} if model.startswith('anthropic') else dict(stream_options={'include_usage': True})
    return dict(api_base=base(sim, model), api_key='sk-test', stream=True, **extra)

def record(sim, model, reply)->list:
    "litellm's chunks of the simulator's `reply`, streamed by `litellm.completion`"
    sim.script(reply)
    return list(litellm.completion(model, [u('Hi')], **kw(sim, model)))

async def arecord(sim, model, reply)->list:
    "The same, by `litellm.acompletion`"
    sim.script(reply)
    return [o async for o in await litellm.acompletion(model, [u('Hi')], **kw(sim, model))]

def whole(res:ModelResponse)->tuple: return res.model_dump(), dict(res._hidden_params)

def built(chunks)->ModelResponse:
    rb = ReplyBuilder()
    for o in chunks: rb.add(o)
    return rb.build()

def check_same(chunks):
    "The builder's response is litellm's, and is built from fewer chunks when the stream has runs of pieces"
    mine = built(chunks)
    ref = litellm.stream_chunk_builder(chunks)
    assert whole(mine) == whole(ref)
    return mine

@MODELS
@case
def test_same_as_stream_chunk_builder(sim, model, name):
    res = check_same(record(sim, model, CASES[name]))
    r = CASES[name]
    assert (res.choices[0].message.content or '') == r.text
    assert [tc.function.name for tc in res.choices[0].message.tool_calls or []] == [c.name for c in r.calls]

@MODELS
@case
async def test_same_as_stream_chunk_builder_async(sim, model, name):
    check_same(await arecord(sim, model, CASES[name]))

@MODELS
def test_a_long_stream_is_rebuilt_from_a_few_chunks(sim, model):
    chunks = record(sim, model, CASES['many chunks'])
    rb = ReplyBuilder(chunks)
    assert len(chunks) > 1200 and len(rb._parts) <= 4
    assert whole(rb.build()) == whole(litellm.stream_chunk_builder(chunks))

# ---------------------------------------------------------------- the comparison can fail

@MODELS
def test_the_comparison_catches_a_dropped_fragment(sim, model):
    "A builder that lost one tool-call fragment (or one text piece) would not pass `check_same`"
    chunks = record(sim, model, CASES['tools'])
    ref = whole(litellm.stream_chunk_builder(chunks))
    for kind in ('args', 'text'):
        i = max(i for i, o in enumerate(chunks) if (p := _piece(o)) and p[0] == kind)
        rb = ReplyBuilder([o for j, o in enumerate(chunks) if j != i])
        assert whole(rb.build()) != ref, kind

@MODELS
def test_merging_is_checked_piece_by_piece(sim, model, monkeypatch):
    "Were runs merged without their last piece, the builder's response would differ from litellm's"
    import lisette.replies as R
    chunks = record(sim, model, CASES['tools'])
    merged = R._merged
    monkeypatch.setattr(R, '_merged', lambda k, o, ps: merged(k, o, ps[:-1] or ps))
    with pytest.raises(AssertionError): check_same(chunks)

# ---------------------------------------------------------------- chunks the fast path leaves to litellm

@MODELS
def test_chunks_out_of_order_are_rebuilt_whole(sim, model):
    "litellm sorts chunks by the time each was made: out of that order, the builder gives litellm every chunk"
    chunks = record(sim, model, CASES['tools'])
    late = [i for i, o in enumerate(chunks) if _piece(o)][2]
    o = chunks[late].model_copy()
    o._hidden_params = {**chunks[late].hidden_params, 'created_at': chunks[0].hidden_params['created_at'] - 1}
    chunks[late] = o
    rb = ReplyBuilder(chunks)
    assert rb._whole
    assert whole(rb.build()) == whole(litellm.stream_chunk_builder(chunks))

@MODELS
def test_a_chunk_with_more_than_a_piece_is_kept(sim, model):
    "A field the builder doesn't merge (here a refusal in a text chunk) keeps its chunk whole, and the result is litellm's"
    chunks = record(sim, model, CASES['text'])
    i = [i for i, o in enumerate(chunks) if _piece(o)][1]
    o = chunks[i].model_copy(deep=True)
    o.choices[0].delta.refusal = 'No.'
    chunks[i] = o
    assert _piece(o) is None
    res = check_same(chunks)
    kept = getattr(litellm.stream_chunk_builder(chunks).choices[0].message, 'refusal', None)   # litellm 1.106 drops refusals
    assert getattr(res.choices[0].message, 'refusal', None) == kept and kept in ('No.', None)

@MODELS
def test_a_model_that_changes_midway(sim, model):
    "litellm keeps the first model that differs from the first chunk's (Azure's model router): a run never spans it"
    chunks = record(sim, model, CASES['text'])
    for i in [i for i, o in enumerate(chunks) if _piece(o)][2:]:
        chunks[i] = chunks[i].model_copy(update=dict(model='other-model'))
    assert check_same(chunks).model == 'other-model'

# ---------------------------------------------------------------- where lisette uses it

@MODELS
def test_stream_with_complete_and_build_response(sim, model):
    chunks = record(sim, model, CASES['everything'])
    ref = whole(litellm.stream_chunk_builder(chunks))
    assert whole(build_response(chunks)) == ref
    sim.script(CASES['everything'])
    *got, res = stream_with_complete(litellm.completion(model, [u('Hi')], **kw(sim, model)))
    assert whole(res) == whole(litellm.stream_chunk_builder(got))

@MODELS
async def test_astream_result(sim, model):
    sim.script(CASES['everything'])
    sr = astream_result(await litellm.acompletion(model, [u('Hi')], **kw(sim, model)))
    got = [o async for o in sr]
    assert got == sr.chunks and sr.value.choices[0].message.tool_calls
    assert whole(sr.value) == whole(litellm.stream_chunk_builder(sr.chunks))

def test_no_chunks():
    assert ReplyBuilder().build() is None
