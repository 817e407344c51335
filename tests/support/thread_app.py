"""A WSGI app that answers with the id of the thread serving the request (for the gunicorn worker tests)."""

import threading
import time


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(0.5)  # a long call (an LLM answer, say)
    body = str(threading.get_ident()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
