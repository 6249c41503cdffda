#!/usr/bin/env python3
"""An independent Modbus peer for osgate's integration tests, built on pymodbus (3.16).

Values are encoded with pymodbus's own conversion helper
(`ModbusClientMixin.convert_to_registers`), so osgate's decoder is checked against someone
else's encoding. pymodbus only knows the word order ("big"/"little"); the byte swap of the
BADC and DCBA orders is applied here on top, register by register:

    ABCD = word_order big             CDAB = word_order little
    BADC = big + bytes swapped        DCBA = little + bytes swapped

Strings are character sequences: the word order never applies to them; BADC/DCBA swap the two
characters of each register.

Usage:
  modbus_peer.py serve --spec FILE|JSON (--tcp H:P | --rtu-over-tcp H:P | --serial PATH)
                       [--baud 9600] [--parity N|E|O] [--stop-bits 1] [--data-bits 8]
      Prints "READY <port>" (TCP) or "READY <path>" (serial) once it serves.
  modbus_peer.py read (--tcp H:P | --rtu-over-tcp H:P) --unit U --table T --address A
                      [--type T] [--order O] [--length N] [--bit B]
      Reads one value with pymodbus's client and prints {"value": ...} as JSON.

Spec (JSON):
  {"units": {"1": {"size": 200,
                   "values": [{"table": "holding", "address": 0, "type": "f32",
                               "order": "CDAB", "value": 1.5},
                              {"table": "holding", "address": 9, "type": "bool", "bit": 3,
                               "value": true},
                              {"table": "coil", "address": 2, "value": true},
                              {"table": "holding", "address": 20, "type": "string",
                               "length": 4, "value": "osgate"}]}},
   "silent": [3]}
`size` is the number of registers and bits per table (reads past it get IllegalDataAddress).
Unit ids in "silent", and unit ids not in "units", never answer (like a dead slave).
"""

import argparse
import asyncio
import json
import logging
import sys

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

DT = ModbusClientMixin.DATATYPE
TYPES = {
    "u16": DT.UINT16,
    "i16": DT.INT16,
    "u32": DT.UINT32,
    "i32": DT.INT32,
    "u64": DT.UINT64,
    "i64": DT.INT64,
    "f32": DT.FLOAT32,
    "f64": DT.FLOAT64,
    "string": DT.STRING,
}
TABLES = {"coil": "co", "discrete": "di", "holding": "hr", "input": "ir"}


def swap(regs):
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


def encode(typ, order, value, length=None):
    """Registers (wire order) for one value, via pymodbus's converter."""
    byte_swap = order in ("BADC", "DCBA")
    if typ == "string":
        regs = ModbusClientMixin.convert_to_registers(value, DT.STRING, word_order="big")
        regs = regs + [0] * max(0, (length or len(regs)) - len(regs))
    else:
        word_order = "little" if order in ("CDAB", "DCBA") else "big"
        regs = ModbusClientMixin.convert_to_registers(value, TYPES[typ], word_order=word_order)
    return swap(regs) if byte_swap else regs


def decode(typ, order, regs):
    if order in ("BADC", "DCBA"):
        regs = swap(regs)
    if typ == "string":
        return ModbusClientMixin.convert_from_registers(regs, DT.STRING, word_order="big")
    word_order = "little" if order in ("CDAB", "DCBA") else "big"
    return ModbusClientMixin.convert_from_registers(regs, TYPES[typ], word_order=word_order)


def build_context(spec):
    devices = {}
    for unit, dev in spec.get("units", {}).items():
        size = int(dev.get("size", 1000))
        tables = {
            "co": [False] * size,
            "di": [False] * size,
            "hr": [0] * size,
            "ir": [0] * size,
        }
        for v in dev.get("values", []):
            t = TABLES[v["table"]]
            addr = int(v["address"])
            typ = v.get("type", "bool")
            order = v.get("order", "ABCD")
            if t in ("co", "di"):
                tables[t][addr] = bool(v["value"])
            elif typ == "bool":
                mask = 1 << int(v["bit"])
                if order in ("BADC", "DCBA"):
                    mask = swap([mask])[0]
                if v["value"]:
                    tables[t][addr] |= mask
                else:
                    tables[t][addr] &= ~mask
            else:
                regs = encode(typ, order, v["value"], v.get("length"))
                tables[t][addr : addr + len(regs)] = regs
        # pymodbus data blocks are 1-based: block address 1 is protocol address 0.
        devices[int(unit)] = ModbusDeviceContext(
            **{k: ModbusSequentialDataBlock(1, vals) for k, vals in tables.items()}
        )
    if not devices:
        raise SystemExit("spec has no units")
    return ModbusServerContext(devices=devices, single=False), set(devices)


