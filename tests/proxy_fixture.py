"""A real LiteLLM proxy (`litellm[proxy]`, in a virtual environment of its own: `.venvs/proxy`) on loopback, in front of two `lisette.testing.Sim`s: a session fixture.

The proxy routes one model name, `lisette-test`, to two deployments: `anthropic/claude-sonnet-4-5` on sim A and
`openai/gpt-4o` on sim B, shuffled, with retries. It runs as a subprocess in its own process group, with no
database (so no virtual keys: only the master key, and the static keys of a small `custom_auth` hook), the
local model cost map, and a free port; teardown stops it and checks that nothing of it is left.

Use it from a test module with `from proxy_fixture import *` (tests/ is on `sys.path` under pytest)."""
import os, shutil, signal, socket, subprocess, sys, tempfile, textwrap, time, urllib.request
from pathlib import Path
import pytest
from lisette.testing import Sim, proxy_python

PROXY_ENV = Path(__file__).resolve().parent.parent/'.venvs'/'proxy'   # made on first use, a minute or two

__all__ = ['MODEL', 'MASTER_KEY', 'TEAM_KEY', 'free_port', 'auth_hook', 'proxy_config', 'Proxy', 'proxy', 'psims', 'pxy']

MODEL = 'lisette-test'                 # the model name the proxy serves (clients ask for `openai/lisette-test`)
MASTER_KEY = 'sk-lisette-master-test'  # the proxy's master key
TEAM_KEY = 'sk-team-lisette'           # a static key the `custom_auth` hook accepts (virtual keys need a DB)

from lisette.local import free_port  # a free loopback port, as the local model's server gets

# A proxy without a database can't check virtual keys: any key but the master key gets a 400 "No connected db.".
# This hook (litellm's `custom_auth`, in `auto` mode) accepts a fixed set of `sk-team-` keys, answers any other
# `sk-team-` key with a 401, and leaves every other key to litellm's own check (the master key, or that 400).
def auth_hook(keys:dict)->str:
    "The source of a `custom_auth` module accepting `keys` (key -> user id)"
    return f'''
from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth, ProxyException

TEAM_KEYS = {keys!r}

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key in TEAM_KEYS: return UserAPIKeyAuth(api_key=api_key, user_id=TEAM_KEYS[api_key])
    if api_key.startswith('sk-team-'):
        raise ProxyException(message='Invalid team key', type='auth_error', param='None', code=401)
    raise Exception('not a team key: let litellm check it')
'''

def _deployment(name:str, model:str, base:str, key:str)->str:
    return f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n      api_base: {base}\n      api_key: {key}\n"

def proxy_config(anthropic_base:str, openai_base:str, model:str=MODEL, num_retries:int=2, auth_hook:bool=True,
                 dead_port:int=None)->str:
    """The proxy's config.yaml: `model` load-balanced over an Anthropic and an OpenAI deployment; `{model}-claude`
    and `{model}-openai` pinned to one of them each; `{model}-flaky` whose Anthropic deployment is down"""
    sonnet, gpt = lambda name, base: _deployment(name, 'anthropic/claude-sonnet-4-5', base, 'sk-ant-sim'), \
                  lambda name, base: _deployment(name, 'openai/gpt-4o', base, 'sk-oai-sim')
    dead = f'http://127.0.0.1:{dead_port or free_port()}'   # nothing listens there
    models = (sonnet(model, anthropic_base) + gpt(model, openai_base) + sonnet(f'{model}-claude', anthropic_base)
              + gpt(f'{model}-openai', openai_base) + sonnet(f'{model}-flaky', dead) + gpt(f'{model}-flaky', openai_base))
    hook = '  custom_auth: pxauth.user_api_key_auth\n  custom_auth_settings:\n    mode: auto\n' if auth_hook else ''
    return 'model_list:\n' + models + textwrap.dedent(f'''\
        router_settings:
          routing_strategy: simple-shuffle   # pick a deployment of the group at random, per request
          num_retries: {num_retries}                     # retry a failed request (the retry may pick the other deployment)
          retry_after: 0
          allowed_fails: 1                   # a deployment failing more often than this in a minute ...
          cooldown_time: 1                   # ... is left out of the shuffle for this many seconds
        litellm_settings:
          drop_params: true     # gpt-4o takes no reasoning_effort: drop it rather than fail
          modify_params: true   # a thinking request whose tool round came from a non-Anthropic deployment:
                                # drop `thinking` for that request rather than have Anthropic reject it
        general_settings:
          master_key: os.environ/LITELLM_MASTER_KEY
        ''') + hook

