# SPDX-License-Identifier: GPL-2.0-or-later
"""Forwarded VM ports on an address other than loopback.

QEMU's user-mode network (slirp) shows a forwarded connection to the guest
as coming from its own host address only when the peer is on loopback; a
peer elsewhere is shown as itself, and a guest with restrict=on (cut off
from the host's networks, as a cloudlet's guests should be) cannot answer
it. So QEMU forwards from 127.0.0.1 and this relay carries each
connection from the cloudlet's public address to there.
"""

import socket
import threading

CHUNK = 65536


def _pipe(src, dst):
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class PortRelay:
    """Listens on (address, port: any if 0) and relays to
    127.0.0.1:target."""

    def __init__(self, address, target, port=0):
        self.target = target
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((address, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return              # closed
            threading.Thread(target=self._relay, args=(client,),
                             daemon=True).start()

    def _relay(self, client):
        try:
            vm = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        back = threading.Thread(target=_pipe, args=(vm, client), daemon=True)
        back.start()
        _pipe(client, vm)
        back.join()
        client.close()
        vm.close()

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)   # ends the accept()
        except OSError:
            pass
        self._sock.close()
