"""The randomized test (issue 11): random scenarios of provider faults, cut and malformed streams, time-outs, cancels,
abandoned streams, calls at once and bad input, for `Chat` and `AsyncChat`, streamed and not, in the Anthropic and the
OpenAI wire format, against `lisette.testing.Sim`. After each scenario the history must be a valid transcript, and one
more plain call must succeed with a request that passes the provider's strict check.

It runs scenarios until its time budget is spent, then reports every failure, grouped by what failed. Each scenario
is generated from the seed and its number alone, so one failing scenario is reproduced on its own:

    LISETTE_RANDOM_SEED=123 LISETTE_RANDOM_ONLY=17 pytest -q -s tests/test_random.py   # scenario 17 of seed 123
    LISETTE_RANDOM_SECONDS=10 pytest -q tests/test_random.py                           # a 10 s budget (default 60 s)

The model is scripted per call, not per request: each call's message carries a key ('Q17-2'), and the simulator
answers round r of that call from that call's plan, whatever order the calls reach it in (see `Brain`). Where timing
is random (cancels, abandoned streams, calls at once) only the invariants are checked, not the exact history."""
import asyncio, copy, dataclasses, gc, itertools, json, os, random, re, secrets, struct, threading, time, traceback, zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from lisette import Chat, delta_text   # first: it keeps litellm's import offline and quiet
from lisette import AsyncChat, StreamAbandoned
from lisette.testing import Sim, Reply, Call, Fault
from litellm import ModelResponse, ModelResponseStream
from helpers import SONNET, GPT, base, check, text, add, aadd

CALL_LIMIT = 20       # seconds a call may take before its scenario is reported as hung
SCENARIO_LIMIT = 90   # seconds a whole scenario may take
DEFAULT_RETRIES = 2   # what `num_retries=None` means: transient errors are retried twice

def settings():
    "The seed (given, or a fresh one), the one scenario to run (or None: all), and the time budget in seconds"
    seed = os.environ.get('LISETTE_RANDOM_SEED') or str(secrets.randbelow(10**9))
    only = os.environ.get('LISETTE_RANDOM_ONLY')
    return int(seed), int(only) if only else None, float(os.environ.get('LISETTE_RANDOM_SECONDS') or 60)

# ---------------------------------------------------------------- tools: sync and async, quick, slow and failing

def boom(x:int # anything
        )->str:
    "Fail, always"
    raise ValueError(f'boom {x}')

async def aboom(x:int # anything
               )->str:
    "Fail, always, awaited"
    await asyncio.sleep(0)
    raise RuntimeError(f'aboom {x}')

def slow(s:float # seconds to take
        )->str:
    "Take `s` seconds"
    time.sleep(min(s, 1))
    return f'slept {s}'

async def aslow(s:float # seconds to take
               )->str:
    "Take `s` seconds, awaited"
    await asyncio.sleep(min(s, 1))
    return f'slept {s}'

def echo(s:str # the text
        )->str:
    "Say `s` back"
    return s

TOOLS = {f.__name__: f for f in (add, aadd, boom, aboom, slow, aslow, echo)}
SYNC_TOOLS, ASYNC_TOOLS = ['add', 'boom', 'slow', 'echo'], ['aadd', 'aboom', 'aslow']

# ---------------------------------------------------------------- the scripted model

KEY = re.compile(r'Q\d+-\d+|one more')

def text_of(m)->str:
    "The text of a message: its str content, or its text parts joined (tool results left out)"
    c = m.get('content') if isinstance(m, dict) else None
    if isinstance(c, str): return c
    return '\n'.join(p.get('text') or '' for p in c or [] if isinstance(p, dict) and p.get('type') == 'text')

def key_of(m):
    "The last call key a message names, or None"
    ks = KEY.findall(text_of(m))
    return ks[-1] if ks else None

class Brain:
    """The simulator's `default`: it answers round r of the call whose key the request's last keyed user message
    names (r = the assistant messages after it) from `plans[key][r]`, a list of attempts whose last one repeats
    (`[Fault(status=500), Reply(...)]`: an error, then the answer to every retry). It counts the requests per key."""
    def __init__(self): self.plans, self.asked, self.unplanned, self.times, self.lock = {}, Counter(), [], {}, threading.Lock()

    def locate(self, body):
        msgs = body.get('messages') or []
        for i in range(len(msgs)-1, -1, -1):
            if msgs[i].get('role') == 'user' and (k := key_of(msgs[i])):
                return k, sum(m.get('role') == 'assistant' for m in msgs[i+1:])
        return None, 0

    def __call__(self, body):
        key, rnd = self.locate(body)
        with self.lock:
            if key not in self.plans or rnd >= len(self.plans[key]):
                self.unplanned.append((key, rnd))
                return None   # the simulator answers 500 "no scripted reply", marked not to be retried
            i = self.asked[key, rnd]
            self.asked[key, rnd] += 1
            self.times.setdefault(key, []).append(time.monotonic())
        atts = self.plans[key][rnd]
        item = atts[min(i, len(atts)-1)]
        return item if body.get('stream') else shallow(item)

    def total(self, key)->int:
        with self.lock: return sum(v for (k, _), v in self.asked.items() if k == key)

# ---------------------------------------------------------------- plans: what the model answers, and what that means