class Proxy:
    "A `litellm --config` subprocess in its own process group, on a free loopback port"
    def __init__(self, config:str, master_key:str=MASTER_KEY, files:dict=None, port:int=None):
        self.dir = Path(tempfile.mkdtemp(prefix='lisette-proxy-'))
        (self.dir/'config.yaml').write_text(config)
        for name,text in (files or {}).items(): (self.dir/name).write_text(text)
        self.master_key, self.port, self.proc, self.startup = master_key, port or free_port(), None, None

    @property
    def url(self)->str: return f'http://127.0.0.1:{self.port}'
    @property
    def log(self)->str: return (self.dir/'proxy.log').read_text(errors='replace')

    def env(self)->dict:
        env = {k:v for k,v in os.environ.items() if k not in ('DATABASE_URL', 'REDIS_HOST', 'REDIS_URL')
               and not k.endswith('_API_KEY') and not k.lower().endswith('_proxy')}
        return env | dict(LITELLM_MASTER_KEY=self.master_key, LITELLM_LOCAL_MODEL_COST_MAP='True',
                          LITELLM_LOG='ERROR', DISABLE_ADMIN_UI='True', NO_DOCS='True', PYTHONUNBUFFERED='1')

    def start(self, timeout:float=60):
        "Start the proxy and wait until `/health/liveliness` answers; seconds taken"
        py = proxy_python(PROXY_ENV)   # made on first use: not part of the start-up time
        t = time.monotonic()
        with open(self.dir/'proxy.log', 'wb') as log:
            self.proc = subprocess.Popen([str(py), '-m', 'litellm.proxy.proxy_cli', '--config', str(self.dir/'config.yaml'),
                                          '--host', '127.0.0.1', '--port', str(self.port)],
                                         cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while not self.alive():
            if self.proc.poll() is not None or time.monotonic() - t > timeout:
                self.stop()
                raise RuntimeError(f'The LiteLLM proxy did not start (exit code {self.proc.returncode}):\n{self.log[-3000:]}')
            time.sleep(0.1)
        self.startup = time.monotonic() - t
        return self.startup

    def alive(self)->bool:
        try:
            with urllib.request.urlopen(self.url + '/health/liveliness', timeout=1) as r: return r.status == 200
        except OSError: return False

    def left(self)->bool:
        "Is any process of the proxy's group still there?"
        try: os.killpg(self.proc.pid, 0)
        except ProcessLookupError: return False
        except PermissionError: return True
        return True

    def stop(self, timeout:float=10):
        "Terminate the proxy's process group (SIGTERM, then SIGKILL) and reap it"
        if self.proc is None: return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try: os.killpg(self.proc.pid, sig)
            except ProcessLookupError: pass
            try: self.proc.wait(timeout)
            except subprocess.TimeoutExpired: continue
            end = time.monotonic() + timeout
            while self.left() and time.monotonic() < end: time.sleep(0.05)
            if not self.left(): break

    def cleanup(self):
        "Stop the proxy and remove its folder (config, hook, log)"
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self): self.start(); return self
    def __exit__(self, *exc): self.cleanup()

# ---------------------------------------------------------------- pytest fixtures

@pytest.fixture(scope='session')
def psims():
    "The two upstream simulators: A serves the Anthropic deployment, B the OpenAI one"
    a, b = Sim(), Sim()
    yield a, b
    a.close(); b.close()

@pytest.fixture(scope='session')
def proxy(psims):
    "A LiteLLM proxy routing `lisette-test` over both simulators; session-scoped (it takes seconds to start)"
    a, b = psims
    p = Proxy(proxy_config(a.anthropic_base, b.openai_base), files={'pxauth.py': auth_hook({TEAM_KEY: 'team-lisette'})})
    p.start()
    yield p
    p.cleanup()
    assert p.proc.returncode is not None, 'the proxy process is still running'
    assert not p.left(), 'a process of the proxy group is still running'

@pytest.fixture
def pxy(proxy, psims):
    "The proxy, with both simulators' scripts, defaults and records cleared before and after the test"
    def clear():
        for s in psims: s.reset(); s.default = None
    clear()
    yield proxy
    clear()
