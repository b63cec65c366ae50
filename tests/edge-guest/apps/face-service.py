#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Face detection service of the `face` edge guest application.

OpenCV's Haar cascade (from Debian's opencv-data) stays loaded; each request
is one line naming an image file in the guest, and the answer one line of
JSON: the faces found (x, y, width, height) and the time taken.
"""

import json
import socketserver
import sys
import time

import cv2

CASCADE = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"
PORT = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 8001

detector = cv2.CascadeClassifier(CASCADE)
if detector.empty():
    sys.exit(f"face-service: cannot load {CASCADE}")


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            path = line.decode().strip()
            start = time.monotonic()
            image = cv2.imread(path)
            if image is None:
                answer = {"error": f"cannot read {path}"}
            else:
                gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
                faces = detector.detectMultiScale(gray, scaleFactor=1.1,
                                                  minNeighbors=5)
                answer = {"faces": [list(map(int, f)) for f in faces],
                          "ms": round((time.monotonic() - start) * 1000)}
            self.wfile.write((json.dumps(answer) + "\n").encode())


socketserver.TCPServer.allow_reuse_address = True
# Every address: a synthesis forwards this port to the VM's NIC (the VM's
# user-mode network is restricted, so nothing else reaches it).
with socketserver.TCPServer(("0.0.0.0", PORT), Handler) as server:
    server.serve_forever()
