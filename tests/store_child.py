"""The child side of `test_store.py`'s kill test, and the simulated model both sides talk to.

A child runs one scripted scenario on a chat with `store=` against a `Sim` in the parent; the parent kills it
at a random moment. The child appends to two files as it goes (plain appends: the page cache outlives a
SIGKILL): `marks`, the step it is at, and `ran`, each tool run as it starts and as it ends. The module is
preloaded by the forkserver, so each child starts with lisette (and litellm) imported."""
import asyncio, json, os, time
from lisette import Chat, AsyncChat
from lisette.store import INTERRUPTED
from lisette.testing import Reply, Call

QUESTIONS = ('Q1: say hello', 'Q2: what are 1+2, 3+4 and 5*6?')
CALLS = [('add', 1, 2), ('slow_add', 3, 4), ('slow_mul', 5, 6)]   # the tool round Q2 asks for
VALUE = {'add': lambda a, b: a + b, 'slow_add': lambda a, b: a + b, 'slow_mul': lambda a, b: a * b}

def append(path, line:str):
    with open(path, 'a') as f: f.write(line + '\n')

def tools(ran:str, who:str, slow:dict=None)->list:
    "The three tools, each appending '<who> start|done <name> <a> <b>' to the file `ran`; `slow`: seconds by name"
    slow = slow or {}
    def run(name, a, b):
        append(ran, f'{who} start {name} {a} {b}')
        if slow.get(name): time.sleep(slow[name])
        r = VALUE[name](a, b)
        append(ran, f'{who} done {name} {a} {b}')
        return r
    def add(a:int, # the first number
            b:int  # the second number
           )->int:
        "Add two numbers"
        return run('add', a, b)
    def slow_add(a:int, # the first number
                 b:int  # the second number
                )->int:
        "Add two numbers, slowly"
        return run('slow_add', a, b)
    def slow_mul(a:int, # the first number
                 b:int  # the second number
                )->int:
        "Multiply two numbers, slowly"
        return run('slow_mul', a, b)
    return [add, slow_add, slow_mul]

# The simulated model: its answer is a function of the request alone, so no script is shared between runs

def _parse(body)->list:
    "The request's messages as (role, texts, calls {id: (name, args)}, results {id: text}), either wire format"
    out = []
    for m in body['messages']:
        c, texts, calls, results = m.get('content'), [], {}, {}
        if isinstance(c, str) and m['role'] != 'tool': texts.append(c)
        for p in c if isinstance(c, list) else []:
            if p.get('type') == 'text': texts.append(p['text'])
            elif p.get('type') == 'tool_use': calls[p['id']] = (p['name'], p['input'])
            elif p.get('type') == 'tool_result':
                cc = p.get('content')
                results[p['tool_use_id']] = cc if isinstance(cc, str) else ''.join(q.get('text', '') for q in cc or [])
        for tc in m.get('tool_calls') or []: calls[tc['id']] = (tc['function']['name'], json.loads(tc['function']['arguments']))
        role = m['role']
        if role == 'tool': results[m['tool_call_id']] = c if isinstance(c, str) else ''.join(q.get('text', '') for q in c)
        out.append((role, texts, calls, results))
    return out

def brain(pace:float=0.0, chunks:int=6):
    "The model: the tool round for Q2, the interrupted calls again after an interrupted round, else words"
    def answer(body):
        msgs = _parse(body)
        calls = {k: v for m in msgs for k, v in m[2].items()}
        role, texts, _, _ = msgs[-1]
        results, k = {}, len(msgs)
        while k and msgs[k-1][3] and not msgs[k-1][1]: k -= 1; results = msgs[k][3] | results   # the results it ends with
        if results:
            again = [Call(*calls[i]) for i, t in results.items() if INTERRUPTED in t]
            if again: return Reply(calls=again)
            return Reply(text='The results are ' + ', '.join(results.values()) + '.', chunks=chunks, pace=pace, delay=pace*chunks if not body.get('stream') else 0)
        if role == 'user' and any(QUESTIONS[1] in t for t in texts):
            return Reply(calls=[Call(n, {'a': a, 'b': b}) for n, a, b in CALLS], pace=pace/2)
        return Reply(text='Hello there, here is a short answer for you.', chunks=chunks, pace=pace, delay=pace*chunks if not body.get('stream') else 0)
    return answer

# The child

def big_hist(n:int, size:int)->list:
    "`n` messages, alternating user and assistant, of about `size` characters each (a long chat, slow to write)"
    return [('question ' if i % 2 == 0 else 'answer ') + ''.join(chr(0x61 + (i*7 + k) % 26) for k in range(size)) for i in range(n)]

def child(cfg:dict):
    "Run the scenario of `cfg` (the parent kills this process somewhere in it)"
    marks = cfg['marks']
    def mark(s): append(marks, f'{time.monotonic():.6f} {s}')
    import sys, threading
    mark(f"begin warm={'store_server' in sys.modules} threads={threading.active_count()} main={getattr(sys.modules['__main__'], '__file__', None)}")
    cls = AsyncChat if cfg['cls'] == 'AsyncChat' else Chat
    chat = cls(cfg['model'], tools=tools(cfg['ran'], 'child', cfg['slow']), api_base=cfg['base'], api_key='sk-test',
               store=cfg['store'], hist=big_hist(cfg['hist'], cfg['size']) if cfg['hist'] else None)
    mark('made')
    async def acall():
        for k, q in enumerate(QUESTIONS, 1):
            mark(f'ask Q{k}')
            if cfg['stream']:
                async for _ in await chat(q, stream=True): pass
            else: await chat(q)
            mark(f'answered Q{k}')
    if cls is AsyncChat: asyncio.run(acall())
    else:
        for k, q in enumerate(QUESTIONS, 1):
            mark(f'ask Q{k}')
            if cfg['stream']:
                for _ in chat(q, stream=True): pass
            else: chat(q)
            mark(f'answered Q{k}')
    mark('end')

def warm():
    """Make the first calls of each kind once, against a simulator of its own, so that the children forked later
    start with litellm's lazy work done (imports, clients); then leave nothing running that a fork would copy
    half-way: the simulator closed, litellm's cached clients dropped, its logging threads ended (the pool is
    left empty, to start threads afresh in each child). Raises if any thread is left"""
    import gc, litellm, threading
    from litellm.litellm_core_utils.thread_pool_executor import executor
    from lisette.testing import Sim
    sim = Sim(default=brain(0))
    async def both(c):
        await c(QUESTIONS[0])
        async for _ in await c(QUESTIONS[0], stream=True): pass
    try:
        for model, base in (('anthropic/claude-sonnet-4-5', sim.anthropic_base), ('openai/gpt-4o', sim.openai_base)):
            c = Chat(model, api_base=base, api_key='sk-test')
            c(QUESTIONS[0]); list(c(QUESTIONS[0], stream=True))
            asyncio.run(both(AsyncChat(model, api_base=base, api_key='sk-test')))
    finally: sim.close()
    litellm.in_memory_llm_clients_cache.flush_cache()
    executor.shutdown(wait=True)
    import queue
    executor._work_queue, executor._threads, executor._idle_semaphore = queue.SimpleQueue(), set(), threading.Semaphore(0)
    executor._shutdown = False
    gc.collect()
    for t in threading.enumerate():
        if t is not threading.main_thread(): t.join(5)
    if left := [t.name for t in threading.enumerate() if t is not threading.main_thread()]:
        raise RuntimeError(f'threads left running after the warm-up: {left}')
