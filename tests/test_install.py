"A fresh virtual environment, installed from this repo as a user would, imports quietly and chats"
import os, subprocess, sys, textwrap, venv
from pathlib import Path

root = Path(__file__).resolve().parent.parent

script = textwrap.dedent('''
    import asyncio, io, contextlib, time
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        import lisette.asink
    took = time.perf_counter() - t
    assert out.getvalue() == '', out.getvalue()   # a quiet import: no banners, no cost-map warnings
    from lisette.core import Chat
    from lisette.asink import AsyncChat
    from lisette.testing import Sim, Reply, Call, check_anthropic
    def add(a:int, b:int)->int:
        "Add a and b"
        return a + b
    with Sim() as sim:
        sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 2})]), Reply(text='3'))
        chat = Chat('anthropic/claude-sonnet-4-5', tools=[add], api_base=sim.anthropic_base, api_key='sk-test')
        assert chat('1+2?').choices[0].message.content == '3'
        assert check_anthropic(sim.bodies[-1]) == []
        sim.script(Reply(calls=[Call('add', {'a': 2, 'b': 2})]), Reply(text='4', chunks=2))
        achat = AsyncChat('openai/gpt-4o', tools=[add], api_base=sim.openai_base, api_key='sk-test')
        async def main(): return [o async for o in await achat('2+2?', stream=True)]
        assert asyncio.run(main())[-1].choices[0].message.content == '4'
    print(f'ok import {took:.2f}s')
''')

def test_fresh_install(tmp_path):
    "`pip install .` into a new venv (no extras) brings everything a chat with tools needs"
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    env = {k:v for k,v in os.environ.items() if not k.startswith(('LITELLM', 'VIRTUAL_ENV'))} | {'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
    r = subprocess.run([py, '-m', 'pip', 'install', '-q', str(root)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([py, '-c', script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.startswith('ok import'), r.stdout