@dataclass
class Plan:
    "The model's answers to one call (per round, the attempts in order), and the outcome the call must have"
    key: str
    rounds: list                 # per round, the attempts: `Reply`s and `Fault`s; the last one repeats
    msg: object = None           # the user's message (default: '<key> please')
    max_rounds: int = 10         # the call's `max_tool_rounds`
    timeout: float = None        # the call's `timeout=`: a `Fault(delay=...)` longer than this fails
    loose: bool = False          # a cut, malformed or timed-out answer: the call may fail or retry, but if it succeeds it is exact

    def __post_init__(self):
        if self.msg is None: self.msg = f'{self.key} please'

    def good(self, item):
        "The reply an attempt gives, or None if it fails"
        if isinstance(item, Reply): return item
        plain = item.status is None and item.cut_after is None and not item.malformed
        return (item.then or Reply()) if plain and (self.timeout is None or item.delay < self.timeout) else None

    def outcome(self, allowed:int):
        "(succeeds, the most requests it may take, the replies it gets) with `allowed` retries a request"
        replies, most = [], 0
        for i, atts in enumerate(self.rounds):
            j = next((k for k, a in enumerate(atts) if self.good(a)), None)
            if j is None or j > allowed: return False, most + allowed + 1, replies
            replies.append(r := self.good(atts[j]))
            most += j + 1
            if not r.calls or i >= self.max_rounds: return True, most, replies
        raise AssertionError(f'plan {self.key} has no final answer')

    def check(self, ctx, out, stream, num_retries=None):
        "Is the call's outcome `out` the one this plan means?"
        allowed = DEFAULT_RETRIES if num_retries is None else num_retries
        ok, most, replies = self.outcome(allowed)
        asked, kind = ctx.brain.total(self.key), ctx.kind
        if asked > most: ctx.fail(f'{kind}: more requests than num_retries={num_retries} allows', f'{asked} > {most}')
        if out.exc is not None:
            if ok and not self.loose: ctx.fail(f'{kind}: expected success, got {type(out.exc).__name__}', short(out.exc))
            elif not ok and not self.loose and asked != most:
                ctx.fail(f'{kind}: a failing call made {asked} requests, not {most} (num_retries={num_retries})')
            return
        if not ok: return ctx.fail(f'{kind}: expected an error, the call succeeded', f'{asked} requests')
        if (final := out.final) is None: return ctx.fail(f'{kind}: a stream ended without its final response, and no error')
        want = replies[-1].text
        if (text(final) or '') != want: ctx.fail(f'{kind}: wrong final text', f'{text(final)!r} != {want!r}')
        if stream and out.streamed != ''.join(r.text for r in replies):
            ctx.fail(f'{kind}: the streamed text is not the replies\' text', f"{out.streamed!r} != {''.join(r.text for r in replies)!r}")
        if not self.loose and asked != most: ctx.fail(f'{kind}: a succeeding call made {asked} requests, not {most}')

WORDS = 'the quick brown fox jumps over a lazy dog while seven small clouds drift past'.split()

def words_reply(rng, key, think=False, empty=False, delay=0, pace=0)->Reply:
    "A final answer in words (or an empty one), naming its call's key"
    txt = '' if empty else f'answer to {key}: ' + ' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
    return Reply(text=txt, chunks=rng.choice([None, None, 1, 3]), thinking='Let me think.' if think else None,
                 delay=delay, pace=pace)

def good_args(rng, name):
    if name in ('add', 'aadd'): return {'a': rng.randint(-9, 99), 'b': rng.randint(0, 9)}
    if name in ('slow', 'aslow'): return {'s': rng.choice([0.01, 0.05, 0.2, 0.4])}
    if name == 'echo': return {'s': 'hi \ud800' if rng.random() < 0.05 else rng.choice(['hi', 'héllo ✓', 'a "quoted" word'])}
    return {'x': rng.randint(0, 9)}

DEEP = '{"a": ' + '[' * 3000 + ']' * 3000 + ', "b": 1}'

def shallow(item):
    """`item` with arguments nested 3,000 deep made merely not JSON: litellm can't parse a whole (non-streamed)
    response nested that deep (its JSON limit, raised before lisette sees the reply), so only streams carry them"""
    if not isinstance(item, Reply) or not any(c.args == DEEP for c in item.calls): return item
    return dataclasses.replace(item, calls=[dataclasses.replace(c, args='{"a": 1,') if c.args == DEEP else c for c in item.calls])

def random_call(rng, g, i, name=None)->Call:
    "A tool call the model makes: mostly good, sometimes an unknown tool or bad arguments"
    name = name or ('nope' if rng.random() < 0.05 else rng.choice(g.tools))
    args, r = good_args(rng, name), rng.random()
    if r < 0.04: args = '{"a": 1,'                # not JSON
    elif r < 0.07: args = '[1, 2]'                # not an object
    elif r < 0.10: args = {'a': '2', 'b': 3}      # the wrong types (or names)
    elif r < 0.11: args = DEEP                    # nested 3,000 deep
    return Call(name, args, id=f'call_{i}' if g.reuse_ids else None)

def tools_reply(rng, g, key, think=False, slow_first=False)->Reply:
    "A reply that calls 1-3 tools (the first a slow one if `slow_first`)"
    n = rng.choice([1, 1, 2, 3])
    first = rng.choice([t for t in g.tools if 'slow' in t]) if slow_first else None
    calls = [random_call(rng, g, i, first if i == 0 else None) for i in range(n)]
    if slow_first: calls[0].args = {'s': rng.choice([0.1, 0.3])}
    return Reply(text=rng.choice(['', f'tools for {key}']), calls=calls, thinking='Tools first.' if think else None,
                 chunks=rng.choice([None, 2]))

def fault(rng, status)->Fault:
    "An HTTP error; mostly with retry-after headers that ask for short waits"
    h = {'retry-after': '0', 'retry-after-ms': '10'} if status == 429 or rng.random() < 0.8 else None
    return Fault(status=status, headers=h)

PNG = (lambda c: b'\x89PNG\r\n\x1a\n' + c(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))
       + c(b'IDAT', zlib.compress(b'\x00\xff\xff\xff')) + c(b'IEND', b''))(
    lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d)))

def user_msg(rng, key):
    "A user's message naming `key`: a str mostly, sometimes parts with an image, a message dict, or text parts"
    r = rng.random()
    if r < 0.7: return f'{key} ' + rng.choice(['please', 'what now?', 'go on', 'tell me'])
    if r < 0.8: return [f'{key} look at this', PNG]
    if r < 0.9: return {'role': 'user', 'content': f'{key} as a dict'}
    return [{'type': 'text', 'text': f'{key} as parts'}]

