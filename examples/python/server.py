"""A recluster worker in Python: take the socket recluster passes as fd 3,
say READY=1 on NOTIFY_SOCKET, and drain on SIGTERM."""
import http.server
import os
import signal
import socket
import socketserver
import threading

WORKER_ID = os.environ.get("WORKER_ID")
GEN = os.environ.get("RECLUSTER_GENERATION")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"{os.environ.get('GREETING', 'hello')} from python worker {WORKER_ID} (generation {GEN}, pid {os.getpid()})\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight


def notify(message: bytes) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if addr:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.send(message)


def main() -> None:
    # LISTEN_PID says the sockets are for this very process (systemd's rule).
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        raise SystemExit(f"no socket from recluster (LISTEN_PID={os.environ.get('LISTEN_PID')}, pid {os.getpid()})")
    listener = socket.socket(fileno=3)  # LISTEN_FDS: recluster's socket
    # Non-blocking: every worker waits in select() and races to accept; the
    # losers must get EAGAIN, not sleep in accept() where the stop signal
    # cannot end serve_forever until another connection comes.
    listener.setblocking(False)
    server = Server(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket = listener

    def on_term(signum, frame):
        # shutdown() ends serve_forever; it must run on another thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    notify(b"READY=1")
    print(f"python worker {WORKER_ID} ready", flush=True)
    server.serve_forever()
    # close(), never socket.shutdown(): the socket is shared with the other
    # workers; then wait for the requests already accepted.
    server.server_close()


if __name__ == "__main__":
    main()
