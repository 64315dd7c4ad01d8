"""Chat backends: the OpenAI-compatible client against a scripted loopback server and a fault proxy, and the
in-process transformers backend on a tiny random InternVL."""

from __future__ import annotations

import base64
import io
import socket
import time

import pytest
from PIL import Image

from tests.servers.chat import FaultProxy, ScriptedServer, request_images, request_text
from ureca_cli.errors import UrecaError
from ureca_cli.mllm import BackendError, GenerationSettings, make_backend, user
from ureca_cli.mllm.openai import retry_after_seconds

IMG = Image.new("RGB", (32, 24), (200, 30, 30))
FAST = {"backoff": 0.01, "max_backoff": 0.05}


def _echo(body):
    return "answer: " + request_text(body)[:20]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_openai_request_shape_model_and_key(monkeypatch):
    monkeypatch.setenv("UR_TEST_KEY", "sk-secret-123")
    with ScriptedServer(_echo) as s:
        b = make_backend("openai", base_urls=[s.url], api_key_env="UR_TEST_KEY", concurrency=2)
        settings = GenerationSettings(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3)
        assert b.chat([user(IMG, "What is it?")], settings) == "answer: What is it?"
        assert b.model == "scripted"  # from GET /models
        body = s.requests[0]
        assert body["model"] == "scripted" and body["max_tokens"] == 7 and body["seed"] == 3
        assert body["temperature"] == 0.5 and body["top_p"] == 0.9
        (url,) = request_images(body)
        assert url.startswith("data:image/jpeg;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert im.size == (32, 24)
        assert s.headers[0]["Authorization"] == "Bearer sk-secret-123"
        assert "sk-secret" not in repr(b.__dict__.get("_model"))
        b.close()
    with pytest.raises(UrecaError, match="UR_MISSING_KEY"):
        make_backend("openai", base_urls=["http://127.0.0.1:1/v1"], api_key_env="UR_MISSING_KEY")


def test_openai_round_robin_and_concurrency():
    with ScriptedServer(_echo, delay=0.1) as a, ScriptedServer(_echo, delay=0.1) as c:
        b = make_backend("openai", base_urls=[a.url, c.url], model="m", concurrency=3)
        t = time.monotonic()
        out = b.chat_many([[user(f"q{i}")] for i in range(12)], GenerationSettings())
        took = time.monotonic() - t
        assert out == [f"answer: q{i}" for i in range(12)]
        assert len(a.requests) == len(c.requests) == 6
        assert max(a.max_in_flight, c.max_in_flight) <= 3
        assert 0.35 < took < 1.0  # 12 requests, 3 at a time, 0.1 s each
        b.close()


def test_openai_retries_every_fault_then_answers():
    faults = ["429", "500", "drop", "empty", "stall"]
    with ScriptedServer(_echo) as s, FaultProxy(s.url, lambda k: faults[k] if k < len(faults) else None,
                                                stall=1.0) as p:
        b = make_backend("openai", base_urls=[p.url], model="m", concurrency=1, retries=6, timeout=0.4, **FAST)
        assert b.chat([user("hello")], GenerationSettings()) == "answer: hello"
        assert b.requests_sent == 6 and p.applied[:5] == faults
        assert len(s.requests) == 1  # only the last try reached the server
        b.close()


def test_openai_honours_retry_after():
    with ScriptedServer(_echo) as s, FaultProxy(s.url, lambda k: "429" if k == 0 else None, retry_after="0.6") as p:
        b = make_backend("openai", base_urls=[p.url], model="m", **FAST)
        t = time.monotonic()
        assert b.chat([user("x")], GenerationSettings()) == "answer: x"
        assert time.monotonic() - t >= 0.6
        b.close()
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and retry_after_seconds("soon") is None


def test_openai_gives_up_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("UR_TEST_KEY", "sk-never-shown")
    url = f"http://127.0.0.1:{_free_port()}/v1"
    b = make_backend("openai", base_urls=[url], model="m", retries=2, api_key_env="UR_TEST_KEY", **FAST)
    with pytest.raises(BackendError) as e:
        b.chat([user("x")], GenerationSettings())
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "3 tries" in msg and "connection failed" in msg
    assert "sk-never-shown" not in msg + capsys.readouterr().err
    with ScriptedServer(_echo) as s, FaultProxy(s.url, lambda k: "empty") as p:
        b = make_backend("openai", base_urls=[p.url], model="m", retries=1, **FAST)
        with pytest.raises(BackendError, match="empty answer"):
            b.chat([user("x")], GenerationSettings())


def test_openai_client_errors_fail_at_once():
    with ScriptedServer(_echo) as s:
        b = make_backend("openai", base_urls=[s.url.replace("/v1", "/nope")], model="m", **FAST)
        with pytest.raises(BackendError, match="HTTP 404"):
            b.chat([user("x")], GenerationSettings())
        assert b.requests_sent == 1
    with pytest.raises(UrecaError, match="--base-url"):
        make_backend("openai", base_urls=["localhost:8000"])
    with pytest.raises(UrecaError, match="--backend"):
        make_backend("vllm")
    with pytest.raises(UrecaError, match="--top-p"):
        GenerationSettings(top_p=0)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from ureca_cli.model.tiny import save_tiny_internvl

    return save_tiny_internvl(tmp_path_factory.mktemp("tinyvl"))


def test_hf_backend_batches_concurrent_calls(tiny_folder):
    b = make_backend("hf", model=str(tiny_folder), device="cpu", batch_size=4)
    sizes = []
    real = b.generate
    b.generate = lambda convs, st: sizes.append(len(convs)) or real(convs, st)
    convs = [[user(IMG, f"Describe region {i}.")] for i in range(4)] + [[user(IMG, IMG.crop((0, 0, 9, 9)), "two")]]
    out = b.chat_many(convs, GenerationSettings(max_new_tokens=6))
    assert len(out) == 5 and all(isinstance(a, str) and a.strip() == a and a for a in out)
    assert max(sizes) > 1 and sum(sizes) == 5
    # greedy answers do not depend on the batch they ran in
    assert b.chat(convs[0], GenerationSettings(max_new_tokens=6)) == out[0]
    assert b.describe() == {"backend": "hf", "model": str(tiny_folder)}
    b.close()
    with pytest.raises(UrecaError, match="nope: no such folder"):
        make_backend("hf", model=str(tiny_folder / "nope"), device="cpu")
    (tiny_folder.parent / "empty").mkdir(exist_ok=True)
    with pytest.raises(UrecaError, match="cannot load"):
        make_backend("hf", model=str(tiny_folder.parent / "empty"), device="cpu")


def test_openai_settings_name_the_option_at_fault():
    from ureca_cli.visual.prompter import VisualSettings

    with pytest.raises(UrecaError, match=r"^--retries -1: needs 0 or more$"):
        make_backend("openai", base_urls=["http://127.0.0.1:9/v1"], model="m", retries=-1)
    with pytest.raises(UrecaError, match=r"^--timeout 0: needs a number of seconds above 0$"):
        make_backend("openai", base_urls=["http://127.0.0.1:9/v1"], model="m", timeout=0)
    with pytest.raises(UrecaError, match=r"^--blur-sigma -1: must be >= 0$"):
        VisualSettings(sigma=-1)


KEY = "sk-test-0123456789abcdef"


def test_openai_never_hands_out_the_key_or_url_credentials(monkeypatch):
    """A server that echoes the Authorization header (in a 401 message, in its answers, in its model list) and a
    password in --base-url: no message, answer or description the backend gives out holds either."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # read by default, as every OpenAI-compatible client does
    with ScriptedServer(_echo, echo_auth="401") as s:
        b = make_backend("openai", base_urls=[s.url], model="m", retries=0, **FAST)
        with pytest.raises(BackendError) as e:
            b.chat([user("x")], GenerationSettings())
        assert "HTTP 401" in str(e.value) and KEY not in str(e.value) and "Bearer ***" in str(e.value)
        assert s.headers[0]["Authorization"] == f"Bearer {KEY}"
        b.close()
    with ScriptedServer(_echo, echo_auth="answer") as s:
        b = make_backend("openai", base_urls=[s.url])
        answer = b.chat([user("x")], GenerationSettings())
        assert answer.startswith("answer: x") and KEY not in answer and "***" in answer
        assert KEY not in repr(b.describe()) and b.describe()["model"].startswith("scripted")
        b.close()
    port = _free_port()
    secret_url = f"http://alice:pa55word@127.0.0.1:{port}/v1"
    b = make_backend("openai", base_urls=[secret_url], model="m", retries=1, **FAST)
    with pytest.raises(BackendError) as e:
        b.chat([user("x")], GenerationSettings())
    assert "pa55word" not in str(e.value) and f"http://alice:***@127.0.0.1:{port}/v1" in str(e.value)
    with pytest.raises(UrecaError) as e:
        make_backend("openai", base_urls=[f"ftp://alice:pa55word@127.0.0.1:{port}/v1"])
    assert "pa55word" not in str(e.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    with ScriptedServer(_echo) as s:  # no key anywhere: no header
        b = make_backend("openai", base_urls=[s.url], model="m")
        b.chat([user("x")], GenerationSettings())
        assert "Authorization" not in s.headers[0]
        b.close()


@pytest.mark.parametrize("headers_first", [False, True], ids=["trickled-headers", "trickled-body"])
def test_openai_timeout_bounds_the_whole_request(headers_first):
    """--timeout is each request's whole time, not the gap between bytes: a server that sends one byte every
    0.05 s (about 12 s for its answer) is given up on after --timeout 0.5 per try."""
    from tests.servers.chat import TrickleServer

    with TrickleServer(interval=0.05, headers_first=headers_first) as s:
        b = make_backend("openai", base_urls=[s.url], model="m", timeout=0.5, retries=1, **FAST)
        t = time.monotonic()
        with pytest.raises(BackendError, match=r"2 tries; last: no answer within 0.5 s"):
            b.chat([user("x")], GenerationSettings())
        took = time.monotonic() - t
        b.close()
    assert s.count == 2 and took < 3.0, took


def test_settings_that_are_not_finite_are_refused():
    from ureca_cli.commands.chat import ChatOptions
    from ureca_cli.visual.prompter import VisualSettings

    for bad in (float("nan"), float("inf")):
        with pytest.raises(UrecaError, match=r"^--timeout (nan|inf): needs a finite number of seconds above 0$"):
            make_backend("openai", base_urls=["http://127.0.0.1:9/v1"], model="m", timeout=bad)
        with pytest.raises(UrecaError, match=r"^--timeout (nan|inf): "):
            ChatOptions(timeout=bad)
        with pytest.raises(UrecaError, match=r"^--blur-sigma (nan|inf): needs a finite number >= 0$"):
            VisualSettings(sigma=bad)