def show(rounds)->str:
    "A short description of a plan's rounds"
    def one(a):
        if isinstance(a, Fault):
            what = [f'{a.status}' if a.status else '', f'cut@{a.cut_after}' if a.cut_after is not None else '',
                    f'malformed@{a.malformed}' if a.malformed else '', f'delay {a.delay}' if a.delay else '']
            return 'Fault(' + ' '.join(w for w in what if w) + ')'
        def args(c): return '' if not isinstance(c.args, str) else '(args nested 3000 deep)' if c.args == DEEP else f'(args {c.args})'
        if a.calls and any('\ud800' in str(c.args) for c in a.calls): return 'calls[' + ','.join(c.name + args(c) for c in a.calls) + '] (a lone surrogate in args)'
        if a.calls: return 'calls[' + ','.join(c.name + args(c) for c in a.calls) + ']'
        return 'text' if a.text else 'empty text'
    return ' > '.join('/'.join(one(a) for a in atts) for atts in rounds)

# ---------------------------------------------------------------- making calls (sync in a thread, or awaited)

@dataclass
class Outcome:
    "What one call gave: its items (a stream's), its response, or what it raised, and where"
    items: list = field(default_factory=list)
    res: object = None
    exc: BaseException = None
    at_call: bool = False    # raised by the call itself, before any item was read
    stopped: bool = False    # the reader left the stream on purpose

    @property
    def final(self):
        if self.res is not None: return self.res
        rs = [o for o in self.items if isinstance(o, ModelResponse)]
        return rs[-1] if rs and self.items[-1] is rs[-1] else None

    @property
    def streamed(self)->str: return ''.join(delta_text(o) or '' for o in self.items if isinstance(o, ModelResponseStream))

class Hang(Exception): pass

def _took(out, o, each, stop_after)->bool:
    "Record item `o` of a stream in `out`, show it to `each`: is that where the reader stops?"
    out.items.append(o)
    if each: each(o)
    if stop_after is not None and len(out.items) >= stop_after: out.stopped = True
    return out.stopped

def _sync_call(chat, msg, stream, stop_after, leave, kept, each, kw, out):
    try: r = chat(msg, stream=stream, **kw)
    except Exception as e:
        out.exc, out.at_call = e, True
        return
    if not stream:
        out.res = r
        return
    try:
        for o in r:
            if _took(out, o, each, stop_after): break
    except Exception as e: out.exc = e
    if out.stopped and leave == 'keep': kept.append(r)
    if out.stopped and leave == 'close': r.close()
    del r   # 'del': the generator goes with its last reference

async def _async_call(chat, msg, stream, stop_after, leave, kept, each, kw, out):
    try: r = await chat(msg, stream=stream, **kw)
    except Exception as e:
        out.exc, out.at_call = e, True
        return
    if not stream:
        out.res = r
        return
    try:
        async for o in r:
            if _took(out, o, each, stop_after): break
    except Exception as e: out.exc = e
    if out.stopped and leave == 'keep': kept.append(r)
    if out.stopped and leave == 'close': await r.aclose()
    del r
    if out.stopped and leave == 'del': gc.collect()

def start(ctx, msg, stream=False, stop_after=None, leave='del', each=None, thread=None, **kw):
    """Start a call on the scenario's chat: (its future, its `Outcome`, filled in as it goes). A sync chat's calls
    run in the scenario's one user thread (as a sync program would make them), or in `thread`"""
    out = Outcome()
    args = (ctx.chat, msg, stream, stop_after, leave, ctx.kept, each, kw, out)
    if ctx.is_async: return asyncio.ensure_future(_async_call(*args)), out
    return asyncio.get_running_loop().run_in_executor(thread or ctx.thread, _sync_call, *args), out

async def settle(fut, what):
    "Wait for a call's future, at most `CALL_LIMIT` s"
    done, _ = await asyncio.wait({fut}, timeout=CALL_LIMIT)
    if not done:
        fut.cancel()
        raise Hang(f'{what} did not end within {CALL_LIMIT} s')

async def call(ctx, msg, **kw)->Outcome:
    fut, out = start(ctx, msg, **kw)
    await settle(fut, f'the call with {str(msg)[:40]!r}')
    fut.result()   # a harness error, if any
    return out

async def ask(ctx, plan, stream=False, **kw)->Outcome:
    "Make the call `plan` scripts, and check its outcome"
    ctx.brain.plans[plan.key] = plan.rounds
    out = await call(ctx, plan.msg, stream=stream, **kw)
    plan.check(ctx, out, stream, kw.get('num_retries'))
    return out

def judge_cancel(ctx, plan, fut, out):
    "A call cancelled before it ended must end in `CancelledError`, and send nothing afterwards"
    if fut.cancelled(): ctx.cancelled[plan.key] = time.monotonic()
    elif out.exc is not None: ctx.fail(f'{ctx.kind}: a cancelled call raised {type(out.exc).__name__}, not CancelledError', short(out.exc))
    else: ctx.fail(f'{ctx.kind}: a cancel was lost: the cancelled call went on and returned')

async def read_left_stream(ctx, g):
    "A stream its reader left, read after a later call ran: an error or its end, never more items"
    end = object()
    try:
        if ctx.is_async: o = await asyncio.wait_for(g.__anext__(), 5)
        else: o = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(ctx.thread, next, g, end), 5)
    except (TimeoutError, asyncio.TimeoutError): return ctx.fail('abandon: reading a left stream hung')
    except (StopAsyncIteration, StreamAbandoned, Exception): return
    if o is not end: ctx.fail('abandon: a left stream yielded more after a later call ran', type(o).__name__)

# ---------------------------------------------------------------- the invariants

def empty(c)->bool: return c is None or c == [] or (isinstance(c, str) and not c.strip())