def silence(server, answering):
    """Make unit ids outside `answering` time out instead of answering with an exception."""
    ctx = server.context
    get, put = ctx.async_getValues, ctx.async_setValues

    async def get_values(device_id, *args, **kwargs):
        if device_id not in answering:
            raise NoSuchIdException(f"unit {device_id} is silent")
        return await get(device_id, *args, **kwargs)

    async def set_values(device_id, *args, **kwargs):
        if device_id not in answering:
            raise NoSuchIdException(f"unit {device_id} is silent")
        return await put(device_id, *args, **kwargs)

    ctx.async_getValues = get_values
    ctx.async_setValues = set_values


def host_port(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def serve(args):
    spec_text = args.spec
    if not spec_text.lstrip().startswith("{"):
        with open(spec_text, encoding="utf-8") as f:
            spec_text = f.read()
    spec = json.loads(spec_text)
    context, units = build_context(spec)
    answering = units - set(int(u) for u in spec.get("silent", []))
    if args.serial:
        server = ModbusSerialServer(
            context,
            framer=FramerType.RTU,
            port=args.serial,
            baudrate=args.baud,
            parity=args.parity,
            stopbits=args.stop_bits,
            bytesize=args.data_bits,
            ignore_missing_devices=True,
        )
    else:
        addr = args.tcp or args.rtu_over_tcp
        server = ModbusTcpServer(
            context,
            framer=FramerType.SOCKET if args.tcp else FramerType.RTU,
            address=host_port(addr),
            ignore_missing_devices=True,
        )
    silence(server, answering)
    await server.serve_forever(background=True)
    if args.serial:
        print(f"READY {args.serial}", flush=True)
    else:
        port = server.transport.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


async def read(args):
    addr = args.tcp or args.rtu_over_tcp
    host, port = host_port(addr)
    framer = FramerType.SOCKET if args.tcp else FramerType.RTU
    client = AsyncModbusTcpClient(host, port=port, framer=framer, timeout=2, retries=1)
    if not await client.connect():
        raise SystemExit(f"cannot connect to {addr}")
    typ = args.type
    try:
        if args.table in ("coil", "discrete"):
            fn = client.read_coils if args.table == "coil" else client.read_discrete_inputs
            rr = await fn(args.address, count=1, device_id=args.unit)
            value = bool(rr.bits[0])
        else:
            fn = (
                client.read_holding_registers
                if args.table == "holding"
                else client.read_input_registers
            )
            if typ == "bool":
                count = 1
            elif typ == "string":
                count = args.length
            else:
                count = TYPES[typ].value[1]
            rr = await fn(args.address, count=count, device_id=args.unit)
            if rr.isError():
                raise SystemExit(f"exception response: {rr}")
            if typ == "bool":
                reg = rr.registers[0]
                if args.order in ("BADC", "DCBA"):
                    reg = swap([reg])[0]
                value = bool(reg >> args.bit & 1)
            else:
                value = decode(typ, args.order, rr.registers)
    finally:
        client.close()
    print(json.dumps({"value": value}), flush=True)


def main():
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--spec", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp")
    g.add_argument("--rtu-over-tcp")
    g.add_argument("--serial")
    s.add_argument("--baud", type=int, default=9600)
    s.add_argument("--parity", default="N")
    s.add_argument("--stop-bits", type=int, default=1)
    s.add_argument("--data-bits", type=int, default=8)
    r = sub.add_parser("read")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp")
    g.add_argument("--rtu-over-tcp")
    r.add_argument("--unit", type=int, default=1)
    r.add_argument("--table", default="holding")
    r.add_argument("--address", type=int, required=True)
    r.add_argument("--type", default="u16")
    r.add_argument("--order", default="ABCD")
    r.add_argument("--length", type=int, default=1)
    r.add_argument("--bit", type=int, default=0)
    args = p.parse_args()
    try:
        asyncio.run(serve(args) if args.cmd == "serve" else read(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
