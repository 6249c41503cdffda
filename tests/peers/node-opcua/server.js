// The node-opcua test peer: an OPC-UA server of a second, independent stack (see README.md).
//
// Usage: node server.js <port> [--secure]
// Listens on 127.0.0.1:<port> only and advertises opc.tcp://localhost:<port>/osgate/. With
// --secure it also offers Basic256Sha256 Sign and SignAndEncrypt, with a self-signed
// certificate (made once in ./pki) whose subjectAltName lists DNS "localhost" first, IP
// 127.0.0.1, then the application URI last: node-opcua's own order. Client certificates are
// accepted. Prints "node-opcua server listening on <url>" when ready, and "write <Name> <json>"
// for every value a client writes.
"use strict";

const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    Variant,
    DataType,
    StatusCodes,
    nodesets,
    SecurityPolicy,
    MessageSecurityMode,
} = require("node-opcua");

const NS_URI = "urn:osgate:test-peer";
const APP_URI = "urn:osgate:node-opcua-peer";

const port = Number(process.argv[2]);
const secure = process.argv.includes("--secure");
if (!Number.isInteger(port) || port <= 0) {
    console.error("usage: node server.js <port> [--secure]");
    process.exit(2);
}

async function main() {
    const pki = path.resolve("pki");
    const certificateManager = new OPCUACertificateManager({
        rootFolder: pki,
        automaticallyAcceptUnknownCertificate: true,
    });
    await certificateManager.initialize();
    const certificateFile = path.join(pki, "own/certs/server.pem");
    const privateKeyFile = certificateManager.privateKey;
    if (secure) {
        await certificateManager.createSelfSignedCertificate({
            outputFile: certificateFile,
            applicationUri: APP_URI,
            subject: "/CN=osgate-node-opcua-peer",
            dns: ["localhost"],
            ip: ["127.0.0.1"],
            startDate: new Date(Date.now() - 3600 * 1000),
            validity: 30,
        });
    }
    const server = new OPCUAServer({
        port,
        host: "127.0.0.1",
        hostname: "localhost",
        resourcePath: "/osgate/",
        nodeset_filename: [nodesets.standard],
        serverInfo: { applicationUri: APP_URI, productUri: "urn:osgate:node-opcua-peer" },
        buildInfo: { productName: "osgate node-opcua test peer" },
        serverCertificateManager: certificateManager,
        certificateFile: secure ? certificateFile : undefined,
        privateKeyFile: secure ? privateKeyFile : undefined,
        securityPolicies: secure ? [SecurityPolicy.None, SecurityPolicy.Basic256Sha256] : [SecurityPolicy.None],
        securityModes: secure
            ? [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt]
            : [MessageSecurityMode.None],
        allowAnonymous: true,
        disableDiscovery: true,
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(NS_URI);
    const plant = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Plant", nodeId: "s=Plant" });

    // A variable whose value the peer sets; `writable` ones log what clients write.
    const variable = (name, dataType, value, opts = {}) => {
        const v = (opts.analog ? ns.addAnalogDataItem.bind(ns) : ns.addVariable.bind(ns))({
            componentOf: plant,
            browseName: name,
            nodeId: `s=${name}`,
            dataType,
            valueRank: Array.isArray(value) ? 1 : -1,
            arrayDimensions: Array.isArray(value) ? [value.length] : null,
            accessLevel: opts.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            userAccessLevel: opts.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            engineeringUnitsRange: opts.analog,
            minimumSamplingInterval: 50,
        });
        set(v, dataType, value);
        if (opts.writable) {
            v.on("value_changed", (dv) => {
                if (v._peerSetting) return;
                const x = dv.value.value;
                const out = x && typeof x.length === "number" && typeof x !== "string" ? Array.from(x) : x;
                console.log(`write ${name} ${JSON.stringify(out)}`);
            });
        }
        return v;
    };
    const set = (v, dataType, value) => {
        v._peerSetting = true;
        v.setValueFromSource(
            new Variant({
                dataType: DataType[dataType],
                arrayType: Array.isArray(value) ? 1 : 0,
                value,
            }),
            StatusCodes.Good
        );
        v._peerSetting = false;
    };

    const temperature = variable("Temperature", "Double", 20.0);
    const counter = variable("Counter", "UInt32", 0);
    const running = variable("Running", "Boolean", true);
    const state = variable("State", "String", "running");
    variable("Setpoint", "Double", 21.0, { writable: true });
    // An AnalogItem with EURange 0..100: +0.5 every 100 ms, back to 0 after 100.
    const level = variable("Level", "Double", 0.0, { analog: { low: 0, high: 100 } });
    // Arrays: element 3 of Vector follows Counter; Targets is written element by element.
    const vector = variable("Vector", "Double", [0.5, 1.5, 2.5, 0, 4.5]);
    variable("Targets", "Int32", [0, 0, 0, 0], { writable: true });

    await server.start();
    const url = server.getEndpointUrl();
    console.log(`node-opcua server listening on ${url} (secure: ${secure})`);

    let tick = 0;
    setInterval(() => {
        tick += 1;
        const lv = (tick * 0.5) % 100.5;
        set(level, "Double", lv);
        if (tick % 5 === 0) {
            const i = tick / 5;
            set(temperature, "Double", Math.round((20 + 5 * Math.sin(i / 20)) * 1000) / 1000);
            set(counter, "UInt32", i);
            set(vector, "Double", [0.5, 1.5, 2.5, i, 4.5]);
            if (i % 4 === 0) {
                const on = !running.readValue().value.value;
                set(running, "Boolean", on);
                set(state, "String", on ? "running" : "stopped");
            }
        }
    }, 100);
    const stop = async () => {
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
