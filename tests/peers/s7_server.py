#!/usr/bin/env python3
"""An independent S7 PLC peer for osgate's integration tests and benchmark, built on
python-snap7 (3.3, pure Python: its server speaks ISO-on-TCP and S7comm).

Values are encoded and read back with snap7.util's own setters and getters, so osgate's codec
is checked against someone else's encoding.

Usage:
  s7_server.py serve --spec JSON [--port 0] [--pdu 480] [--slot N] [--deny-putget]
      Serves the areas of the spec on 127.0.0.1; prints "READY <port>" once it serves. Then
      reads commands from stdin, one per line, and answers each with one line:
        get AREA OFFSET TYPE [EXTRA]  ->  VALUE <json>   (EXTRA: the bit of a bool)
        stats                         ->  VALUE {"reads": n, "oversized": n}
      (reads: read-var requests served; oversized: requests or answers beyond the PDU)
      --slot N answers a connection request for another slot (called TSAP) with a COTP
      disconnect, as a CPU does; --deny-putget refuses every read and write with S7 error
      0x8104, as an S7-1200/1500 does when PUT/GET access is not enabled.
  s7_server.py bench --port P --items N --seconds S
      Reads N items (4 bytes at DB1..DBN offset 0) with python-snap7's client for S seconds;
      prints {"reads": .., "items": .., "wall": .., "cpu": ..} as JSON.

Spec (JSON):
  {"areas": {"DB1": 64, "M": 16, "I": 8, "Q": 8, "C": 8, "T": 8},
   "values": [["DB1", 0, "real", 21.5], ["DB1", 6, "bool", true, 3], ["M", 2, "int", -5],
              ["DB1", 10, "string", "osgate", 20], ["C", 2, "raw", "0987"]]}
Areas are sized in bytes (C and T: in counters/timers of 2 bytes). A value is [area, byte
offset (or counter/timer number), type, value, extra]; extra is a bool's bit or a string's
max length. Types: bool, byte, usint, sint, char, word, uint, int, dword, udint, dint, real,
lword, ulint, lint, lreal, string, date (YYYY-MM-DD), time (ms), tod (ms), dt and dtl (ISO
8601), raw (hex bytes).

The server's own bit write stores the data byte over the whole byte; an S7 CPU sets only the
addressed bit, so writes of transport size BIT are handled here as a CPU does.
"""

import argparse
import json
import sys
import threading
import time
from datetime import date, datetime, timedelta

import snap7
import snap7.server as srv
from snap7 import util
from snap7.datatypes import S7Area, S7WordLen
from snap7.type import Area, SrvArea

SRV_AREAS = {"I": SrvArea.PE, "Q": SrvArea.PA, "M": SrvArea.MK, "C": SrvArea.CT, "T": SrvArea.TM}


def area_key(name):
    if name.upper().startswith("DB"):
        return SrvArea.DB, int(name[2:])
    return SRV_AREAS[name.upper()], 0


def put(buf, offset, ty, value, extra):
    setters = {
        "byte": util.set_byte, "usint": util.set_usint, "sint": util.set_sint,
        "char": util.set_char, "word": util.set_word, "uint": util.set_uint,
        "int": util.set_int, "dword": util.set_dword, "udint": util.set_udint,
        "dint": util.set_dint, "real": util.set_real, "lword": util.set_lword,
        "ulint": util.set_ulint, "lint": util.set_lint, "lreal": util.set_lreal,
    }
    if ty in setters:
        setters[ty](buf, offset, value)
    elif ty == "bool":
        util.set_bool(buf, offset, extra, value)
    elif ty == "string":
        util.set_string(buf, offset, value, extra)
    elif ty == "date":
        util.set_date(buf, offset, date.fromisoformat(value))
    elif ty == "time":
        buf[offset:offset + 4] = int(value).to_bytes(4, "big", signed=True)
    elif ty == "tod":
        util.set_tod(buf, offset, timedelta(milliseconds=value))
    elif ty == "dt":
        util.set_dt(buf, offset, datetime.fromisoformat(value))
    elif ty == "dtl":
        util.set_dtl(buf, offset, datetime.fromisoformat(value))
    elif ty == "raw":
        raw = bytes.fromhex(value)
        buf[offset:offset + len(raw)] = raw
    else:
        raise ValueError(f"unknown type {ty}")


def get(buf, offset, ty, extra):
    getters = {
        "byte": util.get_byte, "usint": util.get_usint, "sint": util.get_sint,
        "char": util.get_char, "word": util.get_word, "uint": util.get_uint,
        "int": util.get_int, "dword": util.get_dword, "udint": util.get_udint,
        "dint": util.get_dint, "real": util.get_real, "lword": util.get_lword,
        "ulint": util.get_ulint, "lint": util.get_lint, "lreal": util.get_lreal,
        "string": util.get_string,
    }
    if ty in getters:
        return getters[ty](buf, offset)
    if ty == "bool":
        return util.get_bool(buf, offset, extra)
    if ty == "date":
        return util.get_date(buf, offset).isoformat()
    if ty == "time":
        return int.from_bytes(buf[offset:offset + 4], "big", signed=True)
    if ty == "tod":
        return int(util.get_tod(buf, offset) / timedelta(milliseconds=1))
    if ty == "dt":
        return util.get_date_time_object(buf, offset).isoformat(timespec="milliseconds")
    if ty == "dtl":
        return util.get_dtl(buf, offset).isoformat(timespec="microseconds")
    if ty == "raw":
        return bytes(buf[offset:offset + extra]).hex()
    raise ValueError(f"unknown type {ty}")