def transcript_problems(hist)->list:
    "(problem, index) for each way `hist` is not a valid transcript"
    out, ids_seen, prev = [], set(), None
    for i, m in enumerate(hist):
        role = m.get('role') if isinstance(m, dict) else None
        if role not in ('user', 'assistant', 'tool'):
            out.append((f'a message with role {role!r}', i))
        elif role == 'user':
            if prev == 'user': out.append(('two user messages in a row', i))
            if empty(m.get('content')): out.append(('an empty user message', i))
        elif role == 'assistant':
            if prev == 'assistant': out.append(('two assistant messages in a row', i))
            calls, c = m.get('tool_calls') or [], m.get('content')
            if c == '': out.append(("an assistant message with content ''", i))
            elif not calls and empty(c): out.append(('an assistant message with no text and no tool calls', i))
            if not encodable([_args(tc) for tc in calls]): out.append(('tool-call arguments that decode to a lone surrogate', i))
            ids = [tc.get('id') for tc in calls]
            for x in ids:
                if x in ids_seen: out.append(('a tool-call id used twice', i))
                ids_seen.add(x)
            answers, j = [], i + 1
            while j < len(hist) and hist[j].get('role') == 'tool':
                answers.append(hist[j].get('tool_call_id'))
                j += 1
            if any(x not in answers for x in ids): out.append(('tool calls with no result after them', i))
            if any(answers.count(x) > 1 for x in ids): out.append(('a tool call answered twice', i))
        else:
            k = i - 1
            while k >= 0 and hist[k].get('role') == 'tool': k -= 1
            owner = hist[k] if k >= 0 else {}
            if m.get('tool_call_id') not in [tc.get('id') for tc in owner.get('tool_calls') or []]:
                out.append(('a tool result answering no call', i))
            if '<coroutine object' in str(m.get('content')): out.append(('a tool result holding an unawaited coroutine', i))
        prev = role
    if not encodable(hist): out.append(('text that cannot be encoded as UTF-8 (a lone surrogate)', None))
    return out + misplaced_answers(hist)

def encodable(o)->bool:
    try: json.dumps(o, ensure_ascii=False, default=str).encode('utf-8')
    except UnicodeEncodeError: return False
    return True

def _args(tc):
    "A stored tool call's arguments, decoded as the provider's request will carry them"
    try: return json.loads((tc.get('function') or {}).get('arguments') or '{}')
    except (ValueError, TypeError, RecursionError): return None

def misplaced_answers(hist)->list:
    "Answers that follow another call's question: calls on one chat interleaved"
    out, current = [], None
    for i, m in enumerate(hist):
        if not isinstance(m, dict): continue
        if m.get('role') == 'user' and (k := key_of(m)): current = k
        elif m.get('role') == 'assistant' and (k := key_of(m)) and k != current:
            out.append((f'an answer to one call after another call\'s question', i))
    return out

def short(e, n=300)->str: return f'{type(e).__name__}: {str(e)[:n]}' if isinstance(e, BaseException) else str(e)[:n]

def norm(s:str)->str:
    "A problem text with ids and numbers blanked, to group like problems"
    s = re.sub(r'\b(?:toolu|call|msg|chatcmpl)[-_][\w-]*\d[\w-]*', '<id>', s)
    return re.sub(r'\d+', 'N', s)[:150]

# ---------------------------------------------------------------- scenarios: a chat, 1-3 random steps, the checks

@dataclass
class Step:
    kind: str
    desc: str
    run: object   # async (ctx) -> None

@dataclass
class Gen:
    "What generating a scenario's steps needs to know"
    n: int
    cls: type
    model: str
    tools: list
    reuse_ids: bool
    first: bool = True      # is the next step the first, on an empty history?
    calls: int = 0
    def key(self)->str:
        self.calls += 1
        return f'Q{self.n}-{self.calls}'
    @property
    def anthropic(self)->bool: return self.model == SONNET
    @property
    def is_async(self)->bool: return self.cls is AsyncChat

@dataclass
class Ctx:
    "A running scenario"
    n: int
    cls: type
    model: str
    sim: Sim
    brain: Brain
    chat: object = None
    step: Step = None
    fails: list = field(default_factory=list)
    kept: list = field(default_factory=list)        # streams left but still referenced
    cancelled: dict = field(default_factory=dict)   # key -> when its cancel ended
    quiet_spans: list = field(default_factory=list) # request index ranges of bad-input steps
    thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, 'user'))   # a sync chat's caller
    other: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, 'other'))   # another thread
    @property
    def is_async(self)->bool: return self.cls is AsyncChat
    @property
    def kind(self)->str: return self.step.kind if self.step else 'scenario'
    def fail(self, category, detail=''): self.fails.append((category, detail, self.step.desc if self.step else ''))

# ---- one function per kind of step

def step_plain(rng, g):
    key, stream = g.key(), rng.random() < 0.5
    think, empty_reply = g.anthropic and rng.random() < 0.2, rng.random() < 0.15
    plan = Plan(key, [[words_reply(rng, key, think, empty_reply)]], msg=user_msg(rng, key))
    kw = {'think': 'l'} if think else {}
    async def run(ctx): await ask(ctx, plan, stream, **kw)
    return Step('plain', f'plain call: {show(plan.rounds)}, stream={stream}, {kw}', run)

def step_tools(rng, g):
    key, stream, think = g.key(), rng.random() < 0.5, g.anthropic and rng.random() < 0.2
    rounds = [[tools_reply(rng, g, key, think)] for _ in range(rng.choice([1, 1, 2, 3, 4]))]
    rounds.append([words_reply(rng, key, think, empty=rng.random() < 0.1)])
    kw = {}
    if rng.random() < 0.5: kw['max_tool_rounds'] = rng.choice([1, 2, 3])
    if rng.random() < 0.3: kw['final_prompt'] = 'Now answer in words.'
    if rng.random() < 0.3: kw['tool_timeout'] = rng.choice([0.1, 0.3, 2])
    if think: kw['think'] = 'l'
    plan = Plan(key, rounds, msg=user_msg(rng, key), max_rounds=kw.get('max_tool_rounds', 10))
    async def run(ctx): await ask(ctx, plan, stream, **kw)
    return Step('tools', f'tool loop: {show(rounds)}, stream={stream}, {kw}', run)

def step_think_after_limit(rng, g):
    "Anthropic: a tool loop that ends on `max_tool_rounds` with the model still calling tools, then a call with `think`"
    key, key2, stream, s2, m = g.key(), g.key(), rng.random() < 0.5, rng.random() < 0.5, rng.choice([1, 2])
    rounds = [[tools_reply(rng, g, key)] for _ in range(m + 1)]
    plan, plan2 = Plan(key, rounds, max_rounds=m), Plan(key2, [[words_reply(rng, key2, think=True)]])
    async def run(ctx):
        await ask(ctx, plan, stream, max_tool_rounds=m)
        await ask(ctx, plan2, s2, think='l')
    return Step('think', f'tool rounds used up ({show(rounds)}, max_tool_rounds={m}, stream={stream}), then a call with think=l (stream={s2})', run)

