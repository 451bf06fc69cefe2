"""A loopback HTTP proxy in front of a SuperLink that misbehaves on purpose, within bounds.

Rules are checked per request in order; each has a budget (how many times it may fire), so a test's
faults are bounded in count and in time. Actions: ``drop`` (close the connection without an answer, before
forwarding), ``lose-answer`` (forward, so SuperLink acts on the request, then close the connection: the
lost-reply case), ``delay`` (sleep, then forward), ``hold`` (block until released, then drop),
``forward-hold`` (forward, then block until released and drop), and response rewrites (``corrupt-object``,
``oversize-object``, ``content-type``, ``truncate``).

``per_instruction`` scripts faults by instruction instead of by time: the n-th instruction that a
``pull-messages`` answer hands out through this proxy gets ``per_instruction[n]`` on its first ``pull-object``
(``""`` = none). The rule is armed inside the proxy before the device sees the instruction, so no test thread
races the device for it.

With ``tls`` (a server-side SSLContext) the proxy is a TLS front instead (``https://localhost:<port>``); with
client certificates required, ``clients`` collects the common names of the certificates it was shown.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from flclient.fleet._proto import flclient_fleet_pb2 as pb

_REWRITES = ("corrupt-object", "oversize-object", "content-type", "truncate")


@dataclass
class Rule:
    action: str
    path: str = ""  # substring of the request path; "" = every path
    share: float = 1.0  # probability of firing on a matching request
    budget: int = 1
    delay_s: float = 0.0
    fired: int = 0


@dataclass
class FlakyProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seed: int = 0
    per_instruction: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    tls: ssl.SSLContext | None = None
    clients: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self.armed: list[str] = []  # per-instruction faults armed so far, in order
        self._client = httpx.Client(base_url=self.upstream, timeout=30, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                if proxy.tls is not None and (peer := self.connection.getpeercert()):  # type: ignore[attr-defined]
                    proxy.clients.add(str(dict(x[0] for x in peer["subject"])["commonName"]))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rule = proxy._pick(self.path)
                if rule is not None and rule.action in ("drop", "hold"):
                    if rule.action == "hold":
                        proxy.released.wait(60)
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule is not None and rule.action == "delay":
                    time.sleep(rule.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                try:
                    r = proxy._client.post(self.path, content=body, headers=headers)
                except (httpx.HTTPError, RuntimeError):  # RuntimeError: closed at teardown
                    self.close_connection = True
                    self.connection.close()
                    return
                status, ctype, content = r.status_code, r.headers.get("content-type", ""), r.content
                if status == 200 and "pull-messages" in self.path:
                    proxy._arm_per_instruction(content)
                if rule is not None and rule.action in ("forward-hold", "lose-answer"):  # upstream got it
                    if rule.action == "forward-hold":
                        proxy.released.wait(60)
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule is not None and status == 200 and rule.action in _REWRITES:
                    if "pull-object" in self.path and not pb.PullObjectResponse.FromString(content).object_available:
                        proxy._unfire(rule)  # no object in this answer yet: keep the fault for its next answer
                    else:
                        ctype, content = proxy._rewrite(rule.action, ctype, content)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://localhost:{port}" if self.tls is not None else f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _arm_per_instruction(self, content: bytes) -> None:
        n = len(pb.PullMessagesResponse.FromString(content).messages_list)
        with self._lock:
            for _ in range(n):
                if self.per_instruction:
                    fault = self.per_instruction.pop(0)
                    if fault:
                        self.rules.append(Rule(fault, path="pull-object", budget=1))
                        self.armed.append(fault)

    def _pick(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.fired < rule.budget and rule.path in path and self._rng.random() < rule.share:
                    rule.fired += 1
                    return rule
        return None

    @staticmethod
    def _rewrite(action: str, ctype: str, content: bytes) -> tuple[str, bytes]:
        if action == "content-type":
            return "application/json", b'{"hello": "world"}'
        if action == "truncate":
            return ctype, content[: max(1, len(content) // 2)]
        if action in ("corrupt-object", "oversize-object"):
            msg = pb.PullObjectResponse.FromString(content)
            if not msg.object_available:
                return ctype, content
            if action == "corrupt-object":
                msg.object_content = msg.object_content[:-1] + bytes([msg.object_content[-1] ^ 1])
            else:
                msg.object_content = msg.object_content + b"\0" * (6 * 1024 * 1024)
            return ctype, msg.SerializeToString()
        return ctype, content

    def _unfire(self, rule: Rule) -> None:
        with self._lock:
            rule.fired -= 1

    def fired(self, action: str) -> int:
        with self._lock:
            return sum(r.fired for r in self.rules if r.action == action)

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
