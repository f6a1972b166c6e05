"""A small OpenAI-compatible upstream for the gateway tests and benchmark (run as its own process).

``python tests/openai_upstream.py --record FILE`` listens on a free 127.0.0.1
port, prints ``listening on http://127.0.0.1:PORT`` and appends every request
it receives to FILE as one JSON line (``{"path", "body"}``), so a test can see
exactly what reached the model. Behaviour by the requested model name:

* ``fail500``: always HTTP 500 (the gateway must fall back);
* ``echo400``: HTTP 400 whose message quotes the messages sent (as providers' validation errors do);
* ``leaky``: answers with a payment card number split across stream chunks;
* ``mailer``: answers with an email address split across stream chunks;
* ``longmail``: the same inside a long answer (the address falls where streamed text is being released);
* ``refuser``: answers with a refusal (low response quality);
* ``rude``: answers with an insult (high toxicity);
* ``rudelong``: the insult, then 200 characters of civil text (a stream releases the insult unless screened);
* ``slow``: answers after 3 seconds (the gateway's timeout must fire first);
* ``cardindigits``: a card number at the end of a long run of digit groups, in two chunks;
* ``toolcaller``: answers "Done." with a tool call whose arguments hold a payment card number;
* ``twochoices``: answers two choices, the second with an email address;
* ``logprobber``: answers with an email address and logprobs that spell it token by token (and in bytes);
* ``speaker``: answers with audio whose transcript holds an email address;
* ``garbled``: answers 200 with a body that is not JSON (the work was done, the answer lost);
* ``refunder``: reports a usage of -1,000,000 tokens (which would give budget back if charged);
* ``nanusage``: reports a usage of ``NaN`` tokens (not JSON, though Python's json writes and reads it);
* ``underreport``: reports a total of 1 token beside its prompt and completion tokens;
* ``dribble``: streams 60 words 0.2 s apart (12 s: a call still in flight when the gateway is stopped);
* ``sluggish``: answers after 12 seconds (the same for a whole answer);
* ``deepjson``: answers 200 with JSON nested 100,000 levels deep (the work was done, the answer unreadable);
* anything else: a fixed answer; ``completion_tokens`` = ``max_tokens`` (default 16),
  so tests can make calls of a known size.

Streams (``stream: true``) send one chunk per word and the usage in a last
chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
Stops by itself after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CARD_ANSWER = ["Your", " card", " is", " 4111", " 1111", " 1111", " 1111", " thanks"]
MAIL_ANSWER = ["Reach", " me", " at", " jane", ".doe@exa", "mple.com", " soon"]
REFUSAL_ANSWER = ["I'm", " sorry,", " I", " can't", " help", " with", " that."]
RUDE_ANSWER = ["You", " are", " a", " stupid", " idiot", " and", " I", " hate", " you."]
RUDE_LONG_ANSWER = RUDE_ANSWER + [" Anyway,", " here", " is", " the", " summary", " of", " the", " invoice"] * 5
DIGITS_TEXT = ("Ref 99 60 26 24 13 74 02 11 96 41 51 30 76 75 98 56 96 30 49 74 11 37 02 56 71 27 55 50 36 89 56 "
               "44 87 75 35 5555 5555 5555 4444 is the card on file. " + "y" * 130)
CARD_IN_DIGITS_ANSWER = [DIGITS_TEXT[:114], DIGITS_TEXT[114:]]  # cut where the card's first groups are released
LONG_ANSWER = [f" word{i}" for i in range(40)] + [" jane", ".doe@exa", "mple.com"] + [f" tail{i}" for i in range(40)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record: str | None = None
    lock = threading.Lock()

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.record:
            with self.lock, open(self.record, "a", encoding="utf-8") as out:
                out.write(json.dumps({"path": self.path, "body": body}) + "\n")
        model = body.get("model", "")
        if model == "fail500":
            self._send(500, b'{"error": {"message": "upstream exploded", "type": "server_error"}}')
            return
        if model == "echo400":
            quoted = json.dumps(body.get("messages"))[:150]
            self._send(400, json.dumps({"error": {"message": f"Invalid 'messages': {quoted}",
                                                  "type": "invalid_request_error"}}).encode())
            return
        if model == "slow":
            time.sleep(3)
        if model == "sluggish":
            time.sleep(12)
        if model == "deepjson":
            self._send(200, b"[" * 100_000 + b"]" * 100_000)
            return
        if model == "garbled":
            self._send(200, b"<html>upstream proxy error</html>", "text/html")
            return
        if self.path.endswith("/embeddings"):
            inputs = body.get("input")
            inputs = [inputs] if isinstance(inputs, str) else inputs
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
            tokens = sum(len(t) // 4 + 1 for t in inputs) * (100 if model == "longmail" else 1)  # a wordy count
            self._send(200, json.dumps({"object": "list", "data": data, "model": model,
                                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).encode())
            return
        completion = int(body.get("max_tokens") or 16)
        words = {"leaky": CARD_ANSWER, "mailer": MAIL_ANSWER, "longmail": LONG_ANSWER, "refuser": REFUSAL_ANSWER,
                 "rude": RUDE_ANSWER, "rudelong": RUDE_LONG_ANSWER, "cardindigits": CARD_IN_DIGITS_ANSWER,
                 "dribble": [f" word{i}" for i in range(60)],
                 }.get(model, ["Hello", " from", " the", " upstream", "."])
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1 for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": {"refunder": -1_000_000, "nanusage": float("nan"), "underreport": 1}.get(model,
                                                                                     prompt_tokens + completion)}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

            def event(data: object) -> None:
                raw = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

            base = {"id": "up-1", "object": "chat.completion.chunk", "created": 0, "model": model}
            for word in words:
                if model == "dribble":
                    time.sleep(0.2)
                event({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                event({**base, "choices": [], "usage": usage})
            event(b"[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            return
        answer = {"id": "up-1", "object": "chat.completion", "created": 0, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                               "finish_reason": "stop"}], "usage": usage}
        if model == "toolcaller":
            answer["choices"][0]["message"] = {"role": "assistant", "content": "Done.", "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "pay", "arguments": json.dumps({"card": "4111 1111 1111 1111"})}}]}
        if model == "logprobber":
            answer["choices"][0]["message"]["content"] = "".join(MAIL_ANSWER)
            answer["choices"][0]["logprobs"] = {"content": [
                {"token": w, "logprob": -0.1, "bytes": list(w.encode()), "top_logprobs": []} for w in MAIL_ANSWER]}
        if model == "speaker":
            answer["choices"][0]["message"] = {"role": "assistant", "content": None, "audio": {
                "id": "audio-1", "expires_at": 0, "data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA",
                "transcript": "".join(MAIL_ANSWER)}}
        if model == "twochoices":
            answer["choices"].append({"index": 1, "message": {"role": "assistant",
                                                              "content": "Or write to jane.doe@example.com"},
                                      "finish_reason": "stop"})
        self._send(200, json.dumps(answer).encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=600)
    args = parser.parse_args()
    Handler.record = args.record
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]} (pid {os.getpid()})", flush=True)
    timer = threading.Timer(args.lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