def step_fault(rng, g):
    key, stream = g.key(), rng.random() < 0.5
    status, persistent, nr = rng.choice([429, 500, 529]), rng.random() < 0.4, rng.choice([None, None, 0, 1, 2])
    rounds = [[tools_reply(rng, g, key)] for _ in range(rng.choice([0, 0, 1]))]
    faults = [fault(rng, status) for _ in range(rng.choice([1, 1, 2]))]
    rounds.append(faults[:1] if persistent else faults + [words_reply(rng, key)])
    plan = Plan(key, rounds, msg=user_msg(rng, key))
    kw = {} if nr is None else {'num_retries': nr}
    async def run(ctx): await ask(ctx, plan, stream, **kw)
    return Step('fault', f"{'persistent' if persistent else 'transient'} {status}: {show(rounds)}, stream={stream}, {kw}", run)

def step_cut(rng, g):
    key, stream = g.key(), rng.random() < 0.7
    reply = words_reply(rng, key)
    reply.chunks = None   # one event a word: a cut after a few events falls inside the text
    if stream: f = Fault(cut_after=rng.randint(0, 5), then=reply, status=529 if rng.random() < 0.3 else None)
    else: f = Fault(cut_after=rng.choice([0, 10, 60, 120]), then=reply)
    rounds = [[tools_reply(rng, g, key)] for _ in range(rng.choice([0, 0, 1]))] + [[f, reply]]
    plan, nr = Plan(key, rounds, msg=user_msg(rng, key), loose=True), rng.choice([None, 0, 1])
    kw = {} if nr is None else {'num_retries': nr}
    async def run(ctx): await ask(ctx, plan, stream, **kw)
    return Step('cut', f'connection cut: {show(rounds)}, stream={stream}, {kw}', run)

def step_malformed(rng, g):
    key, stream = g.key(), rng.random() < 0.7
    reply = words_reply(rng, key)
    f = Fault(malformed=rng.choice([True, 2, 3, 4]), then=reply)
    rounds = [[tools_reply(rng, g, key)] for _ in range(rng.choice([0, 0, 1]))] + [[f, reply]]
    plan = Plan(key, rounds, msg=user_msg(rng, key), loose=True)
    async def run(ctx): await ask(ctx, plan, stream)
    return Step('malformed', f'malformed answer: {show(rounds)}, stream={stream}', run)

def step_timeout(rng, g):
    key, stream, late = g.key(), rng.random() < 0.5, rng.random() < 0.7
    t, d = (0.15, 0.6) if late else (1.0, 0.05)
    reply = words_reply(rng, key)
    rounds = [[tools_reply(rng, g, key)] for _ in range(rng.choice([0, 0, 1]))]
    rounds.append([Fault(delay=d, then=reply)] * 3 + [reply])
    plan, nr = Plan(key, rounds, msg=user_msg(rng, key), timeout=t, loose=late), rng.choice([None, 0, 1, 2])
    kw = {'timeout': t} | ({} if nr is None else {'num_retries': nr})
    async def run(ctx): await ask(ctx, plan, stream, **kw)
    return Step('timeout', f'slow provider: {show(rounds)}, stream={stream}, {kw}', run)

def step_cancel(rng, g):
    "AsyncChat: the call's task is cancelled at a random moment (in a request, a slow tool, a paced stream)"
    key, stream, at = g.key(), rng.random() < 0.5, round(rng.uniform(0, 0.6), 3)
    rounds = [[tools_reply(rng, g, key, slow_first=True)] for _ in range(rng.choice([0, 1, 1, 2]))]
    rounds.append([words_reply(rng, key, delay=rng.choice([0, 0.1, 0.3]), pace=rng.choice([0, 0.01]))])
    plan = Plan(key, rounds, msg=user_msg(rng, key))
    async def run(ctx):
        ctx.brain.plans[key] = rounds
        fut, out = start(ctx, plan.msg, stream=stream)
        await asyncio.sleep(at)
        requested = fut.cancel()
        await settle(fut, f'the cancelled call {key}')
        if requested: judge_cancel(ctx, plan, fut, out)
        else: plan.check(ctx, out, stream)
    return Step('cancel', f'cancelled after {at} s: {show(rounds)}, stream={stream}', run)

def step_abandon(rng, g):
    "A stream left after k items (kept, dropped or closed), then another call"
    key, key2, s2 = g.key(), g.key(), rng.random() < 0.5
    rounds = [[tools_reply(rng, g, key)] for _ in range(rng.choice([0, 0, 1, 2]))]
    rounds.append([Reply(text=words_reply(rng, key).text, chunks=8, pace=rng.choice([0, 0.005]))])
    plan, plan2 = Plan(key, rounds, msg=user_msg(rng, key)), Plan(key2, [[words_reply(rng, key2)]])
    k, leave = rng.randint(1, 8), rng.choice(['keep', 'del', 'close'])
    async def run(ctx):
        ctx.brain.plans[key] = rounds
        out = await call(ctx, plan.msg, stream=True, stop_after=k, leave=leave)
        if not out.stopped: plan.check(ctx, out, True)
        await ask(ctx, plan2, s2)
        if out.stopped and leave == 'keep': await read_left_stream(ctx, ctx.kept[-1])
    return Step('abandon', f'stream left after {k} items ({leave}): {show(rounds)}; then a call (stream={s2})', run)

