"""What the test servers share: print the port they listen on, serve until stopped."""

import sys
import threading


def serve(server, exit_on_stdin_eof=True):
    """Print the server's port (the test reads it), then serve; with exit_on_stdin_eof,
    stop once stdin closes, so that a server outlives no test that died."""
    server.daemon_threads = True
    print(server.server_address[1], flush=True)

    def watch_stdin():
        while sys.stdin.buffer.read(4096):
            pass
        server.shutdown()

    if exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()