class Plc(srv.Server):
    """The python-snap7 server with a CPU's bit writes, optional PUT/GET refusal, and a PDU
    size it grants and enforces (the server itself never checks one)."""

    deny_putget = False
    pdu = 480
    reads = 0
    oversized = 0

    def _handle_setup_communication(self, request):
        request["parameters"]["pdu_length"] = min(request["parameters"].get("pdu_length", 480), self.pdu)
        return super()._handle_setup_communication(request)

    def _process_request(self, request_data, client_address):
        if len(request_data) > self.pdu:
            self.oversized += 1
        if len(request_data) > 1 and request_data[1] == 1 and request_data[10:11] == b"\x04":
            self.reads += 1
        answer = super()._process_request(request_data, client_address)
        if answer is not None and len(answer) > self.pdu:
            self.oversized += 1
        return answer

    def _handle_read_area(self, request, client_address):
        if self.deny_putget:
            return self._build_error_response(request, 0x8104)
        return super()._handle_read_area(request, client_address)

    def _handle_write_area(self, request, client_address):
        if self.deny_putget:
            return self._build_error_response(request, 0x8104)
        spec = (request.get("parameters") or {}).get("address_spec") or {}
        if spec.get("word_len") != S7WordLen.BIT:
            return super()._handle_write_area(request, client_address)
        addr = int.from_bytes(request["raw_parameters"][11:14], "big")
        byte, bit = addr // 8, addr % 8
        key = (spec["area"], spec["db_number"])
        data = (request.get("data") or {}).get("data", b"")
        if key not in self.memory_areas or byte >= len(self.memory_areas[key]) or not data:
            return self._build_error_response(request, 0x8404)
        with self.area_locks[key]:
            mem = self.memory_areas[key]
            if data[0] & 1:
                mem[byte] |= 1 << bit
            else:
                mem[byte] &= ~(1 << bit) & 0xFF
        header = bytes([0x32, 0x03, 0, 0]) + request["sequence"].to_bytes(2, "big")
        return header + bytes([0, 2, 0, 1, 0, 0, 0x05, 0x01, 0xFF])


def only_slot(slot):
    """Makes the ISO layer refuse connection requests for another slot with a disconnect."""
    base = srv.ServerISOConnection._parse_cotp_cr

    def parse(self, data):
        if not base(self, data):
            return False
        called = self.called_tsap or b"\x00\x00"
        if (called[-1] & 0x1F) != slot:
            dr = bytes([6, 0x80]) + self.dst_ref.to_bytes(2, "big") + b"\x00\x01\x00"
            self.socket.sendall(self._build_tpkt(dr))
            return False
        return True

    srv.ServerISOConnection._parse_cotp_cr = parse


def serve(args):
    spec = json.loads(args.spec)
    if args.slot is not None:
        only_slot(args.slot)
    plc = Plc(log=False)
    plc.deny_putget = args.deny_putget
    plc.pdu = args.pdu
    plc.host = "127.0.0.1"
    mem = {}
    for name, size in spec.get("areas", {}).items():
        kind, index = area_key(name)
        n = size * 2 if kind in (SrvArea.CT, SrvArea.TM) else size
        mem[name.upper()] = bytearray(n)
    for v in spec.get("values", []):
        name, offset, ty, value = v[0], v[1], v[2], v[3]
        extra = v[4] if len(v) > 4 else (254 if ty == "string" else 0)
        if name.upper() in ("C", "T"):
            offset *= 2
        put(mem[name.upper()], offset, ty, value, extra)
    for name, buf in mem.items():
        kind, index = area_key(name)
        plc.register_area(kind, index, buf)
    plc.start(tcp_port=args.port)
    port = plc.server_socket.getsockname()[1]
    print(f"READY {port}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "stats":
            print("VALUE " + json.dumps({"reads": plc.reads, "oversized": plc.oversized}), flush=True)
        elif parts[0] == "get":
            name, offset, ty = parts[1].upper(), int(parts[2]), parts[3]
            extra = int(parts[4]) if len(parts) > 4 else 0
            kind, index = area_key(name)
            key = (S7Area[{SrvArea.PE: "PE", SrvArea.PA: "PA", SrvArea.MK: "MK",
                           SrvArea.DB: "DB", SrvArea.CT: "CT", SrvArea.TM: "TM"}[kind]], index)
            with plc.area_locks[key]:
                value = get(plc.memory_areas[key], offset, ty, extra)
            print("VALUE " + json.dumps(value), flush=True)
    plc.stop()


def bench(args):
    client = snap7.Client()
    client.connect("127.0.0.1", 0, 1, args.port)
    items = [{"area": Area.DB, "db_number": i + 1, "start": 0, "size": 4} for i in range(args.items)]
    chunks = [items[i:i + client.MAX_VARS] for i in range(0, len(items), client.MAX_VARS)]
    reads = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        for chunk in chunks:
            code, data = client.read_multi_vars(chunk)
            assert code == 0 and len(data) == len(chunk)
        reads += 1
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    client.disconnect()
    print(json.dumps({"reads": reads, "items": reads * args.items, "wall": wall, "cpu": cpu}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--spec", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--pdu", type=int, default=480)
    s.add_argument("--slot", type=int)
    s.add_argument("--deny-putget", action="store_true")
    b = sub.add_parser("bench")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--items", type=int, default=100)
    b.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    threading.current_thread().name = "s7-peer"
    serve(args) if args.cmd == "serve" else bench(args)


if __name__ == "__main__":
    main()
