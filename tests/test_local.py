"""End to end against the real local model (llama.cpp + SmolLM2-135M on loopback): answers, streams, a tool round,
and that no server process outlives its context, its test, or a `python -m lisette` that was interrupted."""
import asyncio, json, os, select, signal, subprocess, sys, time, uuid
from pathlib import Path
import pytest

os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')
from lisette.local import INSTALL_LLAMA, LocalModelError, check_server_installed, local_model, smollm2_path

# No skip: the README's test command installs the local model, so a missing install is a failure here.
check_server_installed(); smollm2_path()

from lisette import AsyncChat
from litellm import ModelResponse, ModelResponseStream
import litellm

ROOT = Path(__file__).resolve().parent.parent
ADD = {'type': 'function', 'function': {'name': 'add', 'description': 'Add two integers', 'parameters': {
    'type': 'object', 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'integer'}}, 'required': ['a', 'b']}}}

def alive(pid:int)->bool:
    "Is `pid` a live process (not gone, not a zombie)? Read from /proc, no psutil."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError): return False

def gone(pid:int, within:float=30.0)->bool:
    "Has `pid` exited, within `within` s (a guard against a hang, generous for a loaded machine)?"
    end = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > end: return False
        time.sleep(0.05)
    return True

def marked(mark:str)->list:
    "Pids of the processes whose environment holds `LISETTE_TEST_MARK=mark` (a child's servers inherit it)"
    res, needle = [], f'LISETTE_TEST_MARK={mark}'.encode()
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            if needle in (d/'environ').read_bytes().split(b'\0') and alive(int(d.name)): res.append(int(d.name))
        except OSError: pass
    return res

@pytest.fixture(scope='module')
def lm():
    "One server for the tests of answers"
    with local_model() as m: yield m

def ask(lm, text, **kw):
    return litellm.completion(**lm.kw(), messages=[{'role': 'user', 'content': text}], temperature=0, **kw)

# --- answers --------------------------------------------------------------------------------------------------------

def test_plain_answer(lm):
    res = ask(lm, 'What is the capital of France?', max_tokens=40)
    assert 'Paris' in res.choices[0].message.content
    assert res.choices[0].finish_reason == 'stop' and res.usage.completion_tokens > 0

def test_streamed_answer(lm):
    chunks = list(ask(lm, 'Tell me about the sea.', max_tokens=40, stream=True, stream_options={'include_usage': True}))
    text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
    assert len(chunks) > 10 and len(text) > 40
    full = litellm.stream_chunk_builder(chunks)
    assert full.choices[0].message.content == text and full.usage.completion_tokens == 40

def test_tool_call_not_streamed_and_streamed(lm):
    res = ask(lm, "What's 15 + 23?", tools=[ADD])
    tc = res.choices[0].message.tool_calls[0]
    assert (tc.function.name, json.loads(tc.function.arguments)) == ('add', {'a': 15, 'b': 23})
    full = litellm.stream_chunk_builder(list(ask(lm, "What's 15 + 23?", tools=[ADD], stream=True)))
    assert json.loads(full.choices[0].message.tool_calls[0].function.arguments) == {'a': 15, 'b': 23}
    assert full.choices[0].finish_reason == 'tool_calls'

async def add(a:int, # the first number
              b:int  # the second number
             )->int:
    "Add two integers"
    return a + b

async def test_tool_round_with_asyncchat(lm):
    chat = AsyncChat(lm.model, tools=[add], api_base=lm.api_base, api_key=lm.api_key, max_tokens=100)
    out = [o async for o in await chat("What's 15 + 23?", stream=True)]
    resps = [o for o in out if isinstance(o, ModelResponse)]
    assert [o['content'] for o in out if isinstance(o, dict)] == ['38']
    assert len(resps) == 2 and resps[0].choices[0].message.tool_calls
    assert '38' in resps[1].choices[0].message.content
    assert any(isinstance(o, ModelResponseStream) for o in out)
    assert [m['role'] for m in chat.hist] == ['user', 'assistant', 'tool', 'assistant']

async def test_concurrent_streamed_chats_all_complete(lm):
    "Five streamed chats at once: each gets a whole answer (the server queues them; none is cut off empty)"
    qs = ['What is the capital of France?', 'Name a colour.', 'Say hello.', 'What is 2 + 2?', 'Name an animal.']
    chats = [AsyncChat(lm.model, api_base=lm.api_base, api_key=lm.api_key, max_tokens=16) for _ in qs]
    async def run(chat, q): return [o async for o in await chat(q, stream=True)]
    outs = await asyncio.gather(*[run(c, q) for c,q in zip(chats, qs)])
    for out, chat in zip(outs, chats):
        res = out[-1]
        assert isinstance(res, ModelResponse) and sum(isinstance(o, ModelResponseStream) for o in out) > 1
        assert (res.choices[0].message.content or '').strip(), res
        assert res.choices[0].finish_reason in ('stop', 'length'), res
        assert [m['role'] for m in chat.hist] == ['user', 'assistant']

