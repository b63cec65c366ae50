#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""OCR service of the `ocr` edge guest application.

Tesseract (Debian's libtesseract5 with the English model) stays initialised
through its C API; each request is one line naming an image file in the
guest, and the answer one line of JSON: the words recognised, the first
line of text and the time taken.
"""

import ctypes
import json
import socketserver
import sys
import time

PORT = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 8002

tess = ctypes.CDLL("libtesseract.so.5")
lept = ctypes.CDLL("liblept.so.5")
tess.TessBaseAPICreate.restype = ctypes.c_void_p
tess.TessBaseAPIInit3.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.c_char_p]
tess.TessBaseAPISetImage2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
tess.TessBaseAPIGetUTF8Text.argtypes = [ctypes.c_void_p]
tess.TessBaseAPIGetUTF8Text.restype = ctypes.c_void_p
tess.TessDeleteText.argtypes = [ctypes.c_void_p]
lept.pixRead.argtypes = [ctypes.c_char_p]
lept.pixRead.restype = ctypes.c_void_p
lept.pixDestroy.argtypes = [ctypes.POINTER(ctypes.c_void_p)]

api = tess.TessBaseAPICreate()
if tess.TessBaseAPIInit3(api, None, b"eng") != 0:
    sys.exit("ocr-service: cannot initialise tesseract with 'eng'")


def recognise(path):
    pix = ctypes.c_void_p(lept.pixRead(path.encode()))
    if not pix.value:
        return None
    try:
        tess.TessBaseAPISetImage2(api, pix)
        raw = tess.TessBaseAPIGetUTF8Text(api)
        text = ctypes.string_at(raw).decode(errors="replace")
        tess.TessDeleteText(raw)
        return text
    finally:
        lept.pixDestroy(ctypes.byref(pix))


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            path = line.decode().strip()
            start = time.monotonic()
            text = recognise(path)
            if text is None:
                answer = {"error": f"cannot read {path}"}
            else:
                lines = [l for l in text.splitlines() if l.strip()]
                answer = {"words": len(text.split()),
                          "first": lines[0] if lines else "",
                          "ms": round((time.monotonic() - start) * 1000)}
            self.wfile.write((json.dumps(answer) + "\n").encode())


socketserver.TCPServer.allow_reuse_address = True
# Every address: a synthesis forwards this port to the VM's NIC (the VM's
# user-mode network is restricted, so nothing else reaches it).
with socketserver.TCPServer(("0.0.0.0", PORT), Handler) as server:
    server.serve_forever()