def step_concurrent(rng, g):
    "AsyncChat: 2-4 calls at once (plain, tools, a transient fault, a failing one), one of them maybe cancelled"
    specs = []
    for _ in range(rng.randint(2, 4)):
        key, stream, what = g.key(), rng.random() < 0.5, rng.choice(['plain', 'tools', 'transient', 'failing'])
        kw = {}
        if what == 'tools': rounds = [[tools_reply(rng, g, key)] for _ in range(rng.randint(1, 2))] + [[words_reply(rng, key)]]
        elif what == 'transient': rounds = [[fault(rng, rng.choice([429, 500, 529])), words_reply(rng, key)]]
        elif what == 'failing': rounds, kw = [[fault(rng, 500)]], {'num_retries': 0}
        else: rounds = [[words_reply(rng, key)]]
        specs.append((Plan(key, rounds, msg=user_msg(rng, key)), stream, kw, what))
    cancel = (rng.randrange(len(specs)), round(rng.uniform(0, 0.4), 3)) if rng.random() < 0.3 else None
    async def run(ctx):
        started = []
        for plan, stream, kw, _ in specs:
            ctx.brain.plans[plan.key] = plan.rounds
            started.append(start(ctx, plan.msg, stream=stream, **kw))
        requested = False
        if cancel:
            await asyncio.sleep(cancel[1])
            requested = started[cancel[0]][0].cancel()
        for (fut, _), (plan, *_) in zip(started, specs): await settle(fut, f'the call {plan.key}')
        for i, ((fut, out), (plan, stream, kw, _)) in enumerate(zip(started, specs)):
            if cancel and i == cancel[0] and requested: judge_cancel(ctx, plan, fut, out)
            else: plan.check(ctx, out, stream, kw.get('num_retries'))
    desc = '; '.join(f'{p.key} {w} stream={s}' for p, s, _, w in specs)
    return Step('concurrent', f'{len(specs)} calls at once: {desc}' + (f'; call {cancel[0]+1} cancelled after {cancel[1]} s' if cancel else ''), run)

def step_threads(rng, g):
    "Chat: a slow stream reader in one thread while another thread calls the chat"
    ka, kb, sb = g.key(), g.key(), rng.random() < 0.5
    pa = Plan(ka, [[Reply(text=words_reply(rng, ka).text + ' and then some more words', chunks=10, pace=0.02)]])
    pb = Plan(kb, [[words_reply(rng, kb)]])
    async def run(ctx):
        ctx.brain.plans |= {ka: pa.rounds, kb: pb.rounds}
        first = threading.Event()
        def each(o):
            first.set()
            time.sleep(0.01)
        fa, oa = start(ctx, pa.msg, stream=True, each=each)
        await asyncio.to_thread(first.wait, 5)
        fb, ob = start(ctx, pb.msg, stream=sb, thread=ctx.other)
        await settle(fa, 'the slow reader'); await settle(fb, 'the other thread')
        if oa.exc is None and oa.final is None: ctx.fail('threads: a sync stream was cut short silently by a call from another thread')
        elif oa.exc is None: pa.check(ctx, oa, True)
        if ob.exc is not None and not isinstance(ob.exc, RuntimeError):
            ctx.fail(f'threads: the second thread\'s call raised {type(ob.exc).__name__}', short(ob.exc))
        elif ob.exc is None: pb.check(ctx, ob, sb)
    return Step('threads', f'a slow stream in one thread, a call (stream={sb}) from another', run)

# bad input: (label, message, when); when: None (any time), 'first' (an Anthropic chat's first message),
# 'after-answer' (right after an answer)
BAD_MESSAGES = [
    ('an empty str', '', None), ('whitespace', ' \n\t', None), ('an int', 123, None), ('a float', 2.5, None),
    ('an object()', object(), None), ('an empty list', [], None), ('a list with an int', ['hi', 5], None),
    ('a list with an empty str', ['hi', ''], None), ('a tool message with no call id', {'role': 'tool', 'content': 'hi'}, None),
    ('a tool message answering no call', {'role': 'tool', 'tool_call_id': 'call_nope', 'name': 'add', 'content': '3'}, None),
    ('an assistant dict with unanswered tool_calls', {'role': 'assistant', 'content': None, 'tool_calls': [
        {'id': 'call_x', 'type': 'function', 'function': {'name': 'add', 'arguments': '{"a": 1, "b": 2}'}}]}, None),
    ("a part {'type': 'bogus'}", [{'type': 'bogus'}], None), ('an image_url part with no url', [{'type': 'image_url'}], None),
    ('an image_url part with an empty image_url', [{'type': 'image_url', 'image_url': {}}], None),
    ('a text part with no text', [{'type': 'text'}], None), ('a text part with empty text', [{'type': 'text', 'text': ''}], None),
    ('a user dict with empty content', {'role': 'user', 'content': ''}, None), ('a user dict with no content', {'role': 'user'}, None),
    ('a dict with an unknown role', {'role': 'robot', 'content': 'hi'}, None), ('a dict with no role or type', {'content': 'hi'}, None),
    ('a lone surrogate', 'hi \ud800', None), ('a lone surrogate in a list', ['ok', 'x \udfff'], None),
    ('a lone surrogate in a user dict', {'role': 'user', 'content': 'a \ud800'}, None),
    ('a lone surrogate in a text part', [{'type': 'text', 'text': 'a \ud800'}], None),
    ('bytes that are not an image or PDF', b'not an image at all', None),
    ('an assistant dict as the first message (Anthropic)', {'role': 'assistant', 'content': 'Hello.'}, 'first'),
    ('an assistant dict right after an answer', {'role': 'assistant', 'content': 'More.'}, 'after-answer'),
]
BAD_OPTIONS = [  # (label, per-call kwargs, Anthropic only)
    ('final_prompt=123', {'final_prompt': 123}, False), ("final_prompt='   '", {'final_prompt': '   '}, False),
    ("tool_timeout='5'", {'tool_timeout': '5'}, False), ('tool_timeout=-1', {'tool_timeout': -1}, False),
    ('max_tool_rounds=0', {'max_tool_rounds': 0}, False), ("max_tool_rounds='3'", {'max_tool_rounds': '3'}, False),
    ('max_tool_rounds=1.5', {'max_tool_rounds': 1.5}, False), ('temp=7', {'temp': 7}, False),
    ("temp='warm'", {'temp': 'warm'}, False), ('prefill=123', {'prefill': 123}, False),
    ("think='x'", {'think': 'x'}, True), ("search='x'", {'search': 'x'}, False), ("model='x' as a kwarg", {'model': 'x'}, False),
]