# --- no server left behind ------------------------------------------------------------------------------------------

def test_gone_after_normal_exit():
    with local_model() as m: pid = m.proc.pid; assert alive(pid)
    assert gone(pid) and not m.running

def test_gone_after_exception():
    with pytest.raises(ZeroDivisionError):
        with local_model() as m:
            pid = m.proc.pid
            1/0
    assert gone(pid)

def test_gone_after_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with local_model() as m:
            pid = m.proc.pid
            raise KeyboardInterrupt
    assert gone(pid)

async def test_gone_after_cancel_inside_and_while_starting():
    pids = []
    async def use():
        async with local_model() as m:
            pids.append(m.proc.pid)
            await asyncio.sleep(60)
    task = asyncio.create_task(use())
    while not pids: await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert gone(pids[0])
    m = local_model()
    task = asyncio.create_task(m.astart())
    while m.proc is None: await asyncio.sleep(0.005)
    pid = m.proc.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert gone(pid) and m.proc is None

def test_server_exits_when_its_parent_is_killed():
    "The last safety net: a parent killed with SIGKILL cleans nothing up, so the server must notice by itself"
    code = 'from lisette.local import local_model; import sys, time; m = local_model().start(); print(m.proc.pid, flush=True); time.sleep(60)'
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, cwd=ROOT)
    try: pid = int(p.stdout.readline())
    finally: p.kill(); p.wait()
    assert gone(pid)

def test_errors_say_what_to_install():
    with pytest.raises(LocalModelError, match='GGML_NATIVE=OFF'): check_server_installed(['llama_cpp', 'no_such_module'])
    with pytest.raises(LocalModelError, match='No model file'): local_model(gguf='/no/such.gguf').start()

def test_install_hint_is_this_repositorys_command_only():
    "PyPI's `lisette` is another project (no `local` extra): the hint names the README's command, run in a checkout"
    with pytest.raises(LocalModelError) as e: check_server_installed(['no_such_module'])
    msg = str(e.value)
    assert 'PyPI' not in msg and 'lisette[local]' not in msg, msg
    assert INSTALL_LLAMA in msg and 'checkout' in msg, msg
    assert INSTALL_LLAMA in (ROOT/'README.md').read_text()   # the hint is the quick start's own command

# --- the demo ---------------------------------------------------------------------------------------------------------

def _env(mark): return {k: v for k,v in os.environ.items() if k != 'LISETTE_MODEL'} | {'LISETTE_TEST_MARK': mark}

def test_demo_runs_a_tool_round():
    "`python -m lisette` with no model: the local model, a call to `add`, its result, the answer, a summary, status 0"
    mark = uuid.uuid4().hex
    r = subprocess.run([sys.executable, '-m', 'lisette'], capture_output=True, text=True, env=_env(mark), cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith('[local model: openai/smollm2') and lines[1].startswith('[tool call] add(')
    assert lines[2] == '[tool result] 38' and '38' in lines[3] and lines[-1].startswith('[2 rounds, 1 tool call; In: ')
    assert marked(mark) == []

def test_demo_interrupted_mid_stream():
    """`python -m lisette`, Ctrl-C while the answer streams: it exits, status 130, saying it was interrupted (not
    ending the story), and its server is gone. (The waits only guard against a hang: a loaded machine may start slowly)"""
    mark = uuid.uuid4().hex
    p = subprocess.Popen([sys.executable, '-m', 'lisette', '--no-tools', 'Write a long story about the sea.'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(mark), cwd=ROOT)
    try:
        out, end = b'', time.monotonic() + 180
        while not (b'\n' in out and len(out.split(b'\n', 1)[1]) > 40):   # the header line, then some of the story
            assert time.monotonic() < end and p.poll() is None, (out, p.poll())
            if select.select([p.stdout], [], [], 1)[0]: out += os.read(p.stdout.fileno(), 4096)
        assert out.startswith(b'[local model: openai/smollm2')
        servers = [pid for pid in marked(mark) if pid != p.pid]
        assert len(servers) == 1, servers
        p.send_signal(signal.SIGINT)
        rc = p.wait(60)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert rc == 130 and '[interrupted]' in err and 'Traceback' not in err, (rc, err)
    assert gone(servers[0]) and marked(mark) == []
