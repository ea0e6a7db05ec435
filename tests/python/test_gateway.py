"""End to end: `thaw serve --config` (the gateway) with two native deployments and
one external server (a second `thaw serve` started by command), real workers, real
API keys and the real usage ledger."""

import concurrent.futures
import json
import glob
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, _free_port

THAW = os.environ.get("THAW_BIN", os.path.join(ROOT, "target", "release", "thaw"))
IDLE = 1.5  # seconds: `smol` scales to zero after this


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _children_of(pid):
    """Every live process whose ancestry includes `pid`."""
    out = set()
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    parents[int(p)] = int(f.read().split(") ")[1].split()[1])
            except OSError:
                pass
    frontier = [pid]
    while frontier:
        cur = frontier.pop()
        for c, pp in parents.items():
            if pp == cur and c not in out:
                out.add(c)
                frontier.append(c)
    return {p for p in out if _pid_alive(p)}


class Gateway:
    def __init__(self, tmp, config, keys):
        self.tmp = tmp
        self.config = config
        self.keys = keys
        self.port = None
        self.proc = None

    def start(self):
        self.port = _free_port()
        self.log = open(os.path.join(self.tmp, f"gateway-{self.port}.log"), "w")
        self.proc = subprocess.Popen(
            [THAW, "serve", "--config", self.config, "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, f"gateway exited; see {self.log.name}"
            try:
                urllib.request.urlopen(f"{self.root}/health", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gateway did not start")

    @property
    def root(self):
        return f"http://127.0.0.1:{self.port}"

    def call(self, method, path, key=None, body=None, ctype="application/json"):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.root + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        if key:
            req.add_header("Authorization", f"Bearer {self.keys.get(key, key)}")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def json(self, method, path, key=None, body=None, **kw):
        status, headers, raw = self.call(method, path, key, body, **kw)
        return status, headers, json.loads(raw)

    def deployment(self, name):
        s, _, v = self.json("GET", f"/admin/deployments/{name}", "admin")
        assert s == 200, v
        return v

    def ready(self, name):
        return [r for r in self.deployment(name)["replicas"] if r["state"] == "ready"]

    def client(self, key):
        openai = pytest.importorskip("openai")
        return openai.OpenAI(base_url=self.root + "/v1", api_key=self.keys[key],
                             max_retries=0, timeout=120)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                rc = self.proc.wait(timeout=30)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
            self.log.close()
            return rc
        return self.proc.returncode if self.proc else None


def _config(tmp, db):
    ext = f"{THAW} serve smollm2 --port {{port}} --ctx-size 512 --threads 1 --model-id upstream"
    text = f"""
[gateway]
db = "{db}"
shutdown_grace = "3s"

[[deployment]]
name = "smol"
source = "smollm2"
max_replicas = 2
max_concurrency = 1
scale_up_queue = 1
idle_timeout = {IDLE}
threads = 1
ctx_size = 512
price_input = 100.0
price_output = 300.0

[[deployment]]
name = "smol-b"
source = "smollm2"
idle_timeout = "60s"
threads = 1
ctx_size = 512
system_prompt = "You are terse."

[[deployment]]
name = "ext"
command = "{ext}"
upstream_model = "upstream"
health = "/health"
start_timeout = "60s"
idle_timeout = "60s"
"""
    path = os.path.join(tmp, "thaw.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def _key(db, name, *extra):
    r = subprocess.run([THAW, "keys", "create", "--name", name, "--db", db, *extra],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    if not os.path.exists(THAW):
        pytest.skip(f"thaw binary not found at {THAW}")
    tmp = str(tmp_path_factory.mktemp("gateway"))
    db = os.path.join(tmp, "thaw.db")
    keys = {
        "admin": _key(db, "admin", "--admin"),
        "alice": _key(db, "alice"),
        "bob": _key(db, "bob", "--tokens-per-day", "10"),
        "carol": _key(db, "carol", "--rpm", "2"),
    }
    g = Gateway(tmp, _config(tmp, db), keys).start()
    yield g
    g.stop()


CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4, "temperature": 0}


def test_auth_is_enforced(gw):
    for key in (None, "thaw-not-a-key"):
        s, _, body = gw.json("POST", "/v1/chat/completions", key, CHAT)
        assert s == 401 and body["error"]["code"] == "invalid_api_key"
    s, _, body = gw.json("GET", "/v1/models", "alice")
    assert s == 200
    assert sorted(m["id"] for m in body["data"]) == ["ext", "smol", "smol-b"]
    # Management needs the admin key.
    s, _, body = gw.json("GET", "/admin/deployments", "alice")
    assert s == 403 and "admin" in body["error"]["message"]
    s, _, body = gw.json("POST", "/v1/chat/completions", "alice", dict(CHAT, model="nope"))
    assert s == 404 and body["error"]["code"] == "model_not_found"
    s, _, body = gw.json("POST", "/v1/chat/completions", "alice", b"{not json")
    assert s == 400 and body["error"]["type"] == "invalid_request_error"
    s, _, body = gw.json("POST", "/v1/chat/completions", "alice", CHAT, ctype="text/plain")
    assert s == 415 and body["error"]["type"] == "invalid_request_error"


def test_scale_from_zero_and_back_to_zero(gw):
    assert gw.deployment("smol")["replicas"] == []
    # The gateway froze the deployments' GGUF at start: workers thaw the snapshot.
    home = os.environ.get("THAW_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "thaw")
    frozen = glob.glob(os.path.join(home, "snapshots", "smollm2-*.thaw"))
    assert frozen, f"no frozen snapshot of smollm2 under {home}/snapshots"
    info = subprocess.run([THAW, "snapshot", "inspect", frozen[0]],
                          capture_output=True, text=True, check=True).stdout
    assert "(chat preamble)" in info, info
    r = gw.client("alice").chat.completions.create(**CHAT)
    assert r.usage.completion_tokens > 0
    ready = gw.ready("smol")
    assert len(ready) == 1
    pid = ready[0]["pid"]
    assert _pid_alive(pid)
    deadline = time.time() + IDLE + 10
    while time.time() < deadline and gw.deployment("smol")["replicas"]:
        time.sleep(0.1)
    assert gw.deployment("smol")["replicas"] == [], "did not scale to zero"
    out = subprocess.run([THAW, "ps", "--url", gw.root, "--api-key", gw.keys["admin"]],
                         capture_output=True, text=True, check=True).stdout
    smol = [l for l in out.splitlines() if l.startswith("smol ")][0]
    assert smol.split()[2] == "0", out  # READY column
    time.sleep(0.5)
    assert not _pid_alive(pid), "worker process still running after scale to zero"


def test_autoscale_to_two_under_load(gw):
    client = gw.client("alice")
    seen = set()
    stop = False

    def watch():
        while not stop:
            for r in gw.deployment("smol")["replicas"]:
                if r["state"] == "ready":
                    seen.add(r["pid"])
            time.sleep(0.05)

    def one(i):
        return client.chat.completions.create(**dict(CHAT, max_tokens=32, seed=i))

    with concurrent.futures.ThreadPoolExecutor(7) as ex:
        w = ex.submit(watch)
        results = list(ex.map(one, range(6)))
        stop = True
        w.result()
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in results)
    assert len(seen) == 2, f"expected 2 replicas under load, saw {seen}"
    text = urllib.request.urlopen(gw.root + "/metrics").read().decode()
    assert 'thaw_scale_events_total{deployment="smol",direction="up"}' in text
    assert 'thaw_cold_start_seconds_bucket{deployment="smol",step="total"' in text


def test_ledger_matches_client_usage(gw):
    client = gw.client("alice")
    seen = {}  # request id -> (prompt, cached, completion)
    # Non-streaming chat and completion.
    raw = client.chat.completions.with_raw_response.create(**dict(CHAT, model="smol-b"))
    r = raw.parse()
    seen[raw.headers["x-thaw-request-id"]] = (r.usage.prompt_tokens, r.usage.completion_tokens)
    # smol-b's first request went to a fresh worker, thawed from the snapshot the
    # gateway froze with smol-b's system prompt stored: that prefix was not computed.
    assert r.usage.prompt_tokens_details.cached_tokens > 0, r.usage
    raw = client.completions.with_raw_response.create(model="ext", prompt="Once", max_tokens=3)
    r = raw.parse()
    seen[raw.headers["x-thaw-request-id"]] = (r.usage.prompt_tokens, r.usage.completion_tokens)
    # A stream that asked for usage gets exactly one usage chunk.
    with client.chat.completions.with_streaming_response.create(
            **dict(CHAT, model="smol-b", stream=True, stream_options={"include_usage": True})) as resp:
        chunks = list(resp.parse())
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    seen[resp.headers["x-thaw-request-id"]] = (usage[0].prompt_tokens, usage[0].completion_tokens)
    # A stream that did not ask gets none, but is still metered.
    with client.chat.completions.with_streaming_response.create(
            **dict(CHAT, model="ext", stream=True)) as resp:
        chunks = list(resp.parse())
    assert not any(c.usage for c in chunks) and not any(c.choices == [] for c in chunks)
    quiet_id = resp.headers["x-thaw-request-id"]
    s, _, body = gw.json("GET", "/v1/usage?rows=true&since=1h", "alice")
    assert s == 200
    rows = {r["id"]: r for r in body["rows"]}
    for rid, (p, c) in seen.items():
        assert (rows[rid]["prompt_tokens"], rows[rid]["completion_tokens"]) == (p, c), rid
        assert rows[rid]["status"] == 200
    assert rows[quiet_id]["completion_tokens"] > 0 and rows[quiet_id]["prompt_tokens"] > 0
    # Cost follows the deployment's prices (per million tokens).
    smol_rows = [r for r in body["rows"] if r["deployment"] == "smol"]
    for r in smol_rows:
        assert abs(r["cost"] - (r["prompt_tokens"] * 100 + r["completion_tokens"] * 300) / 1e6) < 1e-9
    assert any(r["cold_start"] for r in body["rows"])
    # Alice never sees another key's usage; the admin sees everyone's.
    assert {r["key"] for r in body["rows"]} == {"alice"}
    s, _, body = gw.json("GET", "/v1/usage?key=admin", "alice")
    assert s == 403
    s, _, body = gw.json("GET", "/v1/usage", "admin")
    assert s == 200 and any(r["key"] == "alice" for r in body["data"])
    out = subprocess.run([THAW, "usage", "--since", "1d", "--key", "alice", "--json",
                          "--config", gw.config], capture_output=True, text=True, check=True).stdout
    totals = json.loads(out)
    assert sum(t["requests"] for t in totals) == len([r for r in rows.values()])


def test_quota_and_rate_limit(gw):
    client = gw.client("bob")
    client.chat.completions.create(**CHAT)  # uses > 10 tokens: the day's quota
    s, h, body = gw.json("POST", "/v1/chat/completions", "bob", CHAT)
    assert s == 429 and body["error"]["code"] == "insufficient_quota"
    assert int(h["retry-after"]) > 0
    statuses = [gw.call("GET", "/v1/models", "carol")[0] for _ in range(1)]
    assert statuses == [200]  # listing models is not rate limited
    for _ in range(2):
        s, _, _ = gw.call("POST", "/v1/chat/completions", "carol", CHAT)
        assert s == 200
    s, h, body = gw.json("POST", "/v1/chat/completions", "carol", CHAT)
    assert s == 429 and body["error"]["code"] == "rate_limit_exceeded" and "retry-after" in h


def test_worker_killed_mid_stream(gw):
    openai = pytest.importorskip("openai")
    client = gw.client("alice")
    stream = client.chat.completions.create(
        **dict(CHAT, model="smol-b", max_tokens=200, stream=True,
               messages=[{"role": "user", "content": "Count from one to one hundred."}]))
    next(stream)
    pid = gw.ready("smol-b")[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    # The replica is replaced on the next request.
    r = client.chat.completions.create(**dict(CHAT, model="smol-b"))
    assert r.usage.completion_tokens > 0
    assert gw.ready("smol-b")[0]["pid"] != pid
    s, _, body = gw.json("GET", "/v1/usage?rows=true", "alice")
    assert any(r["status"] == 502 and r["deployment"] == "smol-b" for r in body["rows"])


def test_management_api(gw):
    before = gw.deployment("smol-b")["spec"]
    bad = '[[deployment]]\nname = "smol-b"\nsource = "smollm2"\nmin_replicas = 3\nmax_replicas = 1\n'
    s, _, body = gw.json("POST", "/admin/deployments", "admin", bad.encode(), ctype="application/toml")
    assert s == 400 and "min_replicas" in body["error"]["message"] and ":1:" in body["error"]["message"]
    assert gw.deployment("smol-b")["spec"] == before  # untouched
    # A deployment made through the API is not frozen at gateway start: its worker
    # serves from the GGUF and freezes it (with its system prompt) in the background.
    home = os.environ.get("THAW_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "thaw")
    snaps = lambda: set(glob.glob(os.path.join(home, "snapshots", "smollm2-*.thaw")))
    before_snaps = snaps()
    app = os.path.join(gw.tmp, "app.toml")
    system = f"You answer in one word. ({os.getpid()} {time.time()})"
    with open(app, "w") as f:
        f.write('[[deployment]]\nname = "late"\nsource = "smollm2"\nthreads = 1\nctx_size = 256\n'
                f'system_prompt = "{system}"\n')
    env = dict(os.environ, THAW_URL=gw.root, THAW_API_KEY=gw.keys["admin"])
    subprocess.run([THAW, "deploy", app], check=True, env=env, capture_output=True)
    # `late` allows one replica (max_replicas defaults to 1): more is refused, and said.
    r = subprocess.run([THAW, "scale", "late", "5"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "max_replicas = 1" in r.stderr, r.stderr
    assert gw.deployment("late")["spec"]["max_replicas"] == 1
    subprocess.run([THAW, "scale", "late", "1"], check=True, env=env, capture_output=True)
    deadline = time.time() + 30
    while time.time() < deadline and not gw.ready("late"):
        time.sleep(0.05)
    pid = gw.ready("late")[0]["pid"]
    r = gw.client("alice").chat.completions.create(**dict(CHAT, model="late"))
    assert r.usage.completion_tokens > 0
    deadline = time.time() + 60
    while time.time() < deadline and not (snaps() - before_snaps):
        time.sleep(0.2)
    new = snaps() - before_snaps
    assert new, f"the worker of an API-made deployment did not freeze it under {home}"
    s, _, _ = gw.json("DELETE", "/admin/deployments/late", "admin")
    assert s == 200
    for f in new:  # this run's system prompt: no later run would thaw it
        os.remove(f)
    deadline = time.time() + 10
    while time.time() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    assert not _pid_alive(pid)
    s, _, body = gw.json("POST", "/v1/chat/completions", "alice", dict(CHAT, model="late"))
    assert s == 404


def test_shutdown_stops_every_worker(gw):
    # Wake all three deployments, then stop the gateway: no process may remain.
    client = gw.client("alice")
    for m in ("smol", "smol-b", "ext"):
        client.chat.completions.create(**dict(CHAT, model=m))
    kids = _children_of(gw.proc.pid)
    assert len(kids) >= 3
    assert gw.stop() == 0
    time.sleep(0.3)
    assert not [k for k in kids if _pid_alive(k)], "orphaned workers"


def test_sigkill_gateway_keeps_ledger_exact(gw):
    """SIGKILL the gateway under load: every answer a client saw complete is in the
    ledger exactly once after a restart, and native workers exit on their own."""
    g = Gateway(gw.tmp, gw.config, gw.keys).start()
    client = g.client("alice")
    client.chat.completions.create(**dict(CHAT, model="smol-b"))
    client.chat.completions.create(**dict(CHAT, model="ext"))
    workers = _children_of(g.proc.pid)
    assert len(workers) >= 3  # smol-b's worker, ext's supervisor and its server
    done = []
    killed = []

    def worker(i):
        while not killed:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    **dict(CHAT, model="smol-b", max_tokens=8, seed=i))
                done.append(raw.headers["x-thaw-request-id"])
            except Exception:
                return

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(worker, i) for i in range(4)]
        deadline = time.time() + 60
        while len(done) < 4 and time.time() < deadline:
            time.sleep(0.02)
        killed.append(True)
        g.proc.kill()  # with requests in flight
        g.proc.wait()
        for f in futs:
            f.result()
    assert done, "no request completed before the kill"
    deadline = time.time() + 10
    while time.time() < deadline and any(_pid_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _pid_alive(w)], "workers outlived a SIGKILLed gateway"
    g2 = Gateway(gw.tmp, gw.config, gw.keys).start()
    try:
        s, _, body = g2.json("GET", "/v1/usage?rows=true", "admin")
        ids = [r["id"] for r in body["rows"]]
        assert len(ids) == len(set(ids))
        assert set(done) <= set(ids)
    finally:
        g2.stop()
