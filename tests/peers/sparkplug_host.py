"""A Sparkplug B host application for the tests, built on pysparkplug (an independent
implementation of the topics and payloads) and paho-mqtt.

It subscribes to `spBv1.0/#` on the broker at 127.0.0.1:PORT, decodes every message with
pysparkplug (data messages against the birth they belong to, so aliases resolve to names and
types) and prints one JSON line per message on stdout:

    {"topic": ..., "type": "DDATA", "group": ..., "edge": ..., "device": ..., "seq": 3,
     "timestamp": ..., "retain": false,
     "metrics": [{"name": ..., "alias": ..., "datatype": "DOUBLE", "value": ...,
                  "is_null": false, "is_historical": false, "properties": {"engUnit": "V"},
                  "named": false}]}

(NDEATH lines carry the bdSeq metric; STATE lines "online". "named" says whether the metric
itself carried its name, rather than only an alias that pysparkplug resolved against the birth.
Metric properties and "named" are read from pysparkplug's own protobuf classes, which its Metric
type does not expose.) A message it cannot
decode is printed as {"type": "ERROR", "topic": ..., "error": ...}.

Commands, one JSON object per line on stdin; each prints {"type": "SENT", "op": ...} once the
broker acknowledged it:

    {"op": "state", "host": "h", "online": true}         retained STATE (Sparkplug 3.0 JSON)
    {"op": "rebirth", "group": "g", "edge": "e"}          NCMD Node Control/Rebirth = true
    {"op": "dcmd", "group": "g", "edge": "e", "device": "d", "name": "m",
     "datatype": "DOUBLE", "value": 1.5}                  DCMD writing one metric by name

Prints READY once subscribed.
"""

import argparse
import json
import sys
import threading

import paho.mqtt.client as paho
import pysparkplug as sp
from pysparkplug._protobuf import Payload as PbPayload

births = {}
out_lock = threading.Lock()


def emit(obj):
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def prop_value(v):
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def raw_metrics(raw):
    """Per metric index: (its properties as a dict, whether the metric itself carried a name),
    from the raw protobuf."""
    pb = PbPayload.FromString(raw)
    res = []
    for m in pb.metrics:
        props = {}
        if m.HasField("properties"):
            p = m.properties
            props = {k: prop_value(v) for k, v in zip(p.keys, p.values)}
        res.append((props, m.HasField("name")))
    return res


def metric_json(m, raw):
    props, named = raw
    value = m.value
    if isinstance(value, bytes):
        value = value.hex()
    return {
        "name": m.name,
        "alias": m.alias,
        "datatype": m.datatype.name,
        "value": value,
        "timestamp": m.timestamp,
        "is_null": m.is_null,
        "is_historical": m.is_historical,
        "properties": props,
        "named": named,
    }


def on_message(client, userdata, msg):
    try:
        topic = sp.Topic.from_str(msg.topic)
        mtype = topic.message_type
        line = {
            "topic": msg.topic,
            "type": str(mtype),
            "group": topic.group_id,
            "edge": topic.edge_node_id,
            "device": topic.device_id,
            "retain": bool(msg.retain),
        }
        if mtype == sp.MessageType.STATE:
            state = sp.State.decode(msg.payload)
            line["online"] = state.online
            line["timestamp"] = state.timestamp
            emit(line)
            return
        key = (topic.group_id, topic.edge_node_id, topic.device_id)
        birth = None
        if mtype in (sp.MessageType.DDATA, sp.MessageType.DCMD):
            birth = births.get(key)
        elif mtype in (sp.MessageType.NDATA, sp.MessageType.NCMD):
            birth = births.get((topic.group_id, topic.edge_node_id, None))
        payload = mtype.payload.decode(msg.payload, birth=birth)
        if mtype in (sp.MessageType.NBIRTH, sp.MessageType.DBIRTH):
            births[key] = payload
        props = raw_metrics(msg.payload)
        if mtype == sp.MessageType.NDEATH:
            line["metrics"] = [metric_json(payload.bd_seq_metric, props[0])]
        elif mtype == sp.MessageType.DDEATH:
            line["seq"] = payload.seq
            line["timestamp"] = payload.timestamp
            line["metrics"] = []
        else:
            line["seq"] = getattr(payload, "seq", None)  # commands have none
            line["timestamp"] = payload.timestamp
            line["metrics"] = [
                metric_json(m, p) for m, p in zip(payload.metrics, props)
            ]
        emit(line)
    except Exception as e:  # noqa: BLE001 - every failure is a line the test sees
        emit({"type": "ERROR", "topic": msg.topic, "error": repr(e)})


def now_ms():
    return sp.get_current_timestamp()


def command(client, cmd):
    op = cmd["op"]
    if op == "state":
        topic = str(sp.Topic(message_type=sp.MessageType.STATE, sparkplug_host_id=cmd["host"]))
        payload = sp.State(timestamp=now_ms(), online=cmd["online"]).encode()
        info = client.publish(topic, payload, qos=1, retain=True)
    elif op == "rebirth":
        topic = str(sp.Topic(group_id=cmd["group"], message_type=sp.MessageType.NCMD,
                             edge_node_id=cmd["edge"]))
        metric = sp.Metric(timestamp=now_ms(), name="Node Control/Rebirth",
                           datatype=sp.DataType.BOOLEAN, value=True)
        payload = sp.NCmd(timestamp=now_ms(), metrics=(metric,)).encode(include_dtypes=True)
        info = client.publish(topic, payload, qos=1)
    elif op == "dcmd":
        topic = str(sp.Topic(group_id=cmd["group"], message_type=sp.MessageType.DCMD,
                             edge_node_id=cmd["edge"], device_id=cmd["device"]))
        metric = sp.Metric(timestamp=now_ms(), name=cmd["name"],
                           datatype=sp.DataType[cmd["datatype"]], value=cmd["value"])
        payload = sp.DCmd(timestamp=now_ms(), metrics=(metric,)).encode(include_dtypes=True)
        info = client.publish(topic, payload, qos=1)
    else:
        emit({"type": "ERROR", "error": f"unknown op {op}"})
        return
    info.wait_for_publish(timeout=10)
    emit({"type": "SENT", "op": op})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    client = paho.Client(client_id="sparkplug-test-host", clean_session=True)
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc: c.subscribe("spBv1.0/#", qos=1)
    client.on_subscribe = lambda c, u, mid, q: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit("not subscribed within 10 s")
    emit({"type": "READY"})
    for line in sys.stdin:
        line = line.strip()
        if line:
            command(client, json.loads(line))
    client.loop_stop()


if __name__ == "__main__":
    main()