def step_bad(rng, g):
    "Bad input: it must raise ValueError or TypeError at the call, send nothing, and leave the history as it was"
    stream = rng.random() < 0.5
    if rng.random() < 0.6:
        ok = [b for b in BAD_MESSAGES if b[2] is None or b[2] == 'after-answer'
              or (b[2] == 'first' and g.first and g.anthropic)]
        label, msg, when = rng.choice(ok)
        kw = {}
    else:
        label, kw, _ = rng.choice([b for b in BAD_OPTIONS if g.anthropic or not b[2]])
        key, when = g.key(), None
        msg = f'{key} with a bad option'
        rounds = [[tools_reply(rng, g, key)], [words_reply(rng, key)]]
    before = None
    if when == 'after-answer':
        k = g.key()
        before = Plan(k, [[words_reply(rng, k)]])
    async def run(ctx):
        if before and (await ask(ctx, before)).exc is not None: return
        if kw: ctx.brain.plans[key] = rounds
        h, n0 = copy.deepcopy(ctx.chat.hist), len(ctx.sim.requests)
        out = await call(ctx, msg, stream=stream, **kw)
        sent, changed, e = len(ctx.sim.requests) - n0, ctx.chat.hist != h, out.exc
        what = f'{short(e) if e else "no error"}; {sent} requests sent; history {"changed" if changed else "unchanged"}'
        if not isinstance(e, (ValueError, TypeError)): ctx.fail(f'bad input not refused: {label}', what)
        elif not out.at_call: ctx.fail(f'bad input refused only when the stream was read: {label}', what)
        elif sent or changed: ctx.fail(f'bad input refused, but after sending or changing the history: {label}', what)
    return Step('bad', f'bad input: {label}, stream={stream}' + (' (after an answer)' if before else ''), run)

