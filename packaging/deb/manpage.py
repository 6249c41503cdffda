#!/usr/bin/env python3
"""Writes osgate(1), the package's man page, from the binary's own `--help` texts.

    manpage.py BINARY VERSION DATE > osgate.1

The help of `osgate` and of each command goes in verbatim (no-fill blocks), so the page says
exactly what the installed binary does; the sections around it (files, exit codes, the service)
are the package's. Run by scripts/package-deb.
"""

import subprocess
import sys


def roff(text):
    """Plain text as no-fill roff: escapes, no request at the start of a line, ASCII only."""
    out = []
    for line in text.rstrip("\n").split("\n"):
        line = line.replace("\\", "\\e").replace("-", "\\-")
        line = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in line)
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def helptext(binary, *args):
    proc = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=True)
    return proc.stdout


def commands(top):
    """The command names listed under `Commands:` in the top-level help, less `help`."""
    names, inside = [], False
    for line in top.splitlines():
        if line.startswith("Commands:"):
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            name = line.split()[0]
            if name != "help":
                names.append(name)
        elif inside:
            break
    return names


def main(binary, version, date):
    top = helptext(binary)
    page = [
        f'.TH OSGATE 1 "{date}" "osgate {version}" "User Commands"',
        ".nh",
        ".ad l",
        ".SH NAME",
        "osgate \\- industrial IoT gateway: devices to a local MQTT broker",
        ".SH SYNOPSIS",
        ".B osgate",
        "[\\fIOPTIONS\\fR] [\\fICOMMAND\\fR]",
        ".SH DESCRIPTION",
        "osgate reads machines and meters (Modbus, M\\-Bus, OPC\\-UA, MQTT, HTTP, Z\\-Wave, a",
        "signal simulator), shapes the values with per\\-channel transforms and publishes them",
        "to a local MQTT broker at QoS 1 with a persistent session.",
        ".PP",
        "The package runs it as the systemd service",
        ".BR osgate.service :",
        ".B systemctl reload osgate",
        "re\\-reads the configuration,",
        ".B systemctl status osgate",
        "shows its state and",
        ".B journalctl \\-u osgate",
        "its log. Validate an edited configuration with",
        ".BR \"osgate check \\-c /etc/osgate/osgate.json\" .",
        ".SH OPTIONS",
        ".nf",
        roff(top),
        ".fi",
        ".SH COMMANDS",
    ]
    for name in commands(top):
        page += [f".SS osgate {name}", ".nf", roff(helptext(binary, name)), ".fi"]
    page += [
        ".SH EXIT STATUS",
        "0: a clean stop; 1: a runtime failure; 2: an invalid configuration or usage (the",
        "service is then not restarted); 3: stopped, but a sink still held messages the broker",
        "had not acknowledged at the flush deadline.",
        ".SH FILES",
        ".TP",
        ".I /etc/osgate/osgate.json",
        "The configuration. A conffile: upgrades keep your edits.",
        ".TP",
        ".I /etc/osgate/osgate.env",
        "Optional, mode 0600: VAR=value lines that the service's configuration uses as",
        "${VAR} (secrets: API keys, passwords).",
        ".TP",
        ".I /var/lib/osgate",
        "The service's state: the remote configuration's cache, OPC\\-UA certificates.",
        ".TP",
        ".I /usr/share/doc/osgate/",
        "The mosquitto bridge example, the full example configuration and THIRD\\-PARTY, the",
        "licences of the crates osgate is built from.",
        ".SH SEE ALSO",
        ".BR mosquitto (8),",
        ".BR systemctl (1)",
    ]
    sys.stdout.write("\n".join(page) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
