"""A stand-in for ``vllm.entrypoints.openai.api_server``: same arguments, the endpoints the
server backend and the training rollouts (``/v1/completions`` with token ids) use, every
request body appended to $FAKE_VLLM_REQUESTS, and a death on cue ($FAKE_VLLM_DIE_AFTER
completions) to test what a run does when its server dies. In dev mode
(VLLM_SERVER_DEV_MODE=1) it also takes ``reload_weights`` and ``reset_prefix_cache``, logging
whether the weights it was pointed at exist. $FAKE_VLLM_NEVER_READY: /health never answers 200."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
args, _ = parser.parse_known_args()
DIE_AFTER = int(os.environ.get("FAKE_VLLM_DIE_AFTER", "0"))
LOG = os.environ["FAKE_VLLM_REQUESTS"]
lock = threading.Lock()
served = 0
# what it was started with, for the tests to read in the server's log
print(
    "fake vllm started",
    json.dumps(
        {
            "argv": sys.argv[1:],
            "reserved": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU"),
            "dev_mode": os.environ.get("VLLM_SERVER_DEV_MODE"),
        }
    ),
    flush=True,
)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            if os.environ.get("FAKE_VLLM_NEVER_READY"):
                self.send_error(503)
            else:
                self._send({})
        elif self.path == "/v1/models":
            self._send({"data": [{"id": args.model}]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        global served
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        if self.path in ("/collective_rpc", "/reset_prefix_cache"):
            self._dev(body)
            return
        with lock:
            served += 1
            if DIE_AFTER and served > DIE_AFTER:
                print("fake engine died", flush=True)
                os._exit(17)
            with open(LOG, "a") as out:
                out.write(json.dumps(body) + "\n")
        text = "The answer is \\boxed{4}."
        if self.path == "/v1/completions":  # the training rollouts: token ids in and out
            ids = list(range(10, 10 + min(3, body["max_tokens"])))
            choice = {"token_ids": ids, "logprobs": {"token_logprobs": [-1.0] * len(ids)}}
            self._send({"choices": [{**choice, "text": "", "finish_reason": "length"}]})
            return
        self._send(
            {
                "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 9},
            }
        )

    def _dev(self, body: dict | None) -> None:
        if os.environ.get("VLLM_SERVER_DEV_MODE") != "1":
            self.send_error(404)
            return
        entry = {"endpoint": self.path, "body": body}
        if body and body.get("method") == "reload_weights":
            folder = body["kwargs"]["weights_path"]
            entry["weights"] = os.path.isfile(os.path.join(folder, "model.safetensors"))
        with lock, open(LOG, "a") as out:
            out.write(json.dumps(entry) + "\n")
        self._send({"results": [None]} if self.path == "/collective_rpc" else {"success": True})


if os.environ.get("FAKE_VLLM_FAIL_START"):
    print("fake vLLM server: no such model", flush=True)
    raise SystemExit(3)
print("fake vLLM server up", flush=True)
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