BAD_CONSTRUCTORS = [  # (label, Chat kwargs, Anthropic only)
    ("sp='   '", {'sp': '   '}, True), ('sp=123', {'sp': 123}, False), ('temp=9', {'temp': 9}, False),
    ('a lambda as a tool', {'tools': [lambda x: x]}, False), ("a str as a tool", {'tools': ['add']}, False),
    ('tool_timeout=-1', {'tool_timeout': -1}, False), ("tool_timeout='5'", {'tool_timeout': '5'}, False),
    ('hist with a tool message answering no call', {'hist': [{'role': 'tool', 'content': 'x'}]}, False),
    ('hist with a lone surrogate', {'hist': ['hi \ud800']}, False),
    ("hist with a part {'type': 'bogus'}", {'hist': [[{'type': 'bogus'}]]}, False),
    ('hist with two user messages in a row', {'hist': [{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'}]}, False),
]

def step_constructor(rng, g):
    "A bad constructor argument: ValueError or TypeError"
    label, kw, _ = rng.choice([b for b in BAD_CONSTRUCTORS if g.anthropic or not b[2]])
    async def run(ctx):
        try: ctx.cls(ctx.model, api_base=base(ctx.sim, ctx.model), api_key='sk-test', **kw)
        except (ValueError, TypeError): return
        except Exception as e: return ctx.fail(f'bad constructor argument raised {type(e).__name__}: {label}', short(e))
        ctx.fail(f'bad constructor argument accepted: {label}')
    return Step('constructor', f'bad constructor argument: {label}', run)

STEPS = [  # (make, weight, for which class: None both, or the one)
    (step_plain, 1, None), (step_tools, 2, None), (step_fault, 2, None), (step_cut, 1, None), (step_malformed, 1, None),
    (step_timeout, 1, None), (step_abandon, 2, None), (step_bad, 3, None), (step_constructor, 0.5, None),
    (step_think_after_limit, 0.5, 'anthropic'), (step_cancel, 2, AsyncChat), (step_concurrent, 2, AsyncChat), (step_threads, 1, Chat),
]

@dataclass
class Scenario:
    n: int
    cls: type
    model: str
    chat_kw: dict
    steps: list
    def __str__(self):
        kw = {k: v for k, v in self.chat_kw.items() if k != 'tools'}
        head = f"{self.cls.__name__}({'anthropic' if self.model == SONNET else 'openai'}, tools={[f.__name__ for f in self.chat_kw['tools']]}, {kw})"
        return head + ''.join(f'\n      {i+1}. {s.desc}' for i, s in enumerate(self.steps))

def scenario(seed:int, n:int)->Scenario:
    "Scenario `n` of `seed`: made from those two numbers alone"
    rng = random.Random(f'{seed}-{n}')
    cls, model = rng.choice([Chat, AsyncChat]), rng.choice([SONNET, GPT])
    tools = SYNC_TOOLS + (ASYNC_TOOLS if cls is AsyncChat or rng.random() < 0.3 else [])
    g = Gen(n, cls, model, tools, reuse_ids=rng.random() < 0.15)
    chat_kw = {'tools': [TOOLS[t] for t in tools], 'sp': rng.choice(['', '', 'Be brief.'])}
    if rng.random() < 0.2:
        k = g.key()
        chat_kw['hist'] = [f'{k} hello', f'answer to {k}: hi']
        g.first = False
    if rng.random() < 0.2: chat_kw['tool_timeout'] = rng.choice([0.2, 1])
    makers = [(f, w) for f, w, c in STEPS if c in (None, cls) or (c == 'anthropic' and model == SONNET)]
    steps = []
    for _ in range(rng.choice([1, 2, 2, 3])):
        steps.append(rng.choices([f for f, _ in makers], [w for _, w in makers])[0](rng, g))
        g.first = False
    return Scenario(n, cls, model, chat_kw, steps)

async def final_call(ctx):
    "One more plain call succeeds, with one request that passes the strict check, and its answer ends the history"
    ctx.step = Step('final', 'one more plain call', None)
    ctx.brain.plans['one more'] = [[Reply(text='answer to one more')]]
    n0 = len(ctx.sim.requests)
    out = await call(ctx, 'one more', num_retries=0)
    # (a request a cancelled call had sent just before its cancel may reach the simulator only now: not this call's)
    reqs = [r for r in ctx.sim.requests[n0:] if ctx.brain.locate(r.body or {})[0] == 'one more']
    for r in reqs:
        if r.rejected: ctx.fail('final call: request rejected by the strict check: ' + norm(r.problems[0]), r.problems[0][:300])
        elif r.status != 200: ctx.fail(f'final call: answered with status {r.status}')
        elif check(ctx.model)(r.body): ctx.fail('final call: request fails the strict check')
    if len(reqs) != 1: ctx.fail(f'final call: {len(reqs)} requests, not 1')
    if out.exc is not None: return ctx.fail(f'final call raised {type(out.exc).__name__}', short(out.exc))
    if text(out.res) != 'answer to one more': ctx.fail('final call: wrong answer', repr(text(out.res)))
    h = ctx.chat.hist
    if h[-1:] != [{'role': 'assistant', 'content': 'answer to one more'}] or h[-2].get('role') != 'user' or 'one more' not in text_of(h[-2]):
        ctx.fail("final call: the history doesn't end with 'one more' and its answer", repr(h[-2:])[:300])

def check_scenario(ctx, when):
    "The invariants of the history and of the requests sent so far"
    seen = {c for c, _, _ in ctx.fails}
    for p, i in transcript_problems(ctx.chat.hist):
        if f'transcript: {p}' not in seen:
            ctx.fail(f'transcript: {p}', f'{when}, at message {i}: {json.dumps(ctx.chat.hist[i] if i is not None else None, default=str)[:300]}')
            seen.add(f'transcript: {p}')
    quiet = lambda j: any(a <= j < b for a, b in ctx.quiet_spans)
    for j, r in enumerate(ctx.sim.requests):
        if r.rejected and not quiet(j) and (c := 'a request rejected by the strict check: ' + norm(r.problems[0])) not in seen:
            ctx.fail(c, r.problems[0][:300])
            seen.add(c)
    for key, t in ctx.cancelled.items():   # (a request already on its way when the cancel came may arrive a little later)
        late = [round(x - t, 2) for x in ctx.brain.times.get(key, []) if x > t + 0.5]
        if late and (c := 'cancel: a cancelled call sent a request afterwards') not in seen:
            ctx.fail(c, f'{key}: requests {late} s after its cancel ended')
            seen.add(c)
    if ctx.brain.unplanned and 'a request the scenario did not plan' not in seen and not ctx.quiet_spans:
        ctx.fail('a request the scenario did not plan', repr(ctx.brain.unplanned[:3]))

async def run_scenario(sc:Scenario)->list:
    "Run a scenario; its failures, as (category, detail, step)"
    sim, brain = Sim(), Brain()
    sim.default = brain
    ctx = Ctx(sc.n, sc.cls, sc.model, sim, brain)
    try:
        ctx.chat = sc.cls(sc.model, api_base=base(sim, sc.model), api_key='sk-test', **copy.deepcopy(sc.chat_kw))
        ctx.chat.abandon_after = 0.2   # how long a stream left unread by a live reader holds up the next call
        for step in sc.steps:
            ctx.step, n0 = step, len(sim.requests)
            await step.run(ctx)
            if step.kind == 'bad': ctx.quiet_spans.append((n0, len(sim.requests)))
        ctx.step = None
        check_scenario(ctx, 'before the final call')
        await final_call(ctx)
        ctx.step = None
        check_scenario(ctx, 'after the final call')
    except Hang as e: ctx.fail('hang: a call never ended', str(e))
    except Exception: ctx.fail('harness error (a bug in this test)', traceback.format_exc()[-1500:])
    finally:
        if os.environ.get('LISETTE_RANDOM_ONLY') and ctx.chat is not None:   # one scenario: show its history and requests
            print('history:', *[json.dumps(m, default=str)[:500] for m in ctx.chat.hist], sep='\n  ')
            print('requests (status, problems, last message):', *[(r.status, r.problems[:1], json.dumps((r.body or {}).get(
                'messages', [None])[-1], default=str)[:200]) for r in sim.requests], sep='\n  ')
        ctx.kept.clear()
        for t in (ctx.thread, ctx.other): t.shutdown(wait=False, cancel_futures=True)
        sim.close()
    return ctx.fails

async def test_random_scenarios():
    "Random scenarios for the time budget; after each, a valid transcript, and one more call that works"
    seed, only, budget = settings()
    print(f'\nLISETTE_RANDOM_SEED={seed} (budget {budget:.0f} s)', flush=True)
    t0, fails, ran = time.monotonic(), [], 0
    for n in [only] if only is not None else itertools.count(1):
        if only is None and time.monotonic() - t0 > budget: break
        sc, ran = scenario(seed, n), ran + 1
        task = asyncio.ensure_future(run_scenario(sc))
        done, _ = await asyncio.wait({task}, timeout=SCENARIO_LIMIT)
        if not done:
            task.cancel()
            got = [('hang: a scenario never ended', f'{SCENARIO_LIMIT} s', '')]
        else: got = task.result()
        print(f"#{n} {'FAIL' if got else 'ok'} {sc}", flush=True)
        fails += [(n, sc, *f) for f in got]
    el = time.monotonic() - t0
    if not fails: return print(f'{ran} scenarios in {el:.0f} s, all passed')
    groups = {}
    for f in fails: groups.setdefault(f[2], []).append(f)
    lines = [f'seed {seed}: {len({f[0] for f in fails})} of {ran} scenarios failed ({el:.0f} s); '
             f'{len(groups)} kinds of failure. Reproduce one: LISETTE_RANDOM_SEED={seed} LISETTE_RANDOM_ONLY=<n> pytest -q -s tests/test_random.py']
    for cat, fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ns = sorted({f[0] for f in fs})
        lines.append(f'\n{len(fs)} x {cat}   (scenarios {", ".join(map(str, ns[:12]))}{" ..." if len(ns) > 12 else ""})')
        for n_, sc, _, detail, step in fs[:2]:
            lines.append(f'    scenario {n_} (LISETTE_RANDOM_SEED={seed} LISETTE_RANDOM_ONLY={n_}), at: {step}')
            if detail: lines.append(f'      {detail}'.replace('\n', '\n      '))
            lines.append(f'      {sc}')
    raise AssertionError('\n'.join(lines))
