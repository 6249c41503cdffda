#!/usr/bin/env python3
"""A misbehaving Modbus TCP peer for osgate's robustness tests (standard library only).

Answers FC03/FC04 reads with register value = address, except that the first `--bad N`
requests it receives get the misbehaviour chosen with `--mode`:

  wrong_tid   the answer carries another transaction id
  wrong_unit  the answer carries another unit id
  short       half an answer, then nothing on this connection
  garbled     the right header around a PDU of junk (unknown function code, wrong byte count)
  silent      no answer at all on this connection

After the N bad answers it behaves, so a test can check that the client recovers. Prints
"READY <port>" when listening and "BAD <n>" / "GOOD <n>" on stdout per request.
"""

import argparse
import socket
import struct
import sys
import threading


def serve_conn(conn, state, args):
    buf = b""
    muted = False
    with conn:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 7:
                tid, proto, length, unit = struct.unpack(">HHHB", buf[:7])
                if len(buf) < 6 + length:
                    break
                pdu = buf[7 : 6 + length]
                buf = buf[6 + length :]
                with state["lock"]:
                    state["n"] += 1
                    bad = state["n"] <= args.bad
                    n = state["n"]
                print(("BAD" if bad else "GOOD"), n, flush=True)
                if muted:
                    continue
                fc = pdu[0]
                if fc in (3, 4) and len(pdu) >= 5:
                    addr, count = struct.unpack(">HH", pdu[1:5])
                    regs = [(addr + i) & 0xFFFF for i in range(count)]
                    body = bytes([fc, 2 * count]) + b"".join(struct.pack(">H", r) for r in regs)
                else:
                    body = bytes([fc | 0x80, 1])
                if bad:
                    if args.mode == "wrong_tid":
                        tid = (tid + 1) & 0xFFFF
                    elif args.mode == "wrong_unit":
                        unit = (unit + 1) & 0xFF
                    elif args.mode == "garbled":
                        body = bytes([0x77, 0xFF, 0x01])
                    elif args.mode in ("short", "silent"):
                        if args.mode == "short":
                            frame = struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
                            conn.sendall(frame[: len(frame) // 2])
                        muted = True
                        continue
                frame = struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
                try:
                    conn.sendall(frame)
                except OSError:
                    return


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument(
        "--mode", required=True, choices=["wrong_tid", "wrong_unit", "short", "garbled", "silent"]
    )
    p.add_argument("--bad", type=int, default=3)
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    state = {"n": 0, "lock": threading.Lock()}
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_conn, args=(conn, state, args), daemon=True).start()


if __name__ == "__main__":
    main()
